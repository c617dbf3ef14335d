"""Directions in weight space for loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape
of Neural Nets", Sec. 4 filter normalization; used by Wu et al. 2020, Sec. 3).

A direction is a dict ``parameter name -> tensor`` shaped like the parameter and on its device.
Gaussian entries are drawn with a ``torch.Generator`` seeded by ``seed`` on the model's device, then
rescaled so that the direction has the scale of the weights it perturbs:

- ``'filter'``: for every slice j along dim 0 of every weight tensor (a conv output filter, a
  linear row), d_j <- d_j * ||w_j|| / (||d_j|| + 1e-10)  (Li et al., Eq. in Sec. 4);
- ``'layer'``:  d_l <- d_l * ||w_l|| / (||d_l|| + 1e-10) for the whole tensor;
- ``'none'``:   d stays N(0, I).

Which tensors are weights is decided by :func:`awp.weights.is_weight` (dim >= 2 and ``weight``
in the name), the same predicate AWP uses, so the two definitions cannot drift. The other
parameters (biases, BatchNorm affine) get d = 0 with ``ignore='biasbn'`` (recommended) or d = w
with ``ignore='none'`` (Li et al.'s tool). Buffers (BN running statistics) are never part of d.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from awp.errors import UsageError
from awp.registry import Registry
from awp.weights import is_weight, unwrap

Direction = dict[str, Tensor]
NORMALIZATIONS = Registry("normalization", {
    "filter": "per output filter (a slice along dim 0): ||d_j|| = ||w_j|| (Li et al. 2018)",
    "layer": "per weight tensor: ||d_l|| = ||w_l||",
    "none": "the Gaussian as drawn, N(0, I)"})
IGNORES = Registry("ignore rule", {"biasbn": "biases and BatchNorm affine parameters get d = 0 (recommended)",
                                   "none": "biases and BatchNorm affine parameters get d = w (Li et al.'s tool)"})
_TINY = 1e-10  # Li et al.'s guard against an all-zero slice


def _check(normalization: str, ignore: str) -> None:
    NORMALIZATIONS.resolve(normalization)
    IGNORES.resolve(ignore)


def normalize_direction(d: Tensor, w: Tensor, normalization: str) -> Tensor:
    """``d`` rescaled to the scale of ``w`` per filter (slice along dim 0), per layer, or not at all."""
    if normalization == "filter":
        d_norm = d.flatten(1).norm(dim=1)
        w_norm = w.detach().float().flatten(1).norm(dim=1)
        return d * (w_norm / (d_norm + _TINY)).view(-1, *([1] * (d.dim() - 1)))
    if normalization == "layer":
        return d * (w.detach().float().norm() / (d.norm() + _TINY))
    return d


# The kinds of direction a landscape can be drawn along (each a function returning a Direction).
DIRECTIONS: Registry = Registry("landscape direction")


@DIRECTIONS.register("random")
def random_direction(model: nn.Module, seed: int = 0, normalization: str = "filter",
                     ignore: str = "biasbn") -> Direction:
    """A seeded Gaussian direction over the model's parameters, normalized (module docstring).

    Returns a dict with one float32 tensor per parameter (zeros where ignored), on the
    parameter's device. Same ``seed`` and device -> the same direction; the model is not touched.
    Entries are drawn for the weight tensors only, in registration order, so a weight's direction
    does not depend on the ignore rule.
    """
    _check(normalization, ignore)
    params = list(unwrap(model).named_parameters())
    if not params:
        raise UsageError("the model has no parameters to draw a direction for")
    generators: dict[torch.device, torch.Generator] = {}
    direction: Direction = {}
    for name, p in params:
        w = p.detach()
        if is_weight(name, p):
            gen = generators.setdefault(w.device, torch.Generator(device=w.device).manual_seed(int(seed)))
            d = torch.randn(w.shape, generator=gen, device=w.device, dtype=torch.float32)
            direction[name] = normalize_direction(d, w, normalization)
        elif ignore == "none":
            direction[name] = w.float().clone()  # Li et al.: d = w for biases and BN affine
        else:
            direction[name] = torch.zeros(w.shape, device=w.device, dtype=torch.float32)
    return direction


@DIRECTIONS.register("interpolation")
def interpolation_direction(model_a: nn.Module, model_b: nn.Module, ignore: str = "none") -> Direction:
    """d = w_b - w_a on every parameter (Goodfellow et al. 2015 linear interpolation).

    w_a + alpha d is model_a at alpha = 0 and model_b at alpha = 1. ``ignore='biasbn'`` zeroes the
    non-weight parameters. BN running statistics are buffers, not part of d: points are evaluated
    with model_a's statistics. Both models need the same parameter names and shapes.
    """
    _check("none", ignore)
    pa = dict(unwrap(model_a).named_parameters())
    pb = dict(unwrap(model_b).named_parameters())
    if list(pa) != list(pb):
        raise UsageError("interpolation needs two models with the same parameter names")
    direction: Direction = {}
    for name, a in pa.items():
        b = pb[name]
        if a.shape != b.shape:
            raise UsageError(f"interpolation: parameter {name} has shape {tuple(a.shape)} vs {tuple(b.shape)}")
        if ignore == "biasbn" and not is_weight(name, a):
            direction[name] = torch.zeros(a.shape, device=a.device, dtype=torch.float32)
        else:
            direction[name] = b.detach().float().to(a.device) - a.detach().float()
    return direction


def _dot(a: Direction, b: Direction) -> Tensor:
    return sum((a[k].double() * b[k].double()).sum() for k in a)


def orthogonalize(directions: Sequence[Direction], keep_norm: bool = True) -> list[Direction]:
    """Gram-Schmidt over the flattened directions; new dicts, inputs untouched.

    The first direction is returned unchanged, so it keeps its per-filter normalization exactly.
    Each later one has its projections on the earlier ones removed (<d_i, d_j> = 0 for i != j in
    the flattened space of all parameters) and, with ``keep_norm``, is rescaled by one global
    factor back to its original total norm: the scale of the plot axis stays comparable, but the
    per-filter norms of later directions are only approximately those of the weights (exact
    filter normalization and exact orthogonality cannot both hold).
    """
    directions = list(directions)
    if not directions:
        raise UsageError("orthogonalize needs at least one direction")
    keys = list(directions[0])
    for d in directions[1:]:
        if list(d) != keys:
            raise UsageError("orthogonalize: directions must cover the same parameters")
    out: list[Direction] = []
    for d in directions:
        v = {k: t.clone() for k, t in d.items()}
        for u in out:
            uu = _dot(u, u)
            if uu > 0:
                coef = (_dot(v, u) / uu).float()
                for k in keys:
                    v[k] -= coef * u[k]
        if keep_norm and out:
            original, now = _dot(d, d).sqrt(), _dot(v, v).sqrt()
            if now > 0:
                scale = (original / now).float()
                for k in keys:
                    v[k] *= scale
        out.append(v)
    return out

