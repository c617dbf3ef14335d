"""Measurement at fixed weights: the attack descriptor, the metric attack of a run, and the one
batched accuracy-and-loss loop that the per-epoch metrics, ``awp eval`` and the landscape share.

The robust generalization gap of Wu, Xia & Wang (NeurIPS 2020, Sec. 3) is train robust accuracy
minus test robust accuracy, both measured at the unperturbed weights in eval mode under the same
attack; the official logs' "train robust accuracy" is measured during the step at w + v in train
mode, which is not the gap. "clean" is this toolkit's one word for unattacked inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awp.attacks import model_mode, pgd
from awp.runtime import CPU, Runtime
from awp.threat import eval_threat

if TYPE_CHECKING:
    from awp.config import TrainConfig

Craft = Callable[[Tensor, Tensor, "torch.Generator | None"], Tensor]


@dataclass(frozen=True)
class AttackSpec:
    """A PGD attack with its settings: uniform random start in the eps-ball, 1 restart, CE loss,
    eval mode, the last iterate classified. ``name`` is the label every number measured with it
    carries; :meth:`describe` is the descriptor every file writes."""

    eps: float
    step_size: float
    steps: int
    norm: str = "linf"
    seed: int = 0

    @property
    def name(self) -> str:
        return f"pgd{self.steps}-{self.norm} eps={self.eps:.4g} step={self.step_size:.4g} eval-mode"

    def describe(self) -> dict[str, Any]:
        """The attack as written into every result file (landscape.json, *.eval.json, summary.json)."""
        return {"name": self.name, "eps": self.eps, "step_size": self.step_size, "steps": self.steps,
                "norm": self.norm, "seed": self.seed, "random_start": "uniform"}

    def on(self, model: nn.Module) -> Craft:
        """This attack against ``model`` as a ``craft(x, y, generator)`` for :func:`loss_and_correct`."""
        return lambda x, y, generator: self(model, x, y, generator)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                   norm=self.norm, random_start=True, mode="eval", generator=generator)


def metric_attack(config: "TrainConfig") -> AttackSpec:
    """The attack that measures a run's per-epoch metrics (and so its gap): PGD-``eval_steps`` under
    the data set's evaluation threat model (:func:`awp.threat.eval_threat`; ``eval_eps`` overrides
    its radius), seeded with the run seed, eval mode."""
    threat = eval_threat(config.dataset, config.norm, config.eps, config.eval_eps)
    return AttackSpec(eps=threat.eps, step_size=threat.step_size, steps=config.eval_steps,
                      norm=config.norm, seed=config.seed)


def device_batches(x: Tensor, y: Tensor, batch_size: int, runtime: Runtime) -> Iterator[tuple[Tensor, Tensor]]:
    """(x, y) in batches of ``batch_size``, each moved to the runtime's device and layout."""
    for start in range(0, len(x), batch_size):
        yield (runtime.batch(x[start:start + batch_size]),
               y[start:start + batch_size].to(runtime.device, non_blocking=True))


def loss_and_correct(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], craft: Craft | None = None, *,
                     runtime: Runtime = CPU, generator: torch.Generator | None = None) -> Tensor:
    """[sum of CE, number correct] over ``batches`` after ``craft`` (None: the inputs as they are).

    The one evaluation loop of the toolkit. The model is used as it is (callers choose its mode);
    ``craft(xb, yb, generator)`` runs under the runtime's autocast and consumes ``generator``
    batch after batch. The sums stay on the device in float64 (no host sync inside the loop).
    A NaN/inf loss stays NaN/inf, and the count is NaN as soon as one logit is not finite: the
    argmax of a NaN is no prediction, and counting it would average the fault away.
    """
    totals = torch.zeros(3, dtype=torch.float64, device=runtime.device)
    for xb, yb in batches:
        with runtime.autocast():
            x_in = xb if craft is None else craft(xb, yb, generator)
            with torch.no_grad():
                logits = model(x_in).float()
        totals += torch.stack([F.cross_entropy(logits, yb, reduction="sum"), (logits.argmax(1) == yb).sum(),
                               (~logits.isfinite().all(1)).sum()]).double()
    return torch.stack([totals[0], torch.where(totals[2] > 0, torch.nan, totals[1])])


def clean_and_robust(model: nn.Module, x: Tensor, y: Tensor, attack: AttackSpec, *,
                     batch_size: int = 256, runtime: Runtime = CPU) -> dict[str, float]:
    """Clean and robust accuracy and mean CE loss of ``model`` on (x, y), eval mode, seeded attack."""
    n = max(len(x), 1)
    with model_mode(model, "eval"):
        clean = loss_and_correct(model, device_batches(x, y, batch_size, runtime), runtime=runtime)
        robust = loss_and_correct(model, device_batches(x, y, batch_size, runtime), attack.on(model), runtime=runtime,
                                  generator=runtime.generator(attack.seed))
    clean_loss, clean_acc, robust_loss, robust_acc = (torch.cat([clean, robust]) / n).tolist()
    return {"clean_acc": clean_acc, "clean_loss": clean_loss,
            "robust_acc": robust_acc, "robust_loss": robust_loss}
