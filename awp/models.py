"""Architectures used by "Adversarial Weight Perturbation Helps Robust Generalization".

Wu, Xia & Wang (NeurIPS 2020) train PreActResNet-18 (He et al. 2016, "Identity Mappings in Deep
Residual Networks") exactly as Rice, Wong & Kolter (ICML 2020, "Overfitting in adversarially
robust deep learning") do, and WideResNet-34-10 / WideResNet-28-10 (Zagoruyko & Komodakis 2016)
in the variant of the TRADES (Zhang et al. 2019), MART (Wang et al. 2020) and RST (Carmon et al.
2019) official code. Module and attribute names follow that code, so the official checkpoints
(after stripping ``module.`` and, for TRADES, the unused ``sub_block1``) load with
``strict=True``. ``smallcnn`` is ours: a three-stage conv net for the offline 8x8 digits.

Every model takes images in [0, 1] and normalizes them in its first layer (:class:`Normalize`),
whose mean/std are non-persistent buffers: the state dict holds only the network, and the
mean/std come back from ``arch_kwargs``, which checkpoints store next to it. Attacks then work in
pixel space with no normalization to forget.

    model = build_model("preactresnet18", num_classes=10, mean=[0.49, 0.48, 0.45], std=[0.2] * 3)
    same = build_model(model.arch, **model.arch_kwargs)   # how checkpoints rebuild a model
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from awp.errors import UsageError, require

__all__ = [
    "Normalize",
    "SmallCNN",
    "PreActBlock",
    "PreActResNet18",
    "BasicBlock",
    "NetworkBlock",
    "WideResNet",
    "build_model",
    "list_models",
]


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


# --------------------------------------------------------------------------------------------
# smallcnn: for the offline sklearn digits (8x8x1); also runs on 32x32x3.


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


# --------------------------------------------------------------------------------------------
# PreActResNet-18: Rice et al. 2020 (locuslab/robust_overfitting) = official AWP code.


class PreActBlock(nn.Module):
    """Pre-activation basic block; the 1x1 shortcut (when present) sees the activated input."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        # A Sequential, as in the reference, so the key is ``shortcut.0.weight``.
        self.shortcut = None
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride,
                          bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreActResNet-18 of Rice et al. 2020; PyTorch's default init, as in that code."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(64, 2, stride=1)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.bn = nn.BatchNorm2d(512 * PreActBlock.expansion)
        self.linear = nn.Linear(512 * PreActBlock.expansion, num_classes)

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes * PreActBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        # The reference uses avg_pool2d(out, 4), the same thing for 32x32 inputs; the adaptive
        # pool also accepts other sizes (8x8 digits, 64x64 images).
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


# --------------------------------------------------------------------------------------------
# WideResNet: TRADES / MART / AWP official code, minus TRADES' unused ``sub_block1``.


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


# --------------------------------------------------------------------------------------------
# Registry.


@dataclass(frozen=True)
class _Entry:
    constructor: Callable[..., nn.Module]
    # The kwargs beyond the common ones, with their defaults; the names preset them.
    defaults: Mapping[str, Any]
    # Options recorded in arch_kwargs only when they differ from these defaults, so that models
    # and checkpoints made before the option existed keep their arch_kwargs.
    optional: Mapping[str, Any] = dataclasses.field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {
    "smallcnn": _Entry(SmallCNN, {"channels": (16, 32, 64)}, {"batchnorm": True}),
    "preactresnet18": _Entry(PreActResNet18, {}),
    "wrn-34-10": _Entry(WideResNet, {"depth": 34, "widen_factor": 10, "dropout": 0.0}),
    "wrn-28-10": _Entry(WideResNet, {"depth": 28, "widen_factor": 10, "dropout": 0.0}),
}

