"""Flatness scalars of the weight loss landscape.

The AWP paper (Wu et al. 2020, Sec. 3) judges flatness visually; these scalars make the
correlation with the robust generalization gap measurable:

- from curves g_k(alpha) = rho(w + alpha d_k) (:func:`sharpness`, :func:`curvature`);
- from the model directly, after Stutz, Hein, Schiele 2021 ("Relating Adversarially Robust
  Generalization to Flat Minima", Eq. 2-3): worst-case and average-case robust flatness
  within the relative neighbourhood V_xi = {nu : ||nu_l|| <= xi ||w_l|| for every layer l}
  (layers: :func:`awp.weights.is_weight`, the same set AWP perturbs).

Every function returns a float and leaves the model unchanged (bit for bit, flags restored).
A NaN or infinite loss on the way is never averaged away: the scalar it enters is NaN (or
infinite), for the caller to report as such.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from awp.attacks import model_mode
from awp.checks import check_int, check_number
from awp.errors import UsageError
from awp.metrics import AttackSpec
from awp.perturbation import AdversarialWeightPerturbation
from awp.runtime import Runtime
from landscape.directions import random_direction
from landscape.evaluate import PointEvaluator, active_names


def _per_direction(df: pd.DataFrame):
    if df is None or len(df) == 0:
        raise UsageError("the landscape table is empty")
    for column in ("alpha", "loss"):
        if column not in df.columns:
            raise UsageError(f"the landscape table has no {column!r} column")
    if "direction" not in df.columns:
        df = df.assign(direction=0)
    for key, part in df.groupby("direction", sort=True):
        # duplicates (resumed rows) averaged; a NaN stays NaN (pandas' mean would skip it)
        part = part.groupby("alpha", sort=True)["loss"].agg(lambda s: float(np.mean(s.to_numpy(float))))
        yield key, part.index.to_numpy(float), part.to_numpy(float)


def sharpness(df: pd.DataFrame, radius: float = 0.5) -> float:
    """Average-case rise at distance r: mean_k [ (g_k(+r) + g_k(-r)) / 2 - g_k(0) ].

    g_k is interpolated linearly between grid points when +-r or 0 is not on the grid; r must
    lie within every direction's alpha range. Units: loss (the curve's loss) at alpha = r, alpha in
    the direction's normalization units (filter norms by default).
    """
    r = float(radius)
    if not r > 0:
        raise UsageError(f"sharpness radius must be > 0, got {radius}")
    rises = []
    for key, alphas, losses in _per_direction(df):
        if alphas[0] > -r or alphas[-1] < r:
            raise UsageError(f"sharpness radius {r} is outside direction {key}'s alpha range "
                             f"[{alphas[0]:g}, {alphas[-1]:g}]")
        g = np.interp([-r, 0.0, r], alphas, losses)
        rises.append((g[0] + g[2]) / 2 - g[1])
    return float(np.mean(rises))


def curvature(df: pd.DataFrame, radius: float | None = None) -> float:
    """Mean over directions of a_k in the least-squares fit g_k(alpha) = a_k alpha^2 + b_k alpha + c_k.

    ``radius``: fit only the points with |alpha| <= radius (default: all). Needs >= 3 alphas.
    g = c alpha^2 gives exactly c; 2 a is the second derivative of the fitted parabola.
    """
    coefs = []
    for key, alphas, losses in _per_direction(df):
        if radius is not None:
            keep = np.abs(alphas) <= float(radius) + 1e-12
            alphas, losses = alphas[keep], losses[keep]
        if len(alphas) < 3:
            raise UsageError(f"curvature needs at least 3 alphas per direction (direction {key} has {len(alphas)})")
        # A least-squares fit through a NaN/inf has no value (numpy's SVD would fail on it).
        coefs.append(np.polyfit(alphas, losses, 2)[0] if np.isfinite(losses).all() else np.nan)
    return float(np.mean(coefs))


def _check_xi(xi: float) -> float:
    return check_number(xi, "xi", low=0, high=1, low_open=True, unit=" (a relative weight norm per layer)")


def _check_attack(attack: Any, what: str) -> AttackSpec:
    if not isinstance(attack, AttackSpec):
        raise UsageError(f"{what}(model, data, attack, *, xi=...): attack must be an awp.metrics.AttackSpec, got "
                         f"{type(attack).__name__} (xi and the other settings are keywords)")
    return attack


def worst_case_sharpness(model: nn.Module, data: Any, attack: AttackSpec, *, xi: float = 0.01, steps: int = 5,
                         step_size: float | None = None, batch_size: int = 256,
                         runtime: Runtime | None = None) -> float:
    """Worst-case robust flatness (Stutz et al. 2021, Eq. 3): max_{nu in V_xi} rho(w + nu) - rho(w).

    rho(w): the adversarial loss (``attack``, seeded, eval mode). The max is approximated by
    ``steps`` of projected ascent (:class:`awp.perturbation.AdversarialWeightPerturbation`, gamma =
    xi, relative ``step_size`` default xi) on the CE of adversarial examples crafted once at w,
    in eval mode (so the ascent maximizes the quantity measured); then rho(w + nu) is measured
    with the attack re-run at w + nu. A lower bound of the true max. Units: loss (mean CE).
    """
    xi = _check_xi(xi)
    evaluator = PointEvaluator(model, data, loss="adversarial", attack=_check_attack(attack, "worst_case_sharpness"),
                               batch_size=batch_size, runtime=runtime)

    def objective(m: nn.Module) -> torch.Tensor:
        # AWP.compute puts the model in train mode; the landscape is measured in eval mode, so
        # the ascent uses eval mode too (BN with the centre's running statistics).
        with model_mode(m, "eval"), evaluator.runtime.autocast():
            total = sum(F.cross_entropy(m(xa).float(), yb, reduction="sum").double()
                        for xa, (_, yb) in zip(x_adv, evaluator.batches))
        return total / evaluator.count

    with evaluator.session():
        x_adv = evaluator.inputs()  # the attack at w, seeded as at every point: rho(w) is their CE
        with torch.no_grad():
            centre = objective(model)
    awp = AdversarialWeightPerturbation(model, gamma=xi, steps=steps, step_size=step_size)
    nu = awp.compute(objective)
    with evaluator.session():
        perturbed = evaluator.sums(nu.tensors)
    return float(perturbed[0] / evaluator.count - centre)


def average_sharpness(model: nn.Module, data: Any, attack: AttackSpec, *, xi: float = 0.01, draws: int = 5,
                      seed: int = 0, batch_size: int = 256, runtime: Runtime | None = None) -> float:
    """Average-case robust flatness (Stutz et al. 2021, Eq. 2): E_nu[rho(w + nu)] - rho(w).

    nu_l ~ N(0, I) rescaled to ||nu_l|| = xi ||w_l|| for every weight tensor l (biases and BN
    untouched), seeds ``seed``, ``seed + 1``, ...; the expectation is the mean over ``draws``
    random perturbations, and rho re-runs the attack at every w + nu. Units: loss (mean CE).
    """
    xi = _check_xi(xi)
    draws = check_int(draws, "draws", 1)
    evaluator = PointEvaluator(model, data, loss="adversarial", attack=_check_attack(attack, "average_sharpness"),
                               batch_size=batch_size, runtime=runtime)
    with evaluator.session():
        centre = evaluator.sums()
        rises = []
        for i in range(draws):
            d = random_direction(model, seed=seed + i, normalization="layer", ignore="biasbn")
            rises.append(evaluator.sums([(xi, d)], active_names(d))[0] - centre[0])  # nu = xi d
    return float(torch.stack(rises).mean() / evaluator.count)
