"""Baseline measures that are not flatness, after Kim et al. (NeurIPS 2023, "Fantastic Robustness
Measures: The Mystery of Sharpness Measures for Adversarial Training"): the input-gradient norm of
the adversarial loss, the logit margin of adversarial examples, and the sum of squared weight norms.

The first two are computed on fixed inputs (:func:`landscape.evaluate.fixed_batches`): adversarial
examples crafted once at w with the attack (seeded), or the clean images when the attack is None;
the model is in eval mode. They depend on the function the network computes only, so they do not
change when a conv layer followed by BatchNorm is rescaled; the weight norm does.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from awp.errors import UsageError
from awp.registry import Registry
from awp.metrics import AttackSpec
from awp.runtime import Runtime
from awp.weights import named_weights, unwrap
from landscape.evaluate import fixed_batches, model_runtime

GRADIENT_NORMS: Registry[int] = Registry("gradient norm")  # name -> the p of the norm
GRADIENT_NORMS.register("l2", 2, description="Euclidean norm of the input gradient")
GRADIENT_NORMS.register("l1", 1, description="L1 norm, the dual of Linf (eps ||g||_1 is the first-order loss rise)")


def input_gradient_norm(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, norm: str = "l2",
                        batch_size: int = 256, runtime: Runtime | None = None) -> float:
    """(1/n) sum_i || d CE(f(x'_i), y_i) / d x'_i ||, x' the fixed inputs; per example, not of the mean.

    ``norm``: 'l2' (default) or 'l1' (the dual of Linf: eps ||g||_1 is the first-order rise of the
    loss within an Linf ball of radius eps). Units: loss per unit of input (pixels in [0, 1]).
    Cost: one attack plus one forward+backward (to the input).
    """
    GRADIENT_NORMS.resolve(norm)
    runtime = model_runtime(model, runtime)
    total = torch.zeros((), dtype=torch.float64, device=runtime.device)
    count = 0
    with fixed_batches(model, data, attack, batch_size=batch_size, runtime=runtime) as batches:
        for x_in, y in batches:
            x_in = x_in.detach().requires_grad_(True)
            with torch.enable_grad(), runtime.autocast():
                loss = F.cross_entropy(model(x_in).float(), y, reduction="sum")  # sum: per-example gradients
            (grad,) = torch.autograd.grad(loss, [x_in])
            total += grad.float().flatten(1).norm(p=GRADIENT_NORMS[norm], dim=1).sum().double()
            count += len(y)
    return float(total / count)


def logit_margin(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, batch_size: int = 256,
                 runtime: Runtime | None = None) -> float:
    """(1/n) sum_i [ z_y(x'_i) - max_{k != y} z_k(x'_i) ], the logits z of the fixed inputs x'.

    Negative for misclassified examples (no clamping). Units: logits. Cost: one attack plus one forward.
    """
    runtime = model_runtime(model, runtime)
    total = torch.zeros((), dtype=torch.float64, device=runtime.device)
    count = 0
    with fixed_batches(model, data, attack, batch_size=batch_size, runtime=runtime) as batches:
        for x_in, y in batches:
            with torch.no_grad(), runtime.autocast():
                logits = model(x_in).float()
            true = logits.gather(1, y[:, None]).squeeze(1)
            others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
            total += (true - others).sum().double()
            count += len(y)
    return float(total / count)


def weight_norm(model: nn.Module, data: Any = None, attack: AttackSpec | None = None) -> float:
    """sum_l ||w_l||_F^2 over the conv and linear weights (:func:`awp.weights.is_weight`).

    ``data`` and ``attack`` are accepted for a common signature and not used. Units: weight^2.
    Cost: no forward or backward pass.
    """
    weights = named_weights(unwrap(model))
    if not weights:
        raise UsageError("the model has no conv or linear weight")
    return float(sum(p.detach().double().square().sum() for _, p in weights))
