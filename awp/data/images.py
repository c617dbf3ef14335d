"""The in-memory containers of the data package: an image set (one tensor of images, one of
labels, batches drawn by index) and a data set's splits, and the names of the splits.

The robust generalization gap of Wu, Xia & Wang (NeurIPS 2020) is measured on the train and test
splits; ``val`` is the held-out part of the training set that Rice et al. (ICML 2020) select the
early-stopping epoch on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from awp.errors import UsageError, require
from awp.registry import Registry

Device = torch.device | str | None

SPLITS = Registry("split", {  # the splits every measurement names
    "train": "the labeled images a run trained on",
    "val": "images held out of the training set for early stopping (a fixed split seed)",
    "test": "the data set's test set",
})


def _as_index(indices: Any) -> torch.Tensor:
    """Indices (list, numpy array, tensor, or boolean mask) as a 1-D int64 tensor."""
    idx = torch.as_tensor(indices)
    if idx.dtype == torch.bool:
        idx = idx.nonzero().squeeze(1)
    return idx.reshape(-1).long()


@dataclass
class ImageSet:
    """Images and labels held in memory.

    ``images`` is N x C x H x W, either uint8 in [0, 255] (kept that way to save memory: CIFAR's
    training set is 150 MB as uint8, 600 MB as float) or float32 already in [0, 1]. ``labels``
    is N int64; for unlabeled data they are the pseudo-labels.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        require(self.images.dim() == 4, f"ImageSet images must be N x C x H x W, got shape {tuple(self.images.shape)}")
        require(
            self.images.dtype in (torch.uint8, torch.float32),
            f"ImageSet images must be uint8 or float32, got {self.images.dtype}",
        )
        require(self.labels.dim() == 1, f"ImageSet labels must be 1-D, got shape {tuple(self.labels.shape)}")
        require(
            len(self.labels) == len(self.images),
            f"ImageSet has {len(self.images)} images but {len(self.labels)} labels",
        )
        if self.labels.dtype != torch.int64:
            self.labels = self.labels.long()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, indices: Any) -> "ImageSet":
        """A new ImageSet with the given rows (a copy; the original is left alone)."""
        idx = _as_index(indices).to(self.images.device)
        return ImageSet(self.images[idx], self.labels.to(self.images.device)[idx])

    def to(self, device: Device) -> "ImageSet":
        """The same set on ``device`` (e.g. the whole training set on the GPU, airbench style)."""
        return ImageSet(self.images.to(device), self.labels.to(device))

    def batch(self, indices: Any, device: Device = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``indices`` as (x float32 in [0, 1], y int64) on ``device`` (default: where the data is).

        uint8 rows are gathered and moved as uint8 and converted on the target device, which
        moves a quarter of the bytes a float copy would.
        """
        idx = _as_index(indices).to(self.images.device)
        x = self.images[idx]
        y = self.labels[idx]
        if device is not None:
            x = x.to(device)
            y = y.to(device)
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).div_(255.0)
        return x, y

    def tensors(self, device: Device = None, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``limit`` rows (all when None) as (x float32 in [0, 1], y int64) on ``device``."""
        n = len(self) if limit is None else max(0, min(int(limit), len(self)))
        return self.batch(torch.arange(n), device)


@dataclass
class DataSplits:
    """A data set split for training, validation (early stopping), testing and RST.

    ``train`` holds the labeled images actually trained on (after the validation hold-out and
    ``train_subset``); ``val`` is held out from the training set with a fixed split seed (None
    when ``val_size=0``); ``pool`` holds the remaining training images, an unlabeled pool RST can
    pseudo-label (labels kept only for diagnostics; None when empty); ``unlabeled`` holds extra
    pseudo-labeled data loaded from a file (RST), else None. ``mean``/``std`` are per channel and
    belong inside the model (inputs stay in [0, 1]).
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    pool: ImageSet | None
    unlabeled: ImageSet | None

    def split(self, name: str) -> ImageSet:
        """The images of split ``name`` (one of :data:`SPLITS`); a missing one is a one-line error."""
        images = getattr(self, SPLITS.resolve(name))
        if images is None or len(images) == 0:
            others = " or ".join(repr(split) for split in SPLITS if split != name)
            raise UsageError(f"this run held out no validation images (val_size is 0): it has no {name!r} split; "
                             f"use {others}")
        return images
