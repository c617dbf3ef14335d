"""The data sets: CIFAR-10, CIFAR-100 and SVHN through torchvision (downloaded only when asked)
and scikit-learn's offline 8x8 digits; their constants, and :func:`build_dataset`, which loads one
and splits it into train / val / test / pool with a fixed split seed."""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from awp.errors import UserError, require
from awp.data.images import DataSplits, ImageSet, _check_int, _one_line
from awp.data.unlabeled import load_unlabeled

@dataclass(frozen=True)
class _Spec:
    label: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    default_val_size: int
    train_images: int  # the whole training set, before any hold-out


# Means and stds are fixed constants, not recomputed per run, so that a checkpoint's built-in
# normalization does not depend on which subset a run happened to train on: those of the
# official AWP scripts, digit for digit (AT_AWP/utils.py:17-18, train_cifar100.py:21-22,
# train_svhn.py:20-21). The digits values are the mean and std of all 1797 images / 16 (tests
# recompute them).
_SPECS: dict[str, _Spec] = {
    "cifar10": _Spec("CIFAR-10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616),
                     "crop-flip", 1000, 50000),
    "cifar100": _Spec("CIFAR-100", 100, (3, 32, 32), (0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
                      (0.2673342858792401, 0.2564384629170883, 0.27615047132568404), "crop-flip", 1000, 50000),
    "digits": _Spec("digits", 10, (1, 8, 8), (0.3053,), (0.3760,), "none", 200, 1797 - 597),
    "svhn": _Spec("SVHN", 10, (3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "none", 1000, 73257),
}

DIGITS_TEST_SIZE = 597  # a third of the 1797 images, as a stratified hold-out

# Seed streams of the fixed split; each stage has its own stream so that, e.g., the validation
# images do not change when train_subset changes.
_STAGE_TEST, _STAGE_VAL, _STAGE_SUBSET = 0, 1, 2


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`."""
    return sorted(_SPECS)


def dataset_spec(name: str) -> _Spec:
    """What a data set is without reading its files: label, classes, image shape, mean/std,
    default augmentation, default validation size and size of the whole training set."""
    require(name in _SPECS, f"unknown data set {name!r}; choose one of: {', '.join(list_datasets())}")
    return _SPECS[name]






def _stratified_take(labels: np.ndarray, n_take: int, seed: int, stage: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions 0..N-1 into (take, rest), ``n_take`` taken with class proportions kept.

    Per-class quotas use the largest-remainder rule, so the counts add up to ``n_take`` exactly;
    which images a class contributes is a seeded permutation. Both index arrays are sorted.
    """
    n = len(labels)
    rng = np.random.default_rng([seed, stage])
    classes, counts = np.unique(labels, return_counts=True)
    quota = n_take * counts / n
    share = np.floor(quota).astype(np.int64)
    leftover = n_take - int(share.sum())
    share[np.argsort(-(quota - share), kind="stable")[:leftover]] += 1
    take = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, share)]
    take_idx = np.sort(np.concatenate(take)) if take else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[take_idx] = False
    return take_idx, np.flatnonzero(mask)


def _load_digits() -> ImageSet:
    """scikit-learn's digits (shipped with it, offline) as one float32 set in [0, 1], N x 1 x 8 x 8."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return ImageSet(images.contiguous(), labels)


def _expected_files(name: str, root: Path) -> tuple[Path, list[Path], str]:
    """(folder torchvision reads, files it needs, how to describe them) for a torchvision set.

    Read from torchvision's own class attributes so that the list always matches what the
    installed torchvision checks.
    """
    from torchvision import datasets

    if name == "svhn":
        names = [datasets.SVHN.split_list[split][1] for split in ("train", "test")]
        return root, [root / n for n in names], ", ".join(names)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    names = [entry[0] for entry in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    folder = root / cls.base_folder
    return folder, [folder / n for n in names], f"{cls.base_folder}/ with {', '.join(names)}"


def _load_torchvision(name: str, data_dir: str | os.PathLike | None, download: bool) -> tuple[ImageSet, ImageSet]:
    """Training and test sets of CIFAR-10/100 or SVHN via torchvision, as uint8 N x 3 x 32 x 32."""
    from torchvision import datasets

    label = _SPECS[name].label
    if data_dir is None:
        raise UserError(
            f"{label} needs a data folder: set data_dir to the folder that holds (or will hold) its files, "
            "and pass --download (or download=True) on a machine with internet"
        )
    root = Path(data_dir).expanduser()
    folder, files, described = _expected_files(name, root)
    missing = [f for f in files if not f.is_file()]
    if missing and not download:
        raise UserError(
            f"{label} not found in {root} (missing {missing[0].relative_to(root).as_posix()}): pass --download "
            f"(or download=True) on a machine with internet, or place {described} there"
        )

    def read(**split: Any) -> Any:
        try:
            if name == "svhn":
                return datasets.SVHN(root=str(root), download=download, **split)
            cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
            return cls(root=str(root), download=download, **split)
        except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            if download and missing:
                raise UserError(
                    f"downloading {label} into {root} failed ({_one_line(exc)}): check the internet "
                    f"connection, or place {described} there"
                ) from exc
            # torchvision says "not found or corrupted" for both; the files exist (checked above),
            # so a checksum or unpickling failure is what is left.
            raise UserError(
                f"{label} files in {folder} are corrupt or incomplete ({_one_line(exc)}): delete them and pass "
                f"--download (or download=True) on a machine with internet, or place fresh copies of {described}"
            ) from exc

    if name == "svhn":
        # torchvision already maps SVHN's label 10 to digit 0 and hands out N x 3 x 32 x 32.
        train, test = read(split="train"), read(split="test")
        return _uint8_set(train.data, train.labels), _uint8_set(test.data, test.labels)
    # torchvision hands CIFAR out as N x H x W x C; the models want N x C x H x W.
    train, test = read(train=True), read(train=False)
    return (
        _uint8_set(np.asarray(train.data).transpose(0, 3, 1, 2), train.targets),
        _uint8_set(np.asarray(test.data).transpose(0, 3, 1, 2), test.targets),
    )


def _uint8_set(images: np.ndarray, labels: Any) -> ImageSet:
    return ImageSet(
        torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)),
        torch.as_tensor(np.asarray(labels), dtype=torch.int64),
    )


def build_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    val_size: int | None = None,
    train_subset: int | None = None,
    split_seed: int = 0,
    unlabeled: str | os.PathLike | None = None,
) -> DataSplits:
    """Load a data set and split it into train / val / test / pool (+ unlabeled for RST).

    ``name``: one of :func:`list_datasets`. ``data_dir``: the torchvision root (it holds
    ``cifar-10-batches-py/``, ``cifar-100-python/`` or SVHN's ``train_32x32.mat`` and
    ``test_32x32.mat``); not needed for digits. ``download``: let torchvision fetch missing files.
    ``val_size``: images held out of the training set for early stopping (default 200 for
    digits, 1000 otherwise; 0 for none). ``train_subset``: keep only this many of the remaining
    training images (stratified); the rest become ``pool``. ``split_seed``: the only seed the
    split depends on (digits' test split, val, subset), independent of the run seed.
    ``unlabeled``: a file for :func:`load_unlabeled` (RST's pseudo-labeled extra data).
    """
    require(
        isinstance(name, str) and name in _SPECS,
        f"unknown data set {name!r}; choose one of: {', '.join(list_datasets())}",
    )
    spec = _SPECS[name]
    split_seed = _check_int(split_seed, "split_seed", 0)
    val_size = spec.default_val_size if val_size is None else _check_int(val_size, "val_size", 0)
    if train_subset is not None:
        train_subset = _check_int(train_subset, "train_subset", 1)

    if name == "digits":
        everything = _load_digits()
        test_idx, pool_idx = _stratified_take(everything.labels.numpy(), DIGITS_TEST_SIZE, split_seed, _STAGE_TEST)
        train_pool, test = everything.subset(pool_idx), everything.subset(test_idx)
    else:
        train_pool, test = _load_torchvision(name, data_dir, download)

    train_idx, val_idx, left_idx = _split_indices(train_pool.labels.numpy(), name, val_size, train_subset,
                                                  split_seed)
    splits = DataSplits(name=name, num_classes=spec.num_classes, image_shape=spec.image_shape, mean=spec.mean,
                        std=spec.std, augment=spec.augment, train=train_pool.subset(train_idx),
                        val=train_pool.subset(val_idx) if len(val_idx) else None, test=test,
                        pool=train_pool.subset(left_idx) if len(left_idx) else None, unlabeled=None)
    if unlabeled is not None:
        splits.unlabeled = _checked_unlabeled(unlabeled, name, spec)
    return splits


def _split_indices(labels: np.ndarray, name: str, val_size: int, train_subset: int | None,
                   split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, left-over pool) positions of the training pool: a stratified validation
    hold-out, then a stratified ``train_subset`` of the rest, each from its own seed stream."""
    n_pool = len(labels)
    require(val_size < n_pool, f"val_size must be below the {n_pool} training images of {name}, got {val_size}")
    val_idx, rest_idx = _stratified_take(labels, val_size, split_seed, _STAGE_VAL)
    if train_subset is None:
        return rest_idx, val_idx, rest_idx[:0]
    require(
        train_subset <= len(rest_idx),
        f"train_subset must be at most the {len(rest_idx)} training images left after val_size={val_size}, "
        f"got {train_subset}",
    )
    take, left = _stratified_take(labels[rest_idx], train_subset, split_seed, _STAGE_SUBSET)
    return rest_idx[take], val_idx, rest_idx[left]


def _checked_unlabeled(path: str | os.PathLike, name: str, spec: _Spec) -> ImageSet:
    """RST's extra data for data set ``name``: its images must have the data set's shape and its
    labels must be classes of it."""
    extra = load_unlabeled(path)
    if extra.image_shape != spec.image_shape:
        raise UserError(f"unlabeled data in {path} has images of shape {extra.image_shape} (C, H, W), "
                        f"but {name} needs {spec.image_shape}")
    if len(extra) and (int(extra.labels.min()) < 0 or int(extra.labels.max()) >= spec.num_classes):
        raise UserError(f"unlabeled data in {path} has labels outside 0..{spec.num_classes - 1} required by {name}")
    return extra
