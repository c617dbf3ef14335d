"""The data sets of Wu, Xia & Wang (NeurIPS 2020): CIFAR-10, CIFAR-100 and SVHN through
torchvision (downloaded only when asked), and scikit-learn's offline 8x8 digits for the CPU demo;
:data:`DATASETS`, a registry of their specs, and :func:`build_dataset`, which loads one and splits
it into train / val / test / pool with a fixed split seed.

A spec (:class:`DatasetSpec`) carries the data set's constants and its own loader, plus, for a
data set read from files, the function that says which files it needs. Adding a data set is one
spec and one ``DATASETS.register`` call: :func:`build_dataset` has no branch on the name.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from awp.checks import check_int
from awp.errors import UserError, one_line, require
from awp.registry import Registry
from awp.data.images import DataSplits, ImageSet
from awp.data.unlabeled import load_unlabeled

# (folder torchvision reads, files it needs, how to describe them) for a data root
Files = Callable[[Path], "tuple[Path, list[Path], str]"]
# (spec, data_dir, download, split_seed) -> (the whole training set, the test set)
Loader = Callable[["DatasetSpec", "str | os.PathLike | None", bool, int], "tuple[ImageSet, ImageSet]"]
# (root, download, train) -> (uint8 images N x C x H x W, labels) of one split, through torchvision
Read = Callable[[Path, bool, bool], "tuple[np.ndarray, Any]"]


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is without reading its files, and how to read them."""

    label: str
    num_classes: int
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    default_val_size: int
    train_images: int  # the whole training set, before any hold-out
    load: Loader
    expected_files: Files | None = None  # None: nothing to read from a data folder


DATASETS: Registry[DatasetSpec] = Registry("data set")

DIGITS_TEST_SIZE = 597  # a third of the 1797 images, as a stratified hold-out

