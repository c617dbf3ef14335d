"""Per-epoch measurements at the unperturbed weights, in eval mode, under a named attack.

The robust generalization gap of the AWP paper is train robust accuracy minus test robust
accuracy, both measured like this (REFERENCE §1); the official logs' "train robust accuracy" is
measured during the step at w + v in train mode, which is not the gap.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awp.attacks import model_mode, pgd
from awp.runtime import CPU, Runtime


@dataclass(frozen=True)
class AttackSpec:
    """A PGD attack with its settings, and the name every number measured with it carries."""

    eps: float
    step_size: float
    steps: int
    norm: str = "linf"
    seed: int = 0

    @property
    def name(self) -> str:
        return f"pgd{self.steps}-{self.norm} eps={self.eps:.4g} step={self.step_size:.4g} eval-mode"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return pgd(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                   norm=self.norm, random_start=True, mode="eval", generator=generator)


def clean_and_robust(model: nn.Module, x: Tensor, y: Tensor, attack: AttackSpec, *,
                     batch_size: int = 256, runtime: Runtime = CPU) -> dict[str, float]:
    """Clean and robust accuracy and mean CE loss of ``model`` on (x, y), eval mode, seeded attack."""
    sums = torch.zeros(4, dtype=torch.float64, device=runtime.device)
    generator = runtime.generator(attack.seed)
    with model_mode(model, "eval"):
        for start in range(0, len(x), batch_size):
            xb = runtime.batch(x[start:start + batch_size])
            yb = y[start:start + batch_size].to(runtime.device)
            with runtime.autocast():
                x_adv = attack(model, xb, yb, generator)
                with torch.no_grad():
                    clean = model(xb).float()
                    adv = model(x_adv).float()
            sums += torch.stack([
                (clean.argmax(1) == yb).sum(), F.cross_entropy(clean, yb, reduction="sum"),
                (adv.argmax(1) == yb).sum(), F.cross_entropy(adv, yb, reduction="sum")]).double()
    clean_acc, clean_loss, robust_acc, robust_loss = (sums / max(len(x), 1)).tolist()
    return {"clean_acc": clean_acc, "clean_loss": clean_loss,
            "robust_acc": robust_acc, "robust_loss": robust_loss}
