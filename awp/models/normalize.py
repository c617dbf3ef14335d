"""Per-channel normalization inside the model, so that every model of the toolkit takes images in
[0, 1] and attacks work in pixel space (the eps of Wu, Xia & Wang's tables is in pixel units).

The official AWP, TRADES, MART and RST code normalizes outside the network (or not at all); the
mean/std here are non-persistent buffers, so a state dict holds only the network and matches
theirs, and the mean/std come back from ``arch_kwargs``, which checkpoints store next to it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; ``None`` for either leaves that half out.

    The buffers are non-persistent so that the state dict matches foreign checkpoints, which
    normalize outside the model and therefore carry no such keys.
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        self.register_buffer("mean", _channel_tensor(mean), persistent=False)
        self.register_buffer("std", _channel_tensor(std), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Skipping the identity keeps an un-normalized model bit-identical to the reference code.
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x

    def extra_repr(self) -> str:
        def fmt(t):
            return "None" if t is None else str([round(v, 4) for v in t.flatten().tolist()])
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"


def _channel_tensor(values: Sequence[float] | None) -> torch.Tensor | None:
    if values is None:
        return None
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(1, -1, 1, 1)
