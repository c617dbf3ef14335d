"""Hessian of the loss with respect to the weights, through Hessian-vector products.

H = d^2 L / dw^2 for L(w) = (1/n) sum_i CE(f_w(x_i), y_i) on fixed inputs: the clean images, or
adversarial examples crafted once at w and then held fixed (the Hessian of the robust loss
itself is not defined: the attack is not differentiable in w). w are the conv and linear weights
(:func:`awp.weights.is_weight`, the tensors AWP perturbs and the landscape directions move);
biases and BatchNorm affine parameters are held fixed, and BatchNorm uses its running statistics
(eval mode), as everywhere in the landscape package.

A product H v is one double-backward pass (Pearlmutter 1994): g = dL/dw with ``create_graph``,
then d<g, v>/dw with ``torch.autograd.grad``. When the samples fit in one batch, g's graph is
built once and every product costs one pass through it (PyHessian's single-batch scheme, Yao et al.
2020); with several batches every product recomputes forward and gradient per batch, so memory
stays one batch's graph. The sum is weighted by batch size, so H does not depend on the split
(Li et al.'s tool instead inflates the eigenvalue by the number of batches).

- :func:`top_eigenvalue`: power iteration (as PyHessian: stop when the Rayleigh quotient changes
  by less than ``tol`` relative); it converges to the eigenvalue of largest magnitude, signed.
- :func:`hutchinson_trace`: tr H = E[v^T H v] for Rademacher v (Hutchinson 1989), the mean of
  ``draws`` random vectors; the variance of one draw is 2 (||H||_F^2 - sum_i H_ii^2).

Products run without autocast, in the parameters' dtype (bf16 second derivatives are too coarse),
on the plain module (:func:`awp.weights.unwrap`): ``torch.compile`` cannot take double backward,
and DistributedDataParallel's gradient hooks must not fire.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from awp.errors import UsageError, require
from awp.metrics import AttackSpec
from awp.runtime import Runtime
from awp.weights import named_weights, unwrap
from landscape.evaluate import fixed_batches, model_runtime

Vector = list[Tensor]


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """<a, b> over lists of tensors, as a 0-dim tensor on the device (no host sync)."""
    return sum((x * y).sum() for x, y in zip(a, b))


class HessianOperator:
    """v -> H v for the mean cross-entropy over fixed batches, w.r.t. the model's weights.

    ``batches``: (inputs, labels) pairs already on the device. The model (unwrapped) is used in the
    mode it is in (the caller puts it in eval mode); nothing is written to ``.grad``. ``params``
    lists the tensors v ranges over: the weights that take part in the forward pass (an unused
    weight has a zero Hessian row and is left out).
    """

    def __init__(self, model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]]):
        self.model = unwrap(model)
        self.batches = list(batches)
        self.count = sum(len(y) for _, y in self.batches)
        if self.count == 0:
            raise UsageError("no samples to compute the Hessian on")
        weights = named_weights(self.model)
        if not weights:
            raise UsageError("the model has no conv or linear weight to take the Hessian over")
        frozen = [name for name, p in weights if not p.requires_grad]
        if frozen:
            raise UsageError(f"weight {frozen[0]} has requires_grad=False; the Hessian needs gradients")
        params = [p for _, p in weights]
        grads = self._gradient(*self.batches[0], params, allow_unused=True)
        self.names = [name for (name, _), g in zip(weights, grads) if g is not None]
        self.params = [p for p, g in zip(params, grads) if g is not None]
        # One batch: keep its gradient graph, so a product is one double-backward pass.
        self._graph = [g for g in grads if g is not None] if len(self.batches) == 1 else None

    def _gradient(self, x: Tensor, y: Tensor, params: Sequence[Tensor], allow_unused: bool = False) -> tuple:
        with torch.enable_grad():
            loss = F.cross_entropy(self.model(x), y, reduction="sum") / self.count
            return torch.autograd.grad(loss, params, create_graph=True, allow_unused=allow_unused)

    def __call__(self, v: Sequence[Tensor]) -> Vector:
        """H v, a list shaped like :attr:`params`."""
        if self._graph is not None:
            return list(torch.autograd.grad(self._graph, self.params, grad_outputs=list(v), retain_graph=True))
        total: Vector | None = None
        for x, y in self.batches:
            hv = torch.autograd.grad(self._gradient(x, y, self.params), self.params, grad_outputs=list(v))
            total = list(hv) if total is None else [t.add_(h) for t, h in zip(total, hv)]
        return total

    def like(self, draw: str, generator: torch.Generator) -> Vector:
        """A random vector shaped like :attr:`params`: 'gaussian' N(0, I) or 'rademacher' (+-1)."""
        out = []
        for p in self.params:
            if draw == "gaussian":
                out.append(torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype))
            else:
                bits = torch.randint(0, 2, p.shape, generator=generator, device=p.device)
                out.append(bits.to(p.dtype).mul_(2).sub_(1))
        return out


def top_eigenvalue(op: HessianOperator, generator: torch.Generator, iters: int = 100, tol: float = 1e-3) -> float:
    """Power iteration from a seeded Gaussian start: lambda_k = v_k^T H v_k with ||v_k|| = 1,
    v_{k+1} = H v_k / ||H v_k||; stops after ``iters`` products or when
    |lambda_k - lambda_{k-1}| <= tol |lambda_{k-1}|. Returns the eigenvalue of largest magnitude."""
    v = op.like("gaussian", generator)
    norm = dot(v, v).sqrt()
    v = [t / norm for t in v]
    value = None
    for _ in range(iters):
        hv = op(v)
        new, norm = torch.stack([dot(hv, v), dot(hv, hv).sqrt()]).tolist()  # one host sync per product
        if norm == 0:
            return 0.0
        v = [t / norm for t in hv]
        converged = value is not None and abs(new - value) <= tol * abs(value)
        value = new
        if converged:
            break
    return float(value)


def hutchinson_trace(op: HessianOperator, generator: torch.Generator, draws: int = 30) -> float:
    """tr H estimated as the mean of v^T H v over ``draws`` seeded Rademacher vectors."""
    total = None
    for _ in range(draws):
        v = op.like("rademacher", generator)
        value = dot(op(v), v)
        total = value if total is None else total + value
    return float(total / draws)


def _count(value: Any, what: str) -> int:
    require(int(value) == value and value >= 1, f"{what} must be a whole number >= 1, got {value}")
    return int(value)


def hessian_top_eigenvalue(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, iters: int = 100,
                           tol: float = 1e-3, seed: int = 0, batch_size: int = 256,
                           runtime: Runtime | None = None) -> float:
    """Top eigenvalue of the Hessian of the mean CE w.r.t. the weights, at fixed inputs (clean when
    ``attack`` is None, else adversarial examples crafted at w): :func:`top_eigenvalue`.

    Units: loss / weight^2. Cost: one attack, then at most ``iters`` products, each one double
    backward (about 2 forward+backward passes) per batch, plus a forward and gradient per batch
    when the samples do not fit in one batch.
    """
    iters = _count(iters, "iters")
    require(tol >= 0, f"tol must be >= 0, got {tol}")
    runtime = model_runtime(model, runtime)
    with fixed_batches(model, data, attack, batch_size=batch_size, runtime=runtime) as batches:
        return top_eigenvalue(HessianOperator(model, batches), runtime.generator(seed), iters, tol)


def hessian_trace(model: nn.Module, data: Any, attack: AttackSpec | None = None, *, draws: int = 30,
                  seed: int = 0, batch_size: int = 256, runtime: Runtime | None = None) -> float:
    """Trace of the Hessian of the mean CE w.r.t. the weights at fixed inputs, by Hutchinson's
    estimator over ``draws`` Rademacher vectors (:func:`hutchinson_trace`).

    Units: loss / weight^2. Cost: one attack, then ``draws`` products (as
    :func:`hessian_top_eigenvalue`).
    """
    draws = _count(draws, "draws")
    runtime = model_runtime(model, runtime)
    with fixed_batches(model, data, attack, batch_size=batch_size, runtime=runtime) as batches:
        return hutchinson_trace(HessianOperator(model, batches), runtime.generator(seed), draws)
