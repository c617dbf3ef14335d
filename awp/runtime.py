"""Device and precision: the one place that decides where tensors live and how they are computed.

Nothing else in the toolkit names a device or a dtype. A :class:`Runtime` resolves ``device``
('auto' picks CUDA when present), the autocast precision (bf16 needs no loss scaler; fp16 gets a
``GradScaler``; fp32 gets no-op versions of both, so the training loop has no ``if amp:``
branches), channels_last memory format and optional ``torch.compile``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from awp.errors import UsageError
from awp.registry import Registry


@dataclass(frozen=True)
class Precision:
    """How forward passes compute: the autocast dtype (None: plain fp32) and whether the loss
    needs a scaler (fp16 only: bf16 has fp32's exponent range)."""

    autocast: torch.dtype | None
    scaled: bool = False


PRECISIONS: Registry[Precision] = Registry("precision")
PRECISIONS.register("fp32", Precision(None), description="float32 throughout, no autocast")
PRECISIONS.register("bf16", Precision(torch.bfloat16), description="bfloat16 autocast, no loss scaler")
PRECISIONS.register("fp16", Precision(torch.float16, scaled=True), description="float16 autocast with a GradScaler")


@dataclass(frozen=True)
class Runtime:
    """Where and how to compute: device, autocast precision, memory format, compilation."""

    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes (a no-op in fp32)."""
        dtype = PRECISIONS.get(self.precision).autocast
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaler, enabled only for fp16 (bf16 has fp32's exponent range)."""
        return torch.amp.GradScaler(self.device.type, enabled=PRECISIONS.get(self.precision).scaled)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` (in place) to the device and memory format; weights stay float32."""
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        return model.to(device=self.device, memory_format=memory_format)

    def compiled(self, model: nn.Module) -> nn.Module:
        """``torch.compile(model)`` when asked, else ``model`` itself (shares its parameters)."""
        return torch.compile(model) if self.compile else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch of images to the device in the model's memory format."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def generator(self, seed: int) -> torch.Generator:
        """A seeded random generator on the device (random starts are drawn where they are used)."""
        return torch.Generator(device=self.device).manual_seed(int(seed))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None) -> 'cuda' when available, else 'cpu'; anything else is checked."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    return resolved


def resolve_runtime(device: str | torch.device | None = "auto", precision: str = "fp32",
                    channels_last: bool = False, compile: bool = False) -> Runtime:
    """Build the :class:`Runtime` for a run; bad names give a one-line :class:`UsageError`."""
    PRECISIONS.resolve(precision)
    return Runtime(resolve_device(device), precision, bool(channels_last), bool(compile))


CPU = Runtime(torch.device("cpu"))
