"""One registry of measures that may predict the robust generalization gap, for any model.

``measure(name, model, data, attack=None, **settings) -> float`` computes one of :data:`MEASURES`
on ``data``, an (x, y) pair of tensors (or an iterable of (x, y) batches). ``attack`` is an
:class:`awp.metrics.AttackSpec`; None means the clean loss (measures marked ``needs_attack`` are
defined on the adversarial loss only and refuse None). Every measure is seeded (``seed``
settings; the attack by ``attack.seed``), runs the model in eval mode (BatchNorm on its running
statistics, which nothing updates), and leaves the model bit-identical, parameters and buffers.
rho(w) below is the mean CE on the samples with the attack re-run against f_w (Wu et al. 2020).

Flatness of the weight loss landscape:

- ``sharpness``, ``curvature``: from 1-D curves rho(w + alpha d_k) along filter-normalized random
  directions (Li et al. 2018; :mod:`landscape.curve`, :mod:`landscape.flatness`);
- ``average_sharpness``, ``worst_case_sharpness``: Stutz et al. (ICCV 2021), Eq. 2-3;
- ``awp_sharpness``: rho(w + v) - rho(w), v the AWP perturbation (Wu et al. 2020, Eq. 8-9);
- ``hessian_top_eigenvalue``, ``hessian_trace``: of the CE at fixed inputs (:mod:`landscape.hessian`);
- ``pac_bayes_sharpness``: Jiang et al. (ICLR 2020) magnitude-aware (:mod:`landscape.pacbayes`).

Baselines that are not flatness (Kim et al., NeurIPS 2023; :mod:`landscape.baselines`):
``input_gradient_norm``, ``logit_margin``, ``weight_norm``.

Scale invariance (``Measure.scale_invariant``): rescaling a conv layer that feeds a BatchNorm by
c > 0 (with the BN statistics rescaled to match, so f is unchanged) leaves a measure unchanged
when it depends on the function and on weight perturbations relative to each layer's norm only:
every measure above except the two Hessian measures (the Hessian block of that layer scales by
1/c^2) and ``weight_norm`` (scales by c^2 on that layer). This holds at the default settings
(``normalization='none'`` directions are not relative) and, for ``pac_bayes_sharpness``, up to
its absolute noise floor eps = 1e-3.

Costs are in training forward+backward passes over the samples; S is the number of attack steps
(one attack costs S forward+backward passes to the input plus one forward; S = 0 with no attack).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, get_type_hints

import numpy as np
from torch import nn

from awp.errors import UsageError
from awp.metrics import AttackSpec
from awp.registry import Registry, unknown_name
from awp.runtime import Runtime
from awp.settings import coerce_value
from landscape import baselines, flatness, hessian, pacbayes
from landscape.curve import weight_loss_curve
from landscape.directions import NORMALIZATIONS, random_direction
from landscape.flatness import average_sharpness, worst_case_sharpness


def _curve(model: nn.Module, data: Any, attack: AttackSpec | None, alphas: list[float], directions: int,
           seed: int, normalization: str, batch_size: int, runtime: Runtime | None):
    if int(directions) != directions or directions < 1:
        raise UsageError(f"directions must be a whole number >= 1, got {directions}")
    NORMALIZATIONS.resolve(normalization)
    dirs = [random_direction(model, seed=seed + k, normalization=normalization) for k in range(int(directions))]
    return weight_loss_curve(model, dirs, alphas, data, loss="clean" if attack is None else "adversarial",
                             attack=attack, batch_size=batch_size, runtime=runtime)


def curve_sharpness(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, radius: float = 0.5,
                    directions: int = 3, seed: int = 0, normalization: str = "filter", batch_size: int = 256,
                    runtime: Runtime | None = None) -> float:
    """mean_k [(g_k(r) + g_k(-r)) / 2 - g_k(0)], g_k(alpha) = rho(w + alpha d_k) on the alphas -r, 0, r;
    d_k filter-normalized (seeds seed, seed + 1, ...), biases and BN not moved."""
    if not radius > 0:
        raise UsageError(f"sharpness radius must be > 0, got {radius}")
    df = _curve(model, data, attack, [-radius, 0.0, radius], directions, seed, normalization, batch_size, runtime)
    return flatness.sharpness(df, radius)


def curve_curvature(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, radius: float = 0.5,
                    points: int = 5, directions: int = 3, seed: int = 0, normalization: str = "filter",
                    batch_size: int = 256, runtime: Runtime | None = None) -> float:
    """mean_k a_k of the least-squares parabola a_k alpha^2 + b_k alpha + c_k through g_k on
    ``points`` evenly spaced alphas in [-r, r] (odd, >= 3, so alpha = 0 is one of them)."""
    if not radius > 0:
        raise UsageError(f"curvature radius must be > 0, got {radius}")
    if int(points) != points or points < 3 or points % 2 == 0:
        raise UsageError(f"curvature points must be an odd whole number >= 3, got {points}")
    alphas = np.linspace(-radius, radius, int(points)).tolist()
    return flatness.curvature(_curve(model, data, attack, alphas, directions, seed, normalization, batch_size, runtime))


def awp_sharpness(model: nn.Module, data: Any, attack: AttackSpec, *, gamma: float = 0.01, batch_size: int = 256,
                  runtime: Runtime | None = None) -> float:
    """rho(w + v) - rho(w) for the AWP perturbation at relative size gamma (Wu et al. 2020, Eq. 8-9,
    one step as the official code; gamma 0.01 is its AT-AWP default):
    v_l = gamma ||w_l|| g_l / (||g_l|| + 1e-20), g = d/dw of the eval-mode mean CE of adversarial
    examples crafted at w, through :class:`awp.perturbation.AdversarialWeightPerturbation`; the
    attack is re-run at w + v. It is :func:`worst_case_sharpness` with one ascent step of size gamma."""
    return worst_case_sharpness(model, data, attack, xi=gamma, steps=1, batch_size=batch_size, runtime=runtime)


def _weight_norm(model: nn.Module, data: Any = None, attack: AttackSpec | None = None, *,
                 runtime: Runtime | None = None) -> float:
    """sum_l ||w_l||_F^2 (:func:`landscape.baselines.weight_norm`); data and attack are not used."""
    return baselines.weight_norm(model)


@dataclass(frozen=True)
class Measure:
    """A registered measure: how it is computed and what its number means.

    ``compute(model, data, attack, *, runtime=None, **settings) -> float``; its keyword defaults are
    the measure's default settings (:attr:`defaults`). ``cost``: in training forward+backward
    passes over the samples (S = attack steps). ``scale_invariant``: unchanged when a conv layer
    feeding a BatchNorm is rescaled (module docstring).
    """

    name: str
    compute: Callable[..., float]
    formula: str
    units: str
    cost: str
    needs_attack: bool
    scale_invariant: bool
    reference: str
    renamed: Mapping[str, str] = field(default_factory=dict)  # an older setting name -> its name now

    @property
    def defaults(self) -> dict[str, Any]:
        """Default settings: the keyword-only arguments of :attr:`compute`, ``runtime`` excluded."""
        return {k: p.default for k, p in inspect.signature(self.compute).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "runtime"}

    def overrides(self, **values: Any) -> dict[str, Any]:
        """``values`` typed by the compute function's annotations (text such as ``--set xi=8/255``
        parsed by :func:`awp.settings.coerce_value`, non-finite floats refused), older names
        (``renamed``) mapped to the current ones; an unknown setting names the closest one."""
        defaults, hints = self.defaults, get_type_hints(self.compute)
        typed = {}
        for key, value in values.items():
            key = self.renamed.get(key, key)
            if key not in defaults:
                raise unknown_name(f"setting of measure {self.name!r}", key, list(defaults))
            typed[key] = coerce_value(f"{self.name}.{key}", hints.get(key, Any), value)
        return typed

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """The defaults updated with :meth:`overrides`."""
        return {**self.defaults, **self.overrides(**overrides)}


def _register(measure: Measure) -> None:
    MEASURES.register(measure.name, measure, description=measure.formula)


MEASURES: Registry[Measure] = Registry("measure")
for _measure in (
    Measure("sharpness", curve_sharpness,
            "mean_k [(rho(w + r d_k) + rho(w - r d_k)) / 2 - rho(w)], d_k filter-normalized random directions",
            "loss (mean CE) at |alpha| = r filter norms", "directions x 3 x (S + 1)", False, True,
            "Wu et al. 2020 Sec. 3 (curves); Li et al. 2018 (filter normalization)"),
    Measure("curvature", curve_curvature,
            "mean_k a_k, least-squares a_k alpha^2 + b_k alpha + c_k = rho(w + alpha d_k), |alpha| <= r",
            "loss per (filter norm)^2", "directions x points x (S + 1)", False, True,
            "Wu et al. 2020 Sec. 3; Li et al. 2018"),
    Measure("average_sharpness", average_sharpness,
            "E_nu[rho(w + nu)] - rho(w), nu_l Gaussian with ||nu_l|| = xi ||w_l||",
            "loss (mean CE)", "(draws + 1) x (S + 1)", True, True, "Stutz et al. 2021, Eq. 2", {"samples": "draws"}),
    Measure("worst_case_sharpness", worst_case_sharpness,
            "max_{||nu_l|| <= xi ||w_l||} rho(w + nu) - rho(w), projected ascent on the CE of examples crafted at w",
            "loss (mean CE)", "2 x (S + 1) + steps", True, True, "Stutz et al. 2021, Eq. 3"),
    Measure("awp_sharpness", awp_sharpness,
            "rho(w + v) - rho(w), v_l = gamma ||w_l|| g_l / ||g_l||, g = grad_w CE(examples crafted at w)",
            "loss (mean CE)", "2 x (S + 1) + 1", True, True, "Wu et al. 2020, Eq. 8-9"),
    Measure("hessian_top_eigenvalue", hessian.hessian_top_eigenvalue,
            "lambda_max of d^2 CE / dw^2 at fixed inputs (power iteration)", "loss / weight^2",
            "S + 1 + (at most iters) x 2 (one double backward each)", False, False,
            "Keskar et al. 2017; Yao et al. 2020 (PyHessian)"),
    Measure("hessian_trace", hessian.hessian_trace,
            "tr d^2 CE / dw^2 at fixed inputs, mean of v^T H v over Rademacher v (Hutchinson)", "loss / weight^2",
            "S + 1 + draws x 2 (one double backward each)", False, False,
            "Hutchinson 1989; Yao et al. 2020 (PyHessian)", {"samples": "draws"}),
    Measure("pac_bayes_sharpness", pacbayes.pac_bayes_sharpness,
            "1 / sigma*^2, sigma* the largest sigma with acc(w) - E_u acc(w + u) <= max_drop, "
            "u_i ~ N(0, sigma^2 w_i^2 + eps^2)",
            "1 / (relative weight noise)^2", "(1 + depth x draws) x (S + 1)", False, True,
            "Jiang et al. 2020 (pacbayes.mag.flatness); Dziugaite et al. 2020"),
    Measure("input_gradient_norm", baselines.input_gradient_norm,
            "mean_i ||grad_x CE(f(x'_i), y_i)||, x' adversarial examples crafted at w",
            "loss per unit of input (pixels in [0, 1])", "S + 2", False, True, "Kim et al. 2023"),
    Measure("logit_margin", baselines.logit_margin,
            "mean_i [z_y(x'_i) - max_{k != y} z_k(x'_i)], x' adversarial examples crafted at w",
            "logits", "S + 1", False, True, "Kim et al. 2023"),
    Measure("weight_norm", _weight_norm, "sum_l ||w_l||_F^2 over conv and linear weights", "weight^2", "0",
            False, False, "Kim et al. 2023; Jiang et al. 2020"),
):
    _register(_measure)


def get_measure(name: str) -> Measure:
    """The registered measure called ``name``; an unknown name is one line naming the closest."""
    return MEASURES.get(name)


def measure(name: str, model: nn.Module, data: Any, attack: AttackSpec | None = None, *,
            runtime: Runtime | None = None, **settings: Any) -> float:
    """The value of measure ``name`` (see :data:`MEASURES`) for ``model`` on ``data``.

    ``data``: an (x, y) pair of tensors. ``attack``: an :class:`awp.metrics.AttackSpec`, or None
    for the clean loss (refused by the measures that need an attack). ``settings`` override the
    measure's defaults (``MEASURES[name].defaults``); ``runtime`` chooses device and precision
    (default: fp32 on the model's device). Seeded; the model is left bit-identical.
    """
    spec = get_measure(name)
    if attack is not None and not isinstance(attack, AttackSpec):
        raise UsageError(f"attack must be an awp.metrics.AttackSpec or None, got {type(attack).__name__}")
    if spec.needs_attack and attack is None:
        raise UsageError(f"measure {name!r} is defined on the adversarial loss and needs an attack "
                         "(an awp.metrics.AttackSpec), got None")
    return float(spec.compute(model, data, attack, runtime=runtime, **spec.settings(**settings)))
