"""Which parameters are "weights", and moving them: the one predicate and the one offset
mechanism shared by AWP and the landscape.

AWP (Wu et al. 2020, official code ``diff_in_weights``) perturbs a state-dict entry only when it
has more than one dimension and its name contains ``weight``: conv kernels and linear matrices.
Filter normalization (Li et al. 2018) gives exactly those tensors a direction and ignores the
rest (biases, BatchNorm affine parameters; buffers are never parameters). Both packages call
:func:`is_weight` so that the two definitions cannot drift apart.

:class:`WeightOffset` sets weights to w0 + sum_i c_i d_i and back, bit for bit: AWP's
``v.applied()`` (w + v for the training step) and every landscape point (w + alpha d) use it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

Combination = Sequence[tuple[float, Mapping[str, Tensor]]]


def unwrap(model: nn.Module) -> nn.Module:
    """The module that owns the parameters (DistributedDataParallel and torch.compile wrap it), so
    that parameter names are the same whichever wrapper a caller holds."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def is_weight(name: str, param) -> bool:
    """True for conv and linear weights: ``dim >= 2`` and ``'weight'`` in the parameter name."""
    return param.dim() >= 2 and "weight" in name.rsplit(".", 1)[-1]


def named_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The model's (name, parameter) pairs that :func:`is_weight` selects, in registration order."""
    return [(name, p) for name, p in model.named_parameters() if is_weight(name, p)]


class WeightOffset:
    """Moves named parameters of a model to w0 + sum_i c_i d_i, and back.

    ``exact`` (default): the first time a tensor moves, w0 is saved, every move starts from w0
    (no drift over many points) and :meth:`restore` copies w0 back bit for bit (w + v - v is not
    exact in floating point), unless the tensor was changed in place since its move (an optimizer
    step taken at w + v, as AWP prescribes): then the offset is subtracted, as the official AWP
    code does. ``exact=False`` saves nothing: a move adds to the current value, :meth:`restore`
    subtracts. One offset serves one session in which only its moves (and such a step) change the
    weights; offsets are added in the parameter's dtype, without temporary tensors.
    """

    def __init__(self, model: nn.Module, *, exact: bool = True):
        self._params = dict(unwrap(model).named_parameters())
        self.exact = exact
        self._saved: dict[str, Tensor] = {}
        self._moved: dict[str, tuple[list[tuple[float, Tensor]], int]] = {}

    def move(self, combination: Combination, names: Sequence[str] | None = None) -> None:
        """w = w0 + sum_i c_i d_i on ``names`` (default: every name the combination moves)."""
        if names is None:
            names = sorted({name for coef, d in combination if coef != 0 for name in d})
        with torch.no_grad():
            for name in names:
                param = self._params[name]
                new = [(float(coef), d[name]) for coef, d in combination if coef != 0 and name in d]
                if self.exact:
                    if name not in self._saved:
                        self._saved[name] = param.detach().clone()
                    elif name in self._moved:  # moved and not restored: start again from w0
                        param.copy_(self._saved[name])
                    terms = new
                else:  # moves add up; restore subtracts them all
                    terms = self._moved.get(name, ([], 0))[0] + new
                for coef, d in new:
                    param.add_(d.to(param.dtype), alpha=coef)
                self._moved[name] = (terms, param._version)

    def restore(self) -> None:
        """Every moved tensor back to w0 (exact, untouched since its move) or minus its offset."""
        with torch.no_grad():
            for name, (terms, version) in self._moved.items():
                param = self._params[name]
                if self.exact and param._version == version:
                    param.copy_(self._saved[name])
                else:
                    for coef, d in reversed(terms):
                        param.sub_(d.to(param.dtype), alpha=coef)
        self._moved = {}

    @contextlib.contextmanager
    def applied(self, combination: Combination, names: Sequence[str] | None = None) -> Iterator[None]:
        """:meth:`move` for the block, :meth:`restore` on exit, even when the block raises."""
        self.move(combination, names)
        try:
            yield
        finally:
            self.restore()
