"""This toolkit's checkpoint file: a plain dict that ``torch.load(path, weights_only=True)`` reads.

Keys: ``format_version``, ``model`` (state dict without ``module.`` prefixes), ``arch``,
``arch_kwargs``, ``dataset``, ``method``, ``awp_gamma``, ``epoch``, ``metrics`` (train/test clean
and robust accuracy with the attack that measured them), ``config``; ``last.pt`` adds what resuming
needs (optimizer, scaler, RNG states, perturbation state, best so far). Writes are atomic
(:func:`awp.io.atomic_torch_save`); reads go through :mod:`awp.safety`, so a file from a stranger
runs no code and allocates nothing before its weights are known to be finite and to fit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from awp.data import dataset_spec
from awp.errors import UserError, one_line
from awp.io import atomic_torch_save
from awp.models import build_model
from awp.safety import (NONFINITE_HINT, check_finite, check_state, check_tensors, meta_skeleton, safe_load,
                        strip_prefix)

FORMAT_VERSION = 1
REQUIRED = ("model", "arch", "arch_kwargs")


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict on the CPU, prefixes removed."""
    return {k: v.detach().cpu() for k, v in strip_prefix(model.state_dict()).items()}


def save_checkpoint(path: str | Path, model: nn.Module, *, arch: str, arch_kwargs: dict[str, Any],
                    dataset: str, method: str, awp_gamma: float, epoch: int,
                    metrics: dict[str, Any], config: dict[str, Any], **extra: Any) -> None:
    """Write a checkpoint atomically; ``extra`` (optimizer state, RNG states...) is stored as is."""
    payload = {"format_version": FORMAT_VERSION, "model": model_state(model), "arch": arch,
               "arch_kwargs": dict(arch_kwargs), "dataset": dataset, "method": method,
               "awp_gamma": float(awp_gamma), "epoch": int(epoch), "metrics": dict(metrics),
               "config": dict(config), **extra}
    atomic_torch_save(payload, path)



def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    allow_nonfinite: bool = False, hint: str = NONFINITE_HINT) -> dict[str, Any]:
    """The checkpoint dict, read safely; every failure is one :class:`UserError` line.

    Weights holding NaN or infinity are refused (:func:`check_finite`, the message ending with
    ``hint``); with ``allow_nonfinite`` they are loaded and their names listed under the
    payload's ``nonfinite_weights``.
    """
    payload = safe_load(path, map_location)
    if not isinstance(payload, dict) or not all(k in payload for k in REQUIRED):
        raise UserError(f"{path} is not a checkpoint of this toolkit (no {'/'.join(REQUIRED)} keys); "
                        f"re-save foreign weights with awp.checkpoint.save_checkpoint (arch, arch_kwargs, config)")
    if not isinstance(payload["arch"], str) or not isinstance(payload["arch_kwargs"], dict):
        raise UserError(f"{path}: 'arch' must be a name and 'arch_kwargs' a dict, got "
                        f"{type(payload['arch']).__name__} and {type(payload['arch_kwargs']).__name__}")
    check_tensors(payload["model"], str(path))
    bad = check_finite(payload["model"], str(path), allow=allow_nonfinite, hint=hint)
    if bad:
        payload["nonfinite_weights"] = bad
    return payload



def model_from_state(arch: str, arch_kwargs: dict[str, Any], state: dict[str, torch.Tensor], source: str, *,
                     max_params: int | None = None) -> nn.Module:
    """``build_model(arch, **arch_kwargs)`` loaded with ``state``, checked before it is allocated.

    The skeleton is built on the meta device first; names, shapes and size are checked
    (:func:`check_state`); only then is the real model built and the weights loaded strictly.
    """
    check_tensors(state, source)
    state = strip_prefix(state)
    skeleton = meta_skeleton(lambda: build_model(arch, **arch_kwargs), source=source, max_tensors=len(state) + 16)
    check_state(skeleton, state, source, max_params=max_params)
    model = build_model(arch, **arch_kwargs)
    model.load_state_dict(state, strict=True)
    return model


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *, allow_nonfinite: bool = False,
                    max_params: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, meta) from a checkpoint; meta is the dict without the weights.

    Nothing is allocated before the weights are known to be finite and to fit the architecture
    within the size limit (:func:`model_from_state`); ``meta['nonfinite_weights']`` lists the
    non-finite tensors that ``allow_nonfinite`` let through.
    """
    payload = read_checkpoint(path, map_location, allow_nonfinite=allow_nonfinite)
    model = model_from_state(payload["arch"], payload["arch_kwargs"], payload["model"], str(path),
                             max_params=max_params)
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "model"}
    meta["path"] = str(path)
    return model.to(map_location), meta


def check_fits_data(arch: str, arch_kwargs: dict[str, Any], dataset: str, source: str) -> None:
    """One line, before any data is read, unless the model takes the data set's images and has
    one output per class: a forward of the architecture on the meta device (nothing allocated)."""
    spec = dataset_spec(dataset)
    skeleton = meta_skeleton(lambda: build_model(arch, **arch_kwargs), source=source).eval()
    shape = (2, *spec.image_shape)
    try:
        with torch.no_grad():
            out = skeleton(torch.empty(shape, device="meta"))
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"the model of {source} does not take {dataset} images ({' x '.join(map(str, shape[1:]))}, "
                        f"C x H x W): {one_line(exc, 160)}") from None
    if tuple(out.shape) != (2, spec.num_classes):
        raise UserError(f"the model of {source} has {list(out.shape)[1:]} outputs per image, but {dataset} has "
                        f"{spec.num_classes} classes")
