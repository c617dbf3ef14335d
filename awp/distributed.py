"""Several processes, one run: torchrun's environment, the process group, and small collectives.

Distributed data parallel training of "Adversarial Weight Perturbation Helps Robust
Generalization" (Wu, Xia, Wang, NeurIPS 2020): the official code is single-process, and the AWP
direction of its Algorithm 1 (Eq. 9) is the gradient of the whole batch; under DDP the ascent
gradient is all-reduced so v is the same on every
rank and equal to the single-process one (:func:`all_reduce_mean`).

As in nanoGPT, DDP is detected from the environment that ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``). When ``WORLD_SIZE`` is unset nothing here does anything: a
single process behaves exactly as if this module did not exist. The backend is gloo on CPU (the
tests run two CPU processes) and nccl on CUDA, where rank ``r`` uses ``cuda:LOCAL_RANK``.

:class:`SyncBatchNorm` is BatchNorm with batch statistics over the whole global batch; PyTorch's
own ``nn.SyncBatchNorm`` only runs on accelerators, so on CPU (gloo) :func:`convert_sync_batchnorm`
uses a small equivalent built on the differentiable ``torch.distributed.nn.all_reduce``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn

from awp.errors import UsageError

__all__ = ["SyncBatchNorm", "all_gather_objects", "all_reduce_mean", "all_reduce_sum", "barrier", "broadcast_buffers",
           "convert_sync_batchnorm", "initialized", "is_main", "launched", "local_rank", "localize",
           "rank", "session", "world"]


def launched() -> bool:
    """True when this process was started by torchrun (``WORLD_SIZE`` is set)."""
    return "WORLD_SIZE" in os.environ


def initialized() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", rank()))


def is_main() -> bool:
    """Rank 0 (or a single process): the one that prints and writes files."""
    return rank() == 0


def localize(runtime: Any) -> Any:
    """The runtime of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun (and is made current)."""
    device = runtime.device
    if device.type == "cuda" and (launched() or initialized()):
        device = torch.device("cuda", local_rank() if device.index is None else device.index)
        torch.cuda.set_device(device)
        return dataclasses.replace(runtime, device=device)
    return runtime


@contextlib.contextmanager
def session(device: torch.device | str = "cpu", timeout_s: float = 1800.0) -> Iterator[bool]:
    """Join torchrun's process group for the block (gloo on CPU, nccl on CUDA); yields whether distributed.

    Does nothing when ``WORLD_SIZE`` is unset or a group already exists (a caller that made the
    group, such as a test, keeps ownership of it). A group made here is destroyed on exit.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        yield initialized()
        return
    if not dist.is_available():
        raise UsageError("torch.distributed is not available in this PyTorch build")
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank() if device.index is None else device.index)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield initialized()
    finally:
        dist.destroy_process_group()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over processes, in place (returned as is when not distributed)."""
    if initialized():
        dist.all_reduce(tensor)
    return tensor


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Average ``tensor`` over processes, in place (returned as is when not distributed)."""
    if initialized():
        dist.all_reduce(tensor)
        tensor /= world()
    return tensor


def barrier() -> None:
    if initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BN running statistics) to every rank, in place."""
    if initialized():
        with torch.no_grad():
            for buffer in model.buffers():
                dist.broadcast(buffer, src)


# --------------------------------------------------------------------------------------------
# Synchronized BatchNorm that also runs on CPU (gloo).


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch (all processes).

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; in eval mode, or without
    a process group, it is plain batch norm. The sums are all-reduced with the differentiable
    ``torch.distributed.nn.all_reduce``, so gradients flow through the global statistics.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and initialized()):
            return super().forward(input)
        from torch.distributed.nn import all_reduce as differentiable_all_reduce

        dims = [0] + list(range(2, input.dim()))
        x = input.float()
        local = torch.cat([x.sum(dims), (x * x).sum(dims),
                           x.new_full((1,), float(x.numel() // x.shape[1]))])
        total = differentiable_all_reduce(local)
        c = self.num_features
        count = total[-1]
        mean = total[:c] / count
        var = (total[c:2 * c] / count - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else self.momentum)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        shape = [1, c] + [1] * (input.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """BatchNorm layers -> synchronized ones (in place where possible; returns the model).

    On CUDA PyTorch's ``nn.SyncBatchNorm`` (fused kernels); elsewhere :class:`SyncBatchNorm`.
    Parameters, buffers and state-dict keys are kept.
    """
    if torch.device(device).type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if isinstance(model, nn.modules.batchnorm._BatchNorm) and not isinstance(model, SyncBatchNorm):
        sync = SyncBatchNorm(model.num_features, model.eps, model.momentum, model.affine,
                             model.track_running_stats)
        sync.load_state_dict(model.state_dict())
        sync.train(model.training)
        return sync.to(next(iter(model.state_dict().values())).device) if model.state_dict() else sync
    for name, child in model.named_children():
        model._modules[name] = convert_sync_batchnorm(child, device)
    return model
