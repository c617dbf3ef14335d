"""Checkpoints: a plain dict that ``torch.load(path, weights_only=True)`` reads, and runs rebuilt from them.

Keys: ``model`` (state dict without ``module.`` prefixes), ``arch``, ``arch_kwargs``, ``dataset``,
``method``, ``awp_gamma``, ``epoch``, ``metrics`` (train/test clean and robust accuracy with the
attack that measured them), ``config``; ``last.pt`` adds what resuming needs.

Checkpoints come from strangers, so loading trusts nothing in them:

- nothing is unpickled but tensors and plain containers; a file that would need more is refused
  with a message saying why (:func:`safe_load`);
- every floating weight must be finite, or the file is refused naming the tensor
  (:func:`check_finite`; ``allow_nonfinite=True``, the commands' ``--allow-nonfinite``, loads it
  and records the names under ``nonfinite_weights``);
- the model is first built on PyTorch's ``meta`` device, which allocates nothing
  (:func:`meta_skeleton`): every parameter and buffer shape is compared with the stored weights,
  and its size with a limit (:func:`check_state`), before a single real tensor is allocated, so an
  ``arch_kwargs`` asking for a 360 GB network is one line, not a dead machine. The limit counts
  parameters plus buffers: :data:`DEFAULT_MAX_PARAMS` (one billion, 3.7x WRN-70-16 and 2.7x the
  largest RobustBench CIFAR entry, WRN-94-16), or ``$AWP_MAX_PARAMS``, or ``max_params=``.

:func:`load_run` is the one place that turns a checkpoint (ours, an imported one, or
``robustbench:NAME``) into what every measurement needs: the model, its resolved training config,
its data splits and the attack that measured its per-epoch metrics.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.overrides import TorchFunctionMode

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
DEFAULT_MAX_PARAMS = 1_000_000_000
MAX_PARAMS_ENV = "AWP_MAX_PARAMS"
NONFINITE_HINT = "--allow-nonfinite (eval, landscape, pseudo-label, import-checkpoint, export) loads it anyway"


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


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    allow_nonfinite: bool = False) -> dict[str, Any]:
    """The checkpoint dict, read safely; every failure is one :class:`UserError` line.

    Weights holding NaN or infinity are refused (:func:`check_finite`); with ``allow_nonfinite``
    they are loaded and their names listed under the payload's ``nonfinite_weights``.
    """
    payload = safe_load(path, map_location)
    if not isinstance(payload, dict) or not all(k in payload for k in REQUIRED):
        raise UserError(f"{path} is not a checkpoint of this toolkit (no {'/'.join(REQUIRED)} keys); "
                        f"re-save foreign weights with awp.checkpoint.save_checkpoint (arch, arch_kwargs, config)")
    if not isinstance(payload["arch"], str) or not isinstance(payload["arch_kwargs"], dict):
        raise UserError(f"{path}: 'arch' must be a name and 'arch_kwargs' a dict, got "
                        f"{type(payload['arch']).__name__} and {type(payload['arch_kwargs']).__name__}")
    check_tensors(payload["model"], str(path))
    bad = check_finite(payload["model"], str(path), allow=allow_nonfinite)
    if bad:
        payload["nonfinite_weights"] = bad
    return payload


# --------------------------------------------------------------------------------------------
# Checks before anything is allocated


def size_limit(limit: int | None = None) -> int:
    """The size limit (parameters plus buffers): ``limit``, else ``$AWP_MAX_PARAMS``, else
    :data:`DEFAULT_MAX_PARAMS`; ``2e9`` style values are accepted."""
    where = "max_params"
    if limit is None:
        text = os.environ.get(MAX_PARAMS_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_PARAMS
        where = f"${MAX_PARAMS_ENV}"
        try:
            limit = float(text)
        except ValueError:
            raise UsageError(f"{where}={text!r} is not a number of parameters") from None
    if not (isinstance(limit, (int, float)) and limit >= 1 and float(limit).is_integer()):
        raise UsageError(f"{where} must be a whole number >= 1, got {limit!r}")
    return int(limit)


def check_tensors(state: Any, source: str) -> None:
    """One line unless ``state`` is a dict of tensors (what a state dict is)."""
    if not isinstance(state, dict):
        raise UserError(f"the weights in {source} are a {type(state).__name__}, not a state dict")
    other = next((k for k, v in state.items() if not torch.is_tensor(v)), None)
    if other is not None:
        raise UserError(f"the weights in {source} hold a {type(state[other]).__name__} under {other!r}, "
                        f"not a tensor")


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite, reading each stored value once: a tensor whose
    views overlap (``expand``: stride 0) is checked on the memory it spans, never materialized."""
    if t.numel() == 0:
        return True
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    view = t.as_strided((span,), (1,), t.storage_offset()) if span < t.numel() else t
    return bool(torch.isfinite(view).all())


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating (or complex) tensors of ``state`` holding NaN or infinity, in order."""
    return [name for name, t in state.items()
            if torch.is_tensor(t) and (t.is_floating_point() or t.is_complex()) and not _all_finite(t)]


def check_finite(state: dict[str, torch.Tensor], source: str, *, allow: bool = False) -> list[str]:
    """The names of non-finite tensors (``allow``), or one line naming the first (default)."""
    bad = nonfinite_tensors(state)
    if bad and not allow:
        more = f" (and {len(bad) - 1} more of {len(state)} tensors)" if len(bad) > 1 else ""
        raise UserError(f"refusing to load {source}: weight tensor {bad[0]} holds NaN or infinite values{more}; "
                        f"{NONFINITE_HINT}")
    return bad


def nonfinite_warning(source: str, names: list[str]) -> str:
    """The line every command prints when it went on with non-finite weights."""
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (f"awp: warning: {source} has non-finite weights in {len(names)} tensor(s) ({shown}), loaded "
            f"because of --allow-nonfinite: every number computed from it is suspect")


_RANDOM_FILLS = frozenset(getattr(torch.Tensor, name) for name in (
    "normal_", "uniform_", "random_", "bernoulli_", "exponential_", "log_normal_", "cauchy_", "geometric_"))


class _SkipMetaInit(TorchFunctionMode):
    """Random initialization of a meta tensor has nothing to fill: skip it (PyTorch would run
    its Python decompositions, which import torch._dynamo: seconds and ~180 MB for nothing)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and first.is_meta and (
                func in _RANDOM_FILLS or getattr(func, "__module__", None) == "torch.nn.init"):
            return first
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _parameter_budget(limit: int, source: str) -> Iterator[None]:
    """Stop a build that registers more than ``limit`` parameters (a structure the stored
    weights cannot fill: asking for depth 10^6 would otherwise cost minutes and gigabytes)."""
    count = itertools.count(1)

    def hook(module: nn.Module, name: str, param: Any) -> None:
        if param is not None and next(count) > limit:
            raise UserError(f"weights in {source} do not fit the architecture: it has more than {limit} "
                            f"parameter tensors (stopped at a {type(module).__name__} {name} "
                            f"{list(param.shape)}), more than the checkpoint holds")

    handle = register_module_parameter_registration_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def meta_skeleton(build: Callable[[], nn.Module], *, source: str = "the checkpoint",
                  max_tensors: int | None = None) -> nn.Module:
    """``build()`` on the meta device: every parameter and buffer with its shape and dtype, no
    memory, no initialization. ``max_tensors`` stops a build that registers more parameters."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.device("meta"))
        stack.enter_context(_SkipMetaInit())
        if max_tensors is not None:
            stack.enter_context(_parameter_budget(max_tensors, source))
        return build()


def _fit_problems(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if shapes:
        first = shapes[0]
        parts.append(f"{len(shapes)} wrong shape ({first}: stored {list(state[first].shape)}, the architecture's "
                     f"{list(own[first].shape)}{', ...' if len(shapes) > 1 else ''})")
    return parts


def check_size(model: nn.Module, source: str, limit: int | None = None) -> int:
    """The number of parameter and buffer elements of ``model`` (meta or real); one line naming
    the first tensor past the limit (:func:`size_limit`) when there are more."""
    limit = size_limit(limit)
    tensors = list(itertools.chain(model.named_parameters(), model.named_buffers()))
    total = sum(t.numel() for _, t in tensors)
    if total > limit:
        running = itertools.accumulate(t.numel() for _, t in tensors)
        name, t = next(item for item, upto in zip(tensors, running) if upto > limit)
        raise UserError(f"refusing to build the model of {source}: it has {total:,} parameters and buffers, over "
                        f"the limit of {limit:,} (set {MAX_PARAMS_ENV} to raise it); the first tensor past the "
                        f"limit is {name} {list(t.shape)}")
    return total


def check_state(model: nn.Module, state: dict[str, torch.Tensor], source: str, *,
                max_params: int | None = None) -> None:
    """One line unless ``state`` fits ``model`` (a :func:`meta_skeleton` or a real model) name for
    name and shape, and the model is within the size limit; names the first offending tensor."""
    check_tensors(state, source)
    parts = _fit_problems(model.state_dict(), strip_prefix(state))
    if parts:
        raise UserError(f"weights in {source} do not fit the architecture: {'; '.join(parts)}")
    check_size(model, source, max_params)


# --------------------------------------------------------------------------------------------
# Building


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming missing/unexpected keys."""
    check_tensors(state, source)
    state = strip_prefix(state)
    parts = _fit_problems(model.state_dict(), state)
    if parts:
        raise UserError(f"weights in {source} do not fit the architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


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
             threat: str = "Linf", model_dir: str | Path | None = None, allow_nonfinite: bool = False,
             max_params: int | None = None) -> Run:
    """The :class:`Run` of a checkpoint of ours (trained or imported) or of ``'robustbench:NAME'``.

    ``device``: where the model goes. ``data_dir`` / ``download``: where its data set lives
    (default: the run's own ``data_dir``). ``data``: splits already built for this run's data
    (e.g. shared by the checkpoints of one run). ``dataset``, ``threat`` and ``model_dir`` say
    which RobustBench entry a ``robustbench:`` name is (see :func:`awp.convert.load_robustbench`).
    The weights are checked before anything is allocated (finite unless ``allow_nonfinite``, which
    lists them in ``meta['nonfinite_weights']``; shapes; size within ``max_params``).
    """
    checks = dict(allow_nonfinite=allow_nonfinite, max_params=max_params)
    text = str(spec)
    if text.startswith(ROBUSTBENCH_PREFIX):
        from awp.convert import load_robustbench

        name = text[len(ROBUSTBENCH_PREFIX):]
        if not name:
            raise UsageError("robustbench:NAME needs a model name, e.g. robustbench:Wu2020Adversarial_extra")
        model, meta = load_robustbench(name, dataset=dataset, threat=threat, model_dir=model_dir, **checks)
        model = model.to(device)
    else:
        model, meta = load_checkpoint(spec, map_location=device, **checks)
        meta["sha256"] = sha256_file(spec)
    return Run(model=model, meta=meta, config=_stored_config(meta), source=text, data_dir=data_dir, download=download,
               _data=data)