# Seed streams of the fixed split; each stage has its own stream so that, e.g., the validation
# images do not change when train_subset changes.
_STAGE_TEST, _STAGE_VAL, _STAGE_SUBSET = 0, 1, 2


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_dataset`, sorted."""
    return sorted(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """What a data set is without reading its files: label, classes, image shape, mean/std,
    default augmentation, default validation size and size of the whole training set."""
    return DATASETS.get(name)


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


def _load_digits(spec: DatasetSpec, data_dir: str | os.PathLike | None, download: bool,
                 split_seed: int) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's digits (shipped with it, offline), float32 in [0, 1], N x 1 x 8 x 8: a
    stratified third is the test set (digits has no official split), drawn from ``split_seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    everything = ImageSet(images.contiguous(), labels)
    test_idx, pool_idx = _stratified_take(everything.labels.numpy(), DIGITS_TEST_SIZE, split_seed, _STAGE_TEST)
    return everything.subset(pool_idx), everything.subset(test_idx)


def _cifar_files(class_name: str) -> Files:
    """The files torchvision's CIFAR10 / CIFAR100 reads, from its own class attributes, so that the
    list always matches what the installed torchvision checks."""
    def files(root: Path) -> tuple[Path, list[Path], str]:
        from torchvision import datasets

        cls = getattr(datasets, class_name)
        names = [entry[0] for entry in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        folder = root / cls.base_folder
        return folder, [folder / n for n in names], f"{cls.base_folder}/ with {', '.join(names)}"
    return files


def _svhn_files(root: Path) -> tuple[Path, list[Path], str]:
    """The two .mat files torchvision's SVHN reads (train and test; 'extra' is not used)."""
    from torchvision import datasets

    names = [datasets.SVHN.split_list[split][1] for split in ("train", "test")]
    return root, [root / n for n in names], ", ".join(names)


def _read_cifar(class_name: str) -> Read:
    def read(root: Path, download: bool, train: bool) -> tuple[np.ndarray, Any]:
        from torchvision import datasets

        split = getattr(datasets, class_name)(root=str(root), download=download, train=train)
        # torchvision hands CIFAR out as N x H x W x C; the models want N x C x H x W.
        return np.asarray(split.data).transpose(0, 3, 1, 2), split.targets
    return read


def _read_svhn(root: Path, download: bool, train: bool) -> tuple[np.ndarray, Any]:
    from torchvision import datasets

    # torchvision already maps SVHN's label 10 to digit 0 and hands out N x 3 x 32 x 32.
    split = datasets.SVHN(root=str(root), download=download, split="train" if train else "test")
    return split.data, split.labels


def _torchvision(read: Read) -> Loader:
    """A loader of a data set that torchvision reads from ``data_dir`` (downloading only when
    asked): its training and test sets as uint8 N x C x H x W, every failure one line."""
    def load(spec: DatasetSpec, data_dir: str | os.PathLike | None, download: bool,
             split_seed: int) -> tuple[ImageSet, ImageSet]:
        if data_dir is None:
            raise UserError(
                f"{spec.label} needs a data folder: set data_dir to the folder that holds (or will hold) its files, "
                "and pass --download (or download=True) on a machine with internet"
            )
        root = Path(data_dir).expanduser()
        folder, files, described = spec.expected_files(root)
        missing = [f for f in files if not f.is_file()]
        if missing and not download:
            raise UserError(
                f"{spec.label} not found in {root} (missing {missing[0].relative_to(root).as_posix()}): pass "
                f"--download (or download=True) on a machine with internet, or place {described} there"
            )

        def read_split(train: bool) -> ImageSet:
            try:
                images, labels = read(root, download, train)
            except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
                raise _read_error(spec.label, root, folder, described, download and bool(missing), exc) from exc
            return _uint8_set(images, labels)

        return read_split(True), read_split(False)
    return load


def _read_error(label: str, root: Path, folder: Path, described: str, downloading: bool,
                exc: BaseException) -> UserError:
    if downloading:
        return UserError(f"downloading {label} into {root} failed ({one_line(exc)}): check the internet "
                         f"connection, or place {described} there")
    # torchvision says "not found or corrupted" for both; the files exist (checked before), so a
    # checksum or unpickling failure is what is left.
    return UserError(f"{label} files in {folder} are corrupt or incomplete ({one_line(exc)}): delete them and pass "
                     f"--download (or download=True) on a machine with internet, or place fresh copies of {described}")


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
    spec = DATASETS.get(name)
    split_seed = check_int(split_seed, "split_seed", 0)
    val_size = spec.default_val_size if val_size is None else check_int(val_size, "val_size", 0)
    if train_subset is not None:
        train_subset = check_int(train_subset, "train_subset", 1)
    train_pool, test = spec.load(spec, data_dir, download, split_seed)
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


def _checked_unlabeled(path: str | os.PathLike, name: str, spec: DatasetSpec) -> ImageSet:
    """RST's extra data for data set ``name``: its images must have the data set's shape and its
    labels must be classes of it."""
    extra = load_unlabeled(path)
    if extra.image_shape != spec.image_shape:
        raise UserError(f"unlabeled data in {path} has images of shape {extra.image_shape} (C, H, W), "
                        f"but {name} needs {spec.image_shape}")
    if len(extra) and (int(extra.labels.min()) < 0 or int(extra.labels.max()) >= spec.num_classes):
        raise UserError(f"unlabeled data in {path} has labels outside 0..{spec.num_classes - 1} required by {name}")
    return extra


# Means and stds are fixed constants, not recomputed per run, so that a checkpoint's built-in
# normalization does not depend on which subset a run happened to train on: those of the
# official AWP scripts, digit for digit (AT_AWP/utils.py:17-18, train_cifar100.py:21-22,
# train_svhn.py:20-21). The digits values are the mean and std of all 1797 images / 16 (tests
# recompute them). Registered in name order, the order their errors list them.
DATASETS.register("cifar10", DatasetSpec(
    "CIFAR-10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), "crop-flip", 1000, 50000,
    load=_torchvision(_read_cifar("CIFAR10")), expected_files=_cifar_files("CIFAR10")),
    description="CIFAR-10 through torchvision: 50000 + 10000 32x32 colour images, 10 classes")
DATASETS.register("cifar100", DatasetSpec(
    "CIFAR-100", 100, (3, 32, 32), (0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
    (0.2673342858792401, 0.2564384629170883, 0.27615047132568404), "crop-flip", 1000, 50000,
    load=_torchvision(_read_cifar("CIFAR100")), expected_files=_cifar_files("CIFAR100")),
    description="CIFAR-100 through torchvision: 50000 + 10000 32x32 colour images, 100 classes")
DATASETS.register("digits", DatasetSpec(
    "digits", 10, (1, 8, 8), (0.3053,), (0.3760,), "none", 200, 1797 - DIGITS_TEST_SIZE, load=_load_digits),
    description="scikit-learn's offline 8x8 digits: 1797 images, a stratified third held out as test")
DATASETS.register("svhn", DatasetSpec(
    "SVHN", 10, (3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "none", 1000, 73257,
    load=_torchvision(_read_svhn), expected_files=_svhn_files),
    description="SVHN through torchvision: 73257 + 26032 32x32 house-number digits (no 'extra')")
