"""WideResNet-34-10 and WideResNet-28-10 (Zagoruyko & Komodakis 2016) in the variant of the TRADES
(Zhang et al. 2019), MART (Wang et al. 2020), RST (Carmon et al. 2019) and AWP (Wu, Xia & Wang,
NeurIPS 2020) official code, with its init. Module and attribute names follow that code, so the
official checkpoints (after stripping ``module.`` and, for TRADES, the unused ``sub_block1``) load
with ``strict=True``. The registered names preset depth and width; ``depth``, ``widen_factor`` and
``dropout`` may still be given."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from awp.checks import check_number
from awp.errors import require
from awp.models.normalize import Normalize
from awp.models.registry import MODELS, Kwarg, ModelSpec, whole


class BasicBlock(nn.Module):
    """WRN basic block. When the width changes, the 1x1 ``convShortcut`` takes the activated
    input (the reference overwrites ``x``), otherwise the identity takes the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropRate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        # Not in place (the reference is): an in-place ReLU would rewrite what a forward hook on
        # bn1/bn2 captured; the outputs are the same.
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.droprate = dropRate
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None
        if not self.equalInOut:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride,
                                          padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equalInOut:
            out = self.relu1(self.bn1(x))
            shortcut = x
        else:
            out = self.relu1(self.bn1(x))
            shortcut = self.convShortcut(out)
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    """``nb_layers`` BasicBlocks; only the first changes width and stride (key ``layer.i``)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int,
                 dropRate: float = 0.0):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                       dropRate)
            for i in range(nb_layers)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor of the TRADES/MART/AWP code, with its init: convs normal with
    std sqrt(2 / (k*k*out_channels)) (Kaiming, fan_out), BN weight 1 bias 0, linear bias 0.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        depth: int = 34,
        widen_factor: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1,
                               bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, dropout)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, dropout)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes)
        self.nChannels = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                # The reference zeroes only the bias; the weight keeps PyTorch's default init.
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        # The reference uses avg_pool2d(out, 8): the same for 32x32 inputs.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def _depth(what: str, value: Any) -> int:
    depth = whole(10)(what, value)
    require((depth - 4) % 6 == 0, f"{what} must be 6n+4 (10, 16, 22, 28, 34, ...), got {depth}")
    return depth


def _dropout(what: str, value: Any) -> float:
    return check_number(value, what, low=0, high=1, high_open=True)


def _wrn(depth: int, widen_factor: int) -> ModelSpec:
    return ModelSpec(WideResNet, {"depth": Kwarg(depth, _depth), "widen_factor": Kwarg(widen_factor, whole(1)),
                                  "dropout": Kwarg(0.0, _dropout)})


MODELS.register("wrn-28-10", _wrn(28, 10), description="WideResNet-28-10 of the RST code (its CIFAR-10 rows)")
MODELS.register("wrn-34-10", _wrn(34, 10), description="WideResNet-34-10 of the TRADES, MART and AWP code")
