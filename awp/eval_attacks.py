"""The evaluation attacks of the AWP tables (Wu, Xia & Wang, NeurIPS 2020, Tables 1-4): natural
(clean) accuracy, FGSM, PGD-20 / PGD-100, CW-inf and AutoAttack, one :data:`EVAL_ATTACKS` entry
each, holding the description written next to its number and the attack itself.

The conventions, fixed here:

- clean: the unattacked images (the tables' "natural", accepted as another name for it).
- FGSM (Goodfellow et al. 2015): one step of size eps from x, no random start, CE loss.
- PGD-k (Madry et al. 2018): radius eps, step eps/4 unless given, a uniform random start in the
  eps-ball, 1 restart, CE loss; the last iterate is classified (the Rice et al. / AWP code).
- CW-inf: the same PGD on the Carlini-Wagner margin -clamp(z_y - max_{k != y} z_k + kappa, min=0)
  (Carlini & Wagner 2017), kappa 50, 30 steps of eps/4, as in the MART and AWP tables; Linf only.
- AutoAttack (Croce & Hein 2020), version "standard" (APGD-CE, APGD-T, FAB-T, Square) through the
  authors' ``pyautoattack``, seeded; its output is checked against the ball and classified here.

Adding an attack is one :class:`EvalAttack` (a description and a per-batch ``craft``, or an
``accuracy`` of its own for an attack that batches itself) and one registration.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from awp.attacks import cw_inf, fgsm, pgd
from awp.errors import UserError
from awp.metrics import Craft, device_batches, loss_and_correct
from awp.registry import Registry
from awp.runtime import Runtime

CW_KAPPA = 50.0  # MART / AWP tables (Bag of Tricks uses 0)
CW_STEPS = 30
AUTOATTACK_MISSING = "AutoAttack needs the reference implementation: pip install 'awp-landscape[autoattack]'"
# AutoAttack projects in float32; allow rounding at that precision when checking its output.
_BALL_TOLERANCE = 1e-5


@dataclass(frozen=True)
class EvalSettings:
    """What every attack of one evaluation shares: radius and PGD/CW step (pixel units), norm,
    seed (a fresh generator per attack), batch size and runtime."""

    eps: float
    step: float
    norm: str
    seed: int
    batch_size: int
    runtime: Runtime


@dataclass(frozen=True)
class EvalAttack:
    """An evaluation attack: the description written next to its number, and how it attacks.

    ``craft(model, settings)`` gives the per-batch attack for :func:`awp.metrics.loss_and_correct`
    (None: the images as they are); an attack that runs over the whole set itself (AutoAttack)
    gives ``accuracy(model, x, y, settings)`` instead. ``requires`` runs before any attack does,
    so a missing package fails at once; ``norms`` are the balls it attacks in.
    """

    describe: Callable[[EvalSettings], str]
    craft: Callable[[nn.Module, EvalSettings], Craft | None] | None = None
    accuracy: Callable[[nn.Module, Tensor, Tensor, EvalSettings], float] | None = None
    norms: tuple[str, ...] = ("linf", "l2")
    requires: Callable[[], Any] | None = None

    def measure(self, model: nn.Module, x: Tensor, y: Tensor, settings: EvalSettings) -> float:
        """Accuracy of ``model`` on (x, y) under this attack; the model's mode is the caller's."""
        if self.accuracy is not None:
            return self.accuracy(model, x, y, settings)
        # A fresh generator per attack: each number depends on its own seed only.
        return _accuracy(model, x, y, self.craft(model, settings), batch_size=settings.batch_size,
                         runtime=settings.runtime, generator=settings.runtime.generator(settings.seed))


EVAL_ATTACKS: Registry[EvalAttack] = Registry("attack")


def pixels(value: float) -> str:
    """0.2 -> '0.2 (51/255)'; 0.05 -> '0.05': the /255 form only where it is exact."""
    k = value * 255
    if value > 0 and abs(k - round(k)) < 1e-6:
        return f"{value:.4g} ({round(k)}/255)"
    return f"{value:.4g}"


def norm_label(norm: str) -> str:
    """'linf' -> 'Linf', 'l2' -> 'L2': how the tables and AutoAttack write a norm."""
    return {"linf": "Linf", "l2": "L2"}[norm]


def _ball(s: EvalSettings) -> str:
    return f"{norm_label(s.norm)} eps={pixels(s.eps)}"


def _accuracy(model: nn.Module, x: Tensor, y: Tensor, craft: Craft | None, *, batch_size: int,
              runtime: Runtime, generator: torch.Generator) -> float:
    """Fraction of ``x`` classified correctly after ``craft`` (None: as is): the shared loop of
    :func:`awp.metrics.loss_and_correct`, read once at the end; NaN when some logit is not finite."""
    sums = loss_and_correct(model, device_batches(x, y, batch_size, runtime), craft, runtime=runtime,
                            generator=generator)
    return float(sums[1]) / len(x)


# --------------------------------------------------------------------------------------------
# clean, FGSM, PGD-k, CW-inf: per-batch crafters


EVAL_ATTACKS.register("clean", EvalAttack(describe=lambda s: "clean (natural) accuracy, eval mode",
                                          craft=lambda model, s: None),
                      description="clean (natural) accuracy: the unattacked images", aliases=("natural",))

EVAL_ATTACKS.register("fgsm", EvalAttack(
    describe=lambda s: f"FGSM {_ball(s)}, one step of eps, no random start, CE loss, eval mode",
    craft=lambda model, s: lambda xb, yb, g: fgsm(model, xb, yb, eps=s.eps, norm=s.norm, mode="eval")),
    description="FGSM (Goodfellow et al. 2015): one step of size eps from x, CE loss")


def _pgd(steps: int) -> EvalAttack:
    def describe(s: EvalSettings) -> str:
        return (f"PGD-{steps} {_ball(s)}, step={pixels(s.step)}, {steps} steps, uniform random start, "
                f"1 restart, CE loss, eval mode, seed {s.seed}")

    def craft(model: nn.Module, s: EvalSettings) -> Craft:
        return lambda xb, yb, g: pgd(model, xb, yb, eps=s.eps, step_size=s.step, steps=steps, norm=s.norm,
                                     random_start=True, restarts=1, loss="ce", mode="eval", generator=g)
    return EvalAttack(describe, craft)


for _steps in (20, 100):
    EVAL_ATTACKS.register(f"pgd{_steps}", _pgd(_steps), description=(
        f"PGD-{_steps} (Madry et al. 2018): {_steps} steps of eps/4 from a uniform random start, CE loss"))


def _describe_cw(s: EvalSettings) -> str:
    return (f"CW-inf {_ball(s)}, step={pixels(s.step)}, {CW_STEPS} steps, kappa={CW_KAPPA:g} margin loss, "
            f"uniform random start, 1 restart, eval mode, seed {s.seed}")


def _craft_cw(model: nn.Module, s: EvalSettings) -> Craft:
    return lambda xb, yb, g: cw_inf(model, xb, yb, eps=s.eps, step_size=s.step, steps=CW_STEPS,
                                    kappa=CW_KAPPA, random_start=True, mode="eval", generator=g)


EVAL_ATTACKS.register("cw", EvalAttack(_describe_cw, _craft_cw, norms=("linf",)),
                      description=f"CW-inf: Linf PGD on the CW margin loss, kappa {CW_KAPPA:g}, {CW_STEPS} steps")


# --------------------------------------------------------------------------------------------
# AutoAttack: the reference implementation, over the whole set


def _import_autoattack():
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise UserError(AUTOATTACK_MISSING) from None
    return AutoAttack


def _autoattack_version() -> str:
    try:
        return importlib.metadata.version("pyautoattack")
    except importlib.metadata.PackageNotFoundError:  # imported from a source tree
        import pyautoattack

        return str(getattr(pyautoattack, "__version__", "unknown"))


class _AutocastLogits(nn.Module):
    """``model`` with its forward under the runtime's autocast and float32 logits.

    AutoAttack calls the model directly; this keeps the precision decision in the Runtime and
    hands AutoAttack's losses the float32 logits they were written for.
    """

    def __init__(self, model: nn.Module, runtime: Runtime):
        super().__init__()
        self.model = model
        self.runtime = runtime

    def forward(self, x: Tensor) -> Tensor:
        with self.runtime.autocast():
            return self.model(x).float()


@contextlib.contextmanager
def _weights_frozen(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on the weights for the block, restoring each flag.

    FAB calls ``.backward()``, which would otherwise fill the weights' ``.grad`` fields behind the
    caller's back (and spend time computing them); input gradients do not need weight gradients.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _autoattack_accuracy(model: nn.Module, x: Tensor, y: Tensor, s: EvalSettings) -> float:
    AutoAttack = _import_autoattack()
    eps, norm, runtime = s.eps, s.norm, s.runtime
    x_dev, y_dev = runtime.batch(x), y.to(runtime.device)
    forward = model if runtime.precision == "fp32" else _AutocastLogits(model, runtime)
    # pyautoattack reseeds the global generators (torch.manual_seed) for each attack; fork them
    # so the caller's random stream is the same after evaluation as before.
    cuda = [runtime.device.index if runtime.device.index is not None else torch.cuda.current_device()] \
        if runtime.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), _weights_frozen(model):
        attack = AutoAttack(forward, norm=norm_label(norm), eps=float(eps), version="standard",
                            seed=int(s.seed), device=runtime.device)
        x_adv, _ = attack.run_standard_evaluation(x_dev, y_dev, batch_size=s.batch_size)
    x_adv = x_adv.detach().to(runtime.device)
    # Trust but verify: a point outside the threat model would inflate the attack's success.
    delta = (x_adv - x_dev).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    if x_adv.shape != x_dev.shape or bool((size > eps * (1 + _BALL_TOLERANCE) + _BALL_TOLERANCE).any()) \
            or float(x_adv.min()) < -_BALL_TOLERANCE or float(x_adv.max()) > 1 + _BALL_TOLERANCE:
        raise RuntimeError(f"AutoAttack returned points outside the {norm_label(norm)} ball of radius {eps} "
                           f"or outside [0, 1] (largest perturbation {float(size.max()):.6g})")
    # Classify what AutoAttack returned ourselves rather than trusting its own flags.
    return _accuracy(model, x_adv, y_dev, None, batch_size=s.batch_size, runtime=runtime,
                     generator=runtime.generator(s.seed))


def _describe_autoattack(s: EvalSettings) -> str:
    return (f"AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square), {_ball(s)}, "
            f"pyautoattack {_autoattack_version()}, seed {s.seed}, eval mode")


EVAL_ATTACKS.register("autoattack", EvalAttack(_describe_autoattack, accuracy=_autoattack_accuracy,
                                               requires=_import_autoattack),
                      description="AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) through pyautoattack")

ATTACKS = tuple(EVAL_ATTACKS.names())  # the names, for code that wants a tuple
