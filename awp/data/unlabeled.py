"""RST's unlabeled data (Carmon et al. 2019): Carmon et al.'s pickle read through a restricted
unpickler, our ``.npz``, and pseudo-labels from a standard model."""
from __future__ import annotations

import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from awp.checks import check_int
from awp.errors import UserError, one_line
from awp.io import atomic_write_bytes
from awp.modes import model_mode
from awp.data.images import Device, ImageSet

# What a pickle of numpy arrays in plain containers needs, and nothing more: array and dtype
# reconstruction (numpy 1.x names under numpy.core, 2.x under numpy._core; _frombuffer is
# protocol 5's form), numpy scalars, and _codecs.encode, which protocol 2 uses for bytes.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
} | {
    ("builtins", name)
    for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
                 "bytearray")
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and plain containers, and refuses everything else.

    A pickle can call any importable function while loading (``os.system`` included), so a file
    from the internet is read through this instead of ``pickle.load``.
    """

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")  # latin1: Python 2 pickles of numpy arrays
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise UserError(
                f"refusing to unpickle {module}.{name} from {self._source}: "
                "only numpy arrays and plain containers are allowed"
            )
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            # numpy 2 renamed numpy.core to numpy._core; the old path only warns and forwards.
            module = "numpy._core." + module[len("numpy.core.") :]
        return getattr(importlib.import_module(module), name)


def _images_to_tensor(images: np.ndarray, source: str) -> torch.Tensor:
    """Array from a file -> N x C x H x W tensor, uint8 or float32 in [0, 1]."""
    if images.ndim == 3:  # N x H x W grayscale
        images = images[:, None]
    if images.ndim != 4:
        raise UserError(f"images in {source} must be N x H x W x C or N x C x H x W, got shape {images.shape}")
    # Channels-last (Carmon et al.'s N x 32 x 32 x 3) unless the second axis already looks like channels.
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images))
    if np.issubdtype(images.dtype, np.floating):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.size and (not np.isfinite(images).all() or images.min() < 0.0 or images.max() > 1.0):
            raise UserError(f"float images in {source} must lie in [0, 1]")
        return torch.from_numpy(images)
    raise UserError(f"images in {source} must be uint8 or float in [0, 1], got {images.dtype}")


def _labels_to_tensor(labels: Any, n: int, source: str) -> torch.Tensor:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels in {source} must be {n} integers, got shape {labels.shape} of {labels.dtype}")
    return torch.from_numpy(labels.astype(np.int64))


def load_unlabeled(path: str | os.PathLike) -> ImageSet:
    """Read pseudo-labeled extra data for RST.

    Two formats, told apart by content: our ``.npz`` (``images``: N x H x W x C or N x C x H x W,
    uint8 or float in [0, 1]; ``labels``), read with ``allow_pickle=False``; or Carmon et al.'s
    pickle (a dict with ``data``: uint8 N x 32 x 32 x 3 and ``extrapolated_targets``), read
    through an unpickler that admits only numpy arrays and plain containers.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise UserError(f"unlabeled data file not found: {source}")
    with open(path, "rb") as handle:
        is_zip = handle.read(4) == b"PK\x03\x04"  # an .npz is a zip archive
        handle.seek(0)
        if is_zip:
            try:
                with np.load(handle, allow_pickle=False) as archive:
                    keys = set(archive.files)
                    if not {"images", "labels"} <= keys:
                        raise UserError(f"{source} must hold arrays 'images' and 'labels', found {sorted(keys)}")
                    images, labels = archive["images"], archive["labels"]
            except UserError:
                raise
            except Exception as exc:  # zip, npy header or pickle-refusal errors of a bad file
                raise UserError(f"cannot read {source} as .npz: {one_line(exc)}") from exc
        else:
            try:
                content = _NumpyOnlyUnpickler(handle, source).load()
            except UserError:
                raise
            except Exception as exc:
                raise UserError(f"cannot read {source}: neither an .npz nor a readable pickle "
                                f"({one_line(exc)})") from exc
            if not isinstance(content, dict) or not {"data", "extrapolated_targets"} <= set(content):
                found = sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__
                raise UserError(f"{source} must be a dict with 'data' and 'extrapolated_targets', found {found}")
            images, labels = np.asarray(content["data"]), content["extrapolated_targets"]
    tensor = _images_to_tensor(np.asarray(images), source)
    return ImageSet(tensor, _labels_to_tensor(labels, len(tensor), source))


def save_unlabeled_npz(path: str | os.PathLike, images: ImageSet) -> None:
    """Write ``images`` (N x C x H x W, uint8 kept as uint8, else float32) and labels to an .npz, atomically."""
    array = images.images.detach().cpu()
    array = array.numpy() if array.dtype == torch.uint8 else array.to(torch.float32).numpy()
    buffer = io.BytesIO()
    np.savez(buffer, images=array, labels=images.labels.detach().cpu().numpy().astype(np.int64))
    atomic_write_bytes(path, buffer.getvalue())


@torch.no_grad()
def pseudo_label(model: torch.nn.Module, images: ImageSet, *, batch_size: int = 512, device: Device = None) -> ImageSet:
    """Label ``images`` with ``model``'s argmax prediction (RST's pseudo-labels).

    The model runs in eval mode (BatchNorm uses its running statistics, so labels do not depend
    on batch composition) and every module's train/eval flag is restored afterwards. ``device``
    defaults to the device of the model's parameters. Returns a new ImageSet sharing the images.
    """
    check_int(batch_size, "batch_size", 1)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    labels = []
    with model_mode(model, "eval"):
        for start in range(0, len(images), batch_size):
            x, _ = images.batch(torch.arange(start, min(start + batch_size, len(images))), device)
            labels.append(model(x).argmax(dim=1).cpu())
    label_tensor = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    return ImageSet(images.images, label_tensor.long())