_COMMON_DEFAULTS: dict[str, Any] = {"in_channels": 3, "mean": None, "std": None}


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build a registered model on the CPU in train mode.

    ``kwargs`` are the common ``in_channels`` (3), ``mean`` and ``std`` (per-channel lists, or
    None for identity) plus the model's own: ``channels`` (smallcnn), ``depth``,
    ``widen_factor``, ``dropout`` (the WRNs; the name only presets depth and width). The result
    carries ``model.arch`` (the name) and ``model.arch_kwargs`` (every kwarg, defaults included,
    as JSON values), so ``build_model(model.arch, **model.arch_kwargs)`` rebuilds it.

    Raises :class:`UsageError` for an unknown name, an unknown kwarg, a wrong type or a bad value.
    """
    require(isinstance(name, str) and name in _REGISTRY,
            f"unknown model {name!r}; choose from: {', '.join(list_models())}")
    entry = _REGISTRY[name]
    accepted = {"num_classes": 10, **_COMMON_DEFAULTS, **entry.defaults, **entry.optional}
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UsageError(f"unknown argument {unknown[0]!r} for model {name!r}; "
                         f"accepted: {', '.join(sorted(accepted))}")
    given = {**accepted, **kwargs, "num_classes": num_classes}
    resolved = {key: _CHECKS[key](f"{name}: {key}", given[key]) for key in accepted}
    _check_together(name, resolved)
    model = entry.constructor(**resolved)
    model.arch = name
    model.arch_kwargs = {k: v for k, v in resolved.items()
                         if k not in entry.optional or v != entry.optional[k]}
    return model


# Each check returns the value as plain JSON types (numpy scalars and tuples become int, float,
# list) so that arch_kwargs survives json.dumps and torch.load(weights_only=True).


def _as_int(what: str, value: Any, minimum: int) -> int:
    require(isinstance(value, numbers.Integral) and not isinstance(value, bool),
            f"{what} must be an int, got {value!r}")
    require(value >= minimum, f"{what} must be >= {minimum}, got {value}")
    return int(value)


def _as_float(what: str, value: Any) -> float:
    require(isinstance(value, numbers.Real) and not isinstance(value, bool),
            f"{what} must be a number, got {value!r}")
    require(math.isfinite(value), f"{what} must be finite, got {value!r}")
    return float(value)


def _as_sequence(what: str, value: Any) -> list:
    require(isinstance(value, (list, tuple)), f"{what} must be a list, got {value!r}")
    return list(value)


def _as_channel_values(what: str, value: Any) -> list[float] | None:
    if value is None:
        return None
    values = [_as_float(what, v) for v in _as_sequence(what, value)]
    require(len(values) > 0, f"{what} must not be empty")
    return values


def _as_channels(what: str, value: Any) -> list[int]:
    values = [_as_int(what, v, 1) for v in _as_sequence(what, value)]
    require(len(values) == 3, f"{what} must list 3 stage widths, got {len(values)}")
    return values


def _as_dropout(what: str, value: Any) -> float:
    p = _as_float(what, value)
    require(0.0 <= p < 1.0, f"{what} must be in [0, 1), got {p}")
    return p


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "num_classes": lambda what, v: _as_int(what, v, 1),
    "in_channels": lambda what, v: _as_int(what, v, 1),
    "mean": _as_channel_values,
    "std": _as_channel_values,
    "channels": _as_channels,
    "depth": lambda what, v: _as_int(what, v, 10),
    "widen_factor": lambda what, v: _as_int(what, v, 1),
    "dropout": _as_dropout,
    "batchnorm": lambda what, v: _as_bool(what, v),
}


def _as_bool(what: str, value: Any) -> bool:
    require(isinstance(value, bool), f"{what} must be true or false, got {value!r}")
    return value


def _check_together(name: str, kw: Mapping[str, Any]) -> None:
    for key in ("mean", "std"):
        if kw[key] is not None:
            require(len(kw[key]) == kw["in_channels"],
                    f"{name}: {key} has {len(kw[key])} values for in_channels={kw['in_channels']}")
    if kw["std"] is not None:
        require(all(s > 0 for s in kw["std"]), f"{name}: std must be > 0, got {kw['std']}")
    if "depth" in kw:
        require((kw["depth"] - 4) % 6 == 0,
                f"{name}: depth must be 6n+4 (10, 16, 22, 28, 34, ...), got {kw['depth']}")
