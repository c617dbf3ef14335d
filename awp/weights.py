"""Which parameters are "weights": the one predicate shared by AWP and the landscape.

AWP (Wu et al. 2020, official code ``diff_in_weights``) perturbs a state-dict entry only when it
has more than one dimension and its name contains ``weight``: conv kernels and linear matrices.
Filter normalization (Li et al. 2018) gives exactly those tensors a direction and ignores the
rest (biases, BatchNorm affine parameters; buffers are never parameters). Both packages call
:func:`is_weight` so that the two definitions cannot drift apart.
"""
from __future__ import annotations

from torch import nn


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
