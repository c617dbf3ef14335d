"""``smallcnn``: the toolkit's own three-stage conv net for the offline 8x8 digits (it also runs
on 32x32x3), the model of the CPU demo that reproduces Wu, Xia & Wang's (NeurIPS 2020) Fig. 1
effect: adversarial training's weight loss landscape sharpens as its robust generalization gap
grows, and AWP keeps it flatter."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from awp.errors import require
from awp.models.normalize import Normalize
from awp.models.registry import MODELS, Kwarg, ModelSpec, boolean, listed, whole


class SmallCNN(nn.Module):
    """Three stages of conv3x3 -> BatchNorm -> ReLU, 2x2 max-pool between stages, global average
    pool, linear. BatchNorm is there on purpose: AWP must leave BN statistics untouched, and a
    model without BN could not show that it does.

    ``batchnorm=False`` drops the BatchNorms (the convs then get a bias): every example's output
    depends on that example alone, so a DDP run equals the single-process run exactly (the
    distributed tests use it).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels: Sequence[int] = (16, 32, 64),
        batchnorm: bool = True,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(channels):
            if i > 0:
                # Two pools only: 8x8 -> 4x4 -> 2x2, so the digits still have a spatial map.
                layers.append(nn.MaxPool2d(2))
            # No conv bias: the BatchNorm that follows has its own shift.
            layers += ([nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
                       if batchnorm else [nn.Conv2d(prev, width, 3, padding=1)])
            layers.append(nn.ReLU())
            prev = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.normalize(x))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _stage_widths(what: str, value: Any) -> list[int]:
    values = [whole(1)(what, v) for v in listed(what, value)]
    require(len(values) == 3, f"{what} must list 3 stage widths, got {len(values)}")
    return values


MODELS.register("smallcnn", ModelSpec(SmallCNN, {
    "channels": Kwarg((16, 32, 64), _stage_widths),
    "batchnorm": Kwarg(True, boolean, optional=True),
}), description="three conv3x3-BN-ReLU stages for the offline 8x8 digits (ours)")
