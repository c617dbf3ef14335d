"""Train/eval mode for the length of a block: the one home of "save every submodule's flag, set a
mode, restore the flags", whatever raises inside.

BatchNorm's behaviour, and so every number of Wu, Xia & Wang (NeurIPS 2020), depends on the mode:
attacks and evaluation run in eval mode (running statistics), the AT scripts craft in train mode
(batch statistics), RST's pseudo-labels come from eval mode. Restoring each submodule's own flag,
not calling ``model.train(old)``, keeps a model whose parts were in mixed modes as it was.

This module sits at the bottom of ``awp`` (it imports only the registry), so the data package,
the attacks and AWP can all use it.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

from awp.registry import Registry

MODES = Registry("attack mode", {
    "eval": "BatchNorm on its running statistics, dropout off",
    "train": "BatchNorm on the batch's statistics (and updating its running ones), as the AT scripts craft",
    "keep": "the model's modes as they are",
})


@contextlib.contextmanager
def model_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Put ``model`` in 'eval' or 'train' mode ('keep': as it is), restoring each submodule's flag."""
    mode = MODES.resolve(mode)
    if mode == "keep":
        yield model
        return
    flags = [(module, module.training) for module in model.modules()]
    model.train(mode == "train")
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag
