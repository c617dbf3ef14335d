"""In-memory data sets, deterministic batching and augmentation, and RST's pseudo-labeled data.

Data sets used by Wu, Xia & Wang, "Adversarial Weight Perturbation Helps Robust Generalization"
(NeurIPS 2020): CIFAR-10, CIFAR-100 and SVHN (through torchvision, downloaded only when asked),
plus scikit-learn's offline 8x8 digits for the CPU demo (1797 images, shipped with scikit-learn).

Every split lives in memory as one tensor (uint8 for the photo data sets, as the original RST
code keeps its 500K TinyImages; float32 in [0, 1] for digits). Batches are drawn by index and
augmented on the batch, vectorized, on whatever device the batch lives on (airbench style), so
there are no DataLoader workers. Order and augmentation come from a generator seeded by
(seed, epoch) only, so a resumed run sees exactly the batches an uninterrupted run would have,
and with ``world_size > 1`` the ranks' shares of a global batch add up to the single-process
batch, augmentation included.

RST (Carmon et al. 2019, "Unlabeled Data Improves Adversarial Robustness"):
:func:`iterate_mixed_batches` draws each batch as labeled images from a per-epoch
permutation plus a fraction ``unsup_fraction`` of pseudo-labeled images drawn with replacement;
:func:`pseudo_label` labels an unlabeled pool with a standard model; :func:`load_unlabeled`
reads Carmon et al.'s pickle (through a restricted unpickler) or our ``.npz``.

Validation hold-out: Rice et al. ("Overfitting in adversarially robust deep learning") keep
1000 training images aside for early stopping; the split is drawn with a fixed ``split_seed``
independent of the run seed, so every run of a comparison selects on the same images.
"""
from __future__ import annotations

import importlib
import io
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from awp.augment import Augmentation, augment_batch
from awp.errors import UsageError, UserError, require
from awp.io import atomic_write_bytes, check_output_file

__all__ = [
    "SPLITS",
    "DataSplits",
    "ImageSet",
    "augment_batch",
    "build_dataset",
    "dataset_spec",
    "iterate_batches",
    "iterate_mixed_batches",
    "list_datasets",
    "load_unlabeled",
    "num_batches",
    "pseudo_label",
    "save_unlabeled_npz",
]

Device = torch.device | str | None

SPLITS = ("train", "val", "test")  # the splits every measurement names


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


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
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r}; choose from: {', '.join(SPLITS)}")
        images = getattr(self, name)
        if images is None or len(images) == 0:
            raise UsageError(f"this run held out no validation images (val_size is 0): it has no {name!r} split; use 'train' or 'test'")
        return images


# --------------------------------------------------------------------------------------------
# Data set registry
# --------------------------------------------------------------------------------------------


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_int(value: Any, name: str, minimum: int) -> int:
    require(
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum,
        f"{name} must be an integer >= {minimum}, got {value!r}",
    )
    return int(value)


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

    n_pool = len(train_pool)
    require(val_size < n_pool, f"val_size must be below the {n_pool} training images of {name}, got {val_size}")
    labels = train_pool.labels.numpy()
    val_idx, rest_idx = _stratified_take(labels, val_size, split_seed, _STAGE_VAL)
    if train_subset is None:
        train_idx, left_idx = rest_idx, rest_idx[:0]
    else:
        require(
            train_subset <= len(rest_idx),
            f"train_subset must be at most the {len(rest_idx)} training images left after val_size={val_size}, "
            f"got {train_subset}",
        )
        take, left = _stratified_take(labels[rest_idx], train_subset, split_seed, _STAGE_SUBSET)
        train_idx, left_idx = rest_idx[take], rest_idx[left]

    splits = DataSplits(
        name=name,
        num_classes=spec.num_classes,
        image_shape=spec.image_shape,
        mean=spec.mean,
        std=spec.std,
        augment=spec.augment,
        train=train_pool.subset(train_idx),
        val=train_pool.subset(val_idx) if len(val_idx) else None,
        test=test,
        pool=train_pool.subset(left_idx) if len(left_idx) else None,
        unlabeled=None,
    )
    if unlabeled is not None:
        extra = load_unlabeled(unlabeled)
        if extra.image_shape != spec.image_shape:
            raise UserError(
                f"unlabeled data in {unlabeled} has images of shape {extra.image_shape} (C, H, W), "
                f"but {name} needs {spec.image_shape}"
            )
        if len(extra) and (int(extra.labels.min()) < 0 or int(extra.labels.max()) >= spec.num_classes):
            raise UserError(
                f"unlabeled data in {unlabeled} has labels outside 0..{spec.num_classes - 1} required by {name}"
            )
        splits.unlabeled = extra
    return splits


# --------------------------------------------------------------------------------------------
# Augmentation and batching
# --------------------------------------------------------------------------------------------


def _generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator behind one epoch's order and augmentation: a function of (seed, epoch) only."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed((int(seed) * 1_000_003 + int(epoch)) % (1 << 63))
    return generator


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch over ``n`` items."""
    return n // batch_size if drop_last else -(-n // batch_size)


def _check_shard(batch_size: int, rank: int, world_size: int) -> None:
    _check_int(batch_size, "batch_size", 1)
    _check_int(world_size, "world_size", 1)
    require(0 <= rank < world_size, f"rank must be in 0..{world_size - 1}, got {rank}")


def iterate_batches(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    device: Device = None,
    augment: str | Augmentation = "none",
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) batches of one epoch; order and augmentation depend only on (seed, epoch).

    With ``world_size > 1`` rank ``r`` gets ``perm[b*B:(b+1)*B][r::world_size]`` of global batch
    ``b`` with the augmentation drawn for the whole global batch, so the ranks' shares put
    together are exactly the single-process batch. Every rank yields the same number of
    batches (a DDP requirement); the last one may be smaller, and even empty on some ranks when
    it holds fewer than ``world_size`` images (use ``drop_last=True`` under DDP to avoid that).
    """
    _check_shard(batch_size, rank, world_size)
    augment = Augmentation.of(augment)
    n = len(data)
    generator = _generator(seed, epoch)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for b in range(num_batches(n, batch_size, drop_last)):
        global_idx = order[b * batch_size : (b + 1) * batch_size]
        x, y = data.batch(global_idx[rank::world_size], device)
        if augment.names:
            # Draw for the global batch even when holding a share of it: keeps ranks in step.
            params = augment.draw(len(global_idx), generator)
            x = augment.apply(x, {k: p[rank::world_size] for k, p in params.items()})
        yield x, y


def iterate_mixed_batches(
    labeled: ImageSet,
    unlabeled: ImageSet,
    batch_size: int,
    *,
    unsup_fraction: float = 0.5,
    seed: int = 0,
    epoch: int = 0,
    device: Device = None,
    augment: str | Augmentation = "none",
    rank: int = 0,
    world_size: int = 1,
    batches: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """RST batches (Carmon et al. 2019): yield (x, y, is_unlabeled) for one epoch.

    Each global batch holds ``round(batch_size * unsup_fraction)`` unlabeled images drawn with
    replacement and the rest labeled images taken in order from a per-epoch permutation
    (without replacement; repeated from its start when the epoch needs more than one pass).
    An epoch has ``batches`` batches; None: ``ceil(len(labeled) / (batch_size * (1 - unsup_fraction)))``,
    so that every labeled image is seen once (Carmon et al. define it as ``ceil(50000 / batch_size)``
    batches, which :func:`awp.schedule.iterations_per_epoch` passes for the recipes). Within a global batch the labeled images come first;
    ranks take positions ``[rank::world_size]`` of it, as in :func:`iterate_batches`. Unlike
    Carmon et al.'s sampler the batch is not shuffled internally: the loss and BatchNorm do not
    depend on the order within a batch.
    """
    _check_shard(batch_size, rank, world_size)
    augment = Augmentation.of(augment)
    require(0.0 <= unsup_fraction < 1.0, f"unsup_fraction must be in [0, 1), got {unsup_fraction}")
    require(
        labeled.image_shape == unlabeled.image_shape,
        f"labeled images {labeled.image_shape} and unlabeled images {unlabeled.image_shape} differ in shape",
    )
    n_unl = int(round(batch_size * unsup_fraction))
    n_lab = batch_size - n_unl
    require(n_lab >= 1, f"batch_size {batch_size} with unsup_fraction {unsup_fraction} leaves no labeled images")
    require(len(labeled) > 0, "iterate_mixed_batches needs at least one labeled image")
    require(n_unl == 0 or len(unlabeled) > 0, "iterate_mixed_batches needs at least one unlabeled image")
    # The small tolerance keeps e.g. 9 / (10 * 0.30000000000000004) from rounding up to 4.
    total = max(1, math.ceil(len(labeled) / (batch_size * (1.0 - unsup_fraction)) - 1e-9))
    total = total if batches is None else _check_int(batches, "batches", 1)

    generator = _generator(seed, epoch)
    perm = torch.randperm(len(labeled), generator=generator)
    passes = -(-(total * n_lab) // len(labeled))
    labeled_order = perm.repeat(passes)
    mine = torch.arange(batch_size)[rank::world_size]  # this rank's positions in a global batch
    mine_lab, mine_unl = mine[mine < n_lab], mine[mine >= n_lab] - n_lab
    for b in range(total):
        lab_idx = labeled_order[b * n_lab : (b + 1) * n_lab]
        unl_idx = torch.randint(0, max(len(unlabeled), 1), (n_unl,), generator=generator)
        x_lab, y_lab = labeled.batch(lab_idx[mine_lab], device)
        x_unl, y_unl = unlabeled.batch(unl_idx[mine_unl], device)
        x = torch.cat([x_lab, x_unl])
        y = torch.cat([y_lab, y_unl])
        is_unlabeled = torch.cat(
            [torch.zeros(len(x_lab), dtype=torch.bool), torch.ones(len(x_unl), dtype=torch.bool)]
        ).to(x.device)
        if augment.names:
            params = augment.draw(batch_size, generator)
            x = augment.apply(x, {k: p[mine] for k, p in params.items()})
        yield x, y, is_unlabeled


# --------------------------------------------------------------------------------------------
# Unlabeled data (RST)
# --------------------------------------------------------------------------------------------

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
    for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes", "bytearray")
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
                raise UserError(f"cannot read {source} as .npz: {_one_line(exc)}") from exc
        else:
            try:
                content = _NumpyOnlyUnpickler(handle, source).load()
            except UserError:
                raise
            except Exception as exc:
                raise UserError(f"cannot read {source}: neither an .npz nor a readable pickle ({_one_line(exc)})") from exc
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
    _check_int(batch_size, "batch_size", 1)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    modes = [(module, module.training) for module in model.modules()]
    labels = []
    try:
        model.eval()
        for start in range(0, len(images), batch_size):
            x, _ = images.batch(torch.arange(start, min(start + batch_size, len(images))), device)
            labels.append(model(x).argmax(dim=1).cpu())
    finally:
        for module, training in modes:
            module.training = training
    label_tensor = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    return ImageSet(images.images, label_tensor.long())


def pseudo_label_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, source: str = "pool",
                            device: Device = "cpu", data_dir: str | None = None, allow_nonfinite: bool = False,
                            log: Callable[[str], None] | None = None) -> tuple[int, float | None]:
    """Pseudo-label ``source`` with a standard-trained checkpoint and write RST's ``.npz`` to ``out``.

    ``source``: 'pool' (the training images the checkpoint's run did not use) or an .npz/.pickle
    file (:func:`load_unlabeled`). Returns (number of images, agreement with the true labels, or
    None when the source has none). ``out`` is checked first; non-finite weights are refused
    unless ``allow_nonfinite`` (then ``log`` is told).
    """
    from awp.checkpoint import load_run, nonfinite_warning

    check_output_file(out, "--out")
    run = load_run(checkpoint, device, data_dir=data_dir, allow_nonfinite=allow_nonfinite)
    if run.meta.get("nonfinite_weights") and log is not None:
        log(nonfinite_warning(str(checkpoint), run.meta["nonfinite_weights"]))
    if source == "pool":
        pool = run.data.pool
        if pool is None or len(pool) == 0:
            raise UsageError("the checkpoint's run used the whole training set: no pool left to pseudo-label; "
                             "pass --source FILE")
    else:
        pool = load_unlabeled(source)
    labeled = pseudo_label(run.model, pool, device=device)
    save_unlabeled_npz(out, labeled)
    agreement = float((labeled.labels == pool.labels).float().mean()) if source == "pool" else None
    return len(labeled), agreement
