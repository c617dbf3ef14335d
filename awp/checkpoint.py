"""Checkpoints: a plain dict that ``torch.load(path, weights_only=True)`` reads, and runs rebuilt from them.

Keys: ``model`` (state dict without ``module.`` prefixes), ``arch``, ``arch_kwargs``, ``dataset``,
``method``, ``awp_gamma``, ``epoch``, ``metrics`` (train/test clean and robust accuracy with the
attack that measured them), ``config``; ``last.pt`` adds what resuming needs. Loading never
unpickles arbitrary objects; a file that would need it is refused with a message saying why.

:func:`load_run` is the one place that turns a checkpoint (ours, an imported one, or
``robustbench:NAME``) into what every measurement needs: the model, its resolved training config,
its data splits and the attack that measured its per-epoch metrics.
"""
from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from awp.config import TrainConfig, config_from_dict
from awp.errors import UsageError, UserError
from awp.io import atomic_torch_save, sha256_file
from awp.metrics import AttackSpec, metric_attack
from awp.models import build_model

if TYPE_CHECKING:
    from awp.data import DataSplits, ImageSet

ROBUSTBENCH_PREFIX = "robustbench:"

FORMAT_VERSION = 1
REQUIRED = ("model", "arch", "arch_kwargs")


def strip_prefix(state: dict[str, torch.Tensor], prefixes=("module.", "_orig_mod.")) -> dict[str, torch.Tensor]:
    """Remove DataParallel / DDP / torch.compile prefixes from state-dict keys."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


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


TRUSTED_HINT = ("if you trust its source, load it yourself with torch.load(..., weights_only=False) and "
                "re-save the weights with awp.checkpoint.save_checkpoint")


def safe_load(path: str | Path, map_location: str | torch.device = "cpu", *, what: str = "checkpoint",
              trusted_hint: str = TRUSTED_HINT) -> Any:
    """``torch.load(path, weights_only=True)``; every failure is one :class:`UserError` line, and a
    file that would need arbitrary unpickling is refused (never retried with weights_only=False)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a {what} file")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is empty")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        unsafe = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
        if not unsafe:
            raise UserError(f"cannot read {what} {path}: truncated or corrupt "
                            f"({lines[-1][:160] if lines else 'unpickling failed'})") from exc
        raise UserError(f"refusing to load {path}: it needs arbitrary unpickling, which can run code "
                        f"({unsafe[0][:160]}); {trusted_hint}") from exc
    except Exception as exc:  # torch raises RuntimeError, IndexError, EOFError... on torn files
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read {what} {path}: truncated or corrupt ({reason})") from exc


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, read safely; every failure is one :class:`UserError` line."""
    payload = safe_load(path, map_location)
    if not isinstance(payload, dict) or not all(k in payload for k in REQUIRED):
        raise UserError(f"{path} is not a checkpoint of this toolkit (no {'/'.join(REQUIRED)} keys); "
                        f"re-save foreign weights with awp.checkpoint.save_checkpoint (arch, arch_kwargs, config)")
    return payload


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming missing/unexpected keys."""
    state = strip_prefix(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise UserError(f"weights in {source} do not fit the architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, meta) from a checkpoint; meta is the dict without the weights."""
    payload = read_checkpoint(path, map_location)
    model = build_model(payload["arch"], **payload["arch_kwargs"])
    load_state_strict(model, payload["model"], str(path))
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "model"}
    meta["path"] = str(path)
    return model.to(map_location), meta


@dataclass
class Run:
    """A checkpoint made ready to measure: ``model`` (eval mode, on the requested device), ``meta``
    (the checkpoint without its weights, plus ``path`` and ``sha256``), ``config`` (its resolved
    training config), ``data`` (its splits, built on first use with the run's own ``val_size``,
    ``train_subset`` and ``split_seed``, so 'train' and 'val' are the images it trained on and held
    out) and ``attack`` (the attack of its per-epoch metrics, :func:`awp.metrics.metric_attack`)."""

    model: nn.Module
    meta: dict[str, Any]
    config: TrainConfig
    source: str = ""                    # what was loaded: a path or 'robustbench:NAME'
    data_dir: str | None = None
    download: bool = False
    _data: Any = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    @property
    def attack(self) -> AttackSpec:
        return metric_attack(self.config)

    @functools.cached_property
    def data(self) -> "DataSplits":
        if self._data is not None:
            return self._data
        from awp.data import build_dataset

        c = self.config
        return build_dataset(c.dataset, data_dir=self.data_dir or c.data_dir, download=self.download,
                             val_size=c.val_size, train_subset=c.train_subset, split_seed=c.split_seed)

    def split(self, name: str) -> "ImageSet":
        """The images of split ``name`` ('train', 'val', 'test'); a missing one is one line."""
        return self.data.split(name)


def _stored_config(meta: dict[str, Any]) -> TrainConfig:
    stored = dict(meta.get("config") or {}) if isinstance(meta.get("config"), dict) else {}
    # A checkpoint imported from foreign code may carry no config; its dataset key still says
    # which data it belongs to (the other settings are then the defaults).
    if "dataset" not in stored and meta.get("dataset"):
        stored["dataset"] = meta["dataset"]
    return config_from_dict(stored)


def load_run(spec: str | Path, device: str | torch.device = "cpu", *, data_dir: str | None = None,
             download: bool = False, data: "DataSplits | None" = None, dataset: str = "cifar10",
             threat: str = "Linf", model_dir: str | Path | None = None) -> Run:
    """The :class:`Run` of a checkpoint of ours (trained or imported) or of ``'robustbench:NAME'``.

    ``device``: where the model goes. ``data_dir`` / ``download``: where its data set lives
    (default: the run's own ``data_dir``). ``data``: splits already built for this run's data
    (e.g. shared by the checkpoints of one run). ``dataset``, ``threat`` and ``model_dir`` say
    which RobustBench entry a ``robustbench:`` name is (see :func:`awp.convert.load_robustbench`).
    """
    text = str(spec)
    if text.startswith(ROBUSTBENCH_PREFIX):
        from awp.convert import load_robustbench

        name = text[len(ROBUSTBENCH_PREFIX):]
        if not name:
            raise UsageError("robustbench:NAME needs a model name, e.g. robustbench:Wu2020Adversarial_extra")
        model, meta = load_robustbench(name, dataset=dataset, threat=threat, model_dir=model_dir)
        model = model.to(device)
    else:
        model, meta = load_checkpoint(spec, map_location=device)
        meta["sha256"] = sha256_file(spec)
    return Run(model=model, meta=meta, config=_stored_config(meta), source=text, data_dir=data_dir, download=download,
               _data=data)
