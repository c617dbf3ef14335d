"""Reading weights that come from strangers: nothing runs, nothing is allocated before it is checked.

Every checkpoint, imported file, ``--weights`` file and RobustBench file goes through this module:

- nothing is unpickled but tensors and plain containers; a file that would need more is refused
  with a message saying why (:func:`safe_load`, ``torch.load(weights_only=True)``);
- nothing is unpacked before the archive is checked (:func:`check_archive`): ``torch.save``
  stores its records uncompressed, so a compressed record (a few MB that unpack to gigabytes),
  records declaring more bytes than the file holds, or more data than the size limit allows are
  refused before ``torch.load`` reads a byte of them;
- every floating weight must be finite, or the file is refused naming the tensor
  (:func:`check_finite`; ``allow_nonfinite=True``, the commands' ``--allow-nonfinite``, loads it
  and records the names under ``nonfinite_weights``);
- the model is first built on PyTorch's ``meta`` device, which allocates nothing
  (:func:`meta_skeleton`): every parameter and buffer shape is compared with the stored weights,
  and its size with a limit (:func:`check_state`), before a single real tensor is allocated, so an
  ``arch_kwargs`` asking for a 360 GB network is one line, not a dead machine. The limit counts
  parameters plus buffers: :data:`DEFAULT_MAX_PARAMS` (one billion, 3.7x WRN-70-16 and 2.7x the
  largest RobustBench CIFAR entry, WRN-94-16), or ``$AWP_MAX_PARAMS``, or ``max_params=``.

The layers above: :mod:`awp.checkpoint_file` (this toolkit's format), :mod:`awp.foreign` and
:mod:`awp.robustbench` (other people's), :mod:`awp.loaded` (a checkpoint ready to measure).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.overrides import TorchFunctionMode

from awp.errors import UsageError, UserError, one_line

DEFAULT_MAX_PARAMS = 1_000_000_000
MAX_PARAMS_ENV = "AWP_MAX_PARAMS"
NONFINITE_HINT = ("--allow-nonfinite (eval, landscape, measures, pseudo-label, import-checkpoint, export) loads it "
                  "anyway")


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
    check_archive(path, what)
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
        raise UserError(f"cannot read {what} {path}: truncated or corrupt ({one_line(exc, 160)})") from exc


# Bytes per element of the widest dtype (complex128), and room for the pickle and its metadata.
_MAX_ELEMENT_BYTES = 16
_METADATA_BYTES = 64 << 20


def check_archive(path: str | Path, what: str = "checkpoint", limit: int | None = None) -> None:
    """One line, before anything is unpacked, unless the file is a sane ``torch.save`` archive.

    ``torch.save`` writes a zip archive whose records are *stored* (never compressed), so a
    compressed record can only come from a crafted or re-packed file, and it may unpack to far
    more than the file's size; the records' declared sizes must fit in the file, and their sum
    within what the size limit (:func:`size_limit`, in elements) allows at 16 bytes an element.
    A file in PyTorch's legacy (non-zip) format holds nothing compressed and is left to torch.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise UserError(f"cannot read {what} {path}: truncated or corrupt ({one_line(exc, 160)})") from exc
    packed = next((r for r in records if r.compress_type != zipfile.ZIP_STORED), None)
    if packed is not None:
        raise UserError(f"refusing to load {path}: its record {packed.filename} is compressed "
                        f"({packed.compress_size:,} bytes that unpack to {packed.file_size:,}); torch.save never "
                        f"compresses, so the file "
                        f"was crafted or re-packed (re-save the weights with torch.save if you trust it)")
    size, declared = path.stat().st_size, sum(r.file_size for r in records)
    if declared > size:
        raise UserError(f"refusing to load {path}: its records declare {declared:,} bytes, more than the "
                        f"{size:,} bytes of the file (a crafted or damaged archive)")
    allowed = _MAX_ELEMENT_BYTES * size_limit(limit) + _METADATA_BYTES
    if declared > allowed:
        raise UserError(f"refusing to load {path}: it holds {declared:,} bytes of data, more than the size limit "
                        f"of {size_limit(limit):,} parameters and buffers allows (set {MAX_PARAMS_ENV} to raise it)")


FOREIGN_HINT = ("if you trust its source, convert it once: obj = torch.load(path, weights_only=False); "
                "torch.save({k: v for k, v in obj.get('state_dict', obj).items() if torch.is_tensor(v)}, "
                "'plain.pt'), then import plain.pt")


def read_foreign(path: str | Path) -> Any:
    """A file from another codebase (an official release, a RobustBench file, ``--weights``), read
    like our checkpoints (:func:`safe_load`) with a hint on turning a trusted file that needs
    unpickling into a plain state dict."""
    return safe_load(path, what="file", trusted_hint=FOREIGN_HINT)



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


def check_finite(state: dict[str, torch.Tensor], source: str, *, allow: bool = False,
                 hint: str = NONFINITE_HINT) -> list[str]:
    """The names of non-finite tensors (``allow``), or one line naming the first (default), ending
    with ``hint`` (what the reader can do about it)."""
    bad = nonfinite_tensors(state)
    if bad and not allow:
        more = f" (and {len(bad) - 1} more of {len(state)} tensors)" if len(bad) > 1 else ""
        raise UserError(f"refusing to load {source}: weight tensor {bad[0]} holds NaN or infinite values{more}; "
                        f"{hint}")
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



def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming missing/unexpected keys."""
    check_tensors(state, source)
    state = strip_prefix(state)
    parts = _fit_problems(model.state_dict(), state)
    if parts:
        raise UserError(f"weights in {source} do not fit the architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)

