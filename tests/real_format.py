"""Tiny CIFAR-10, CIFAR-100 and SVHN files in torchvision's real on-disk formats, for the tests of
awp.data and of the presets' data pipeline. Each writer lays the pixels out by hand in the data
set's documented format (CIFAR: pickled rows of 3072 bytes, R then G then B planes; SVHN: a .mat
with X as H x W x C x N and the label 10 for digit 0), points torchvision's checksums at the files
written, and returns what a correct reader must give back.

Nothing here is a test; test modules import from here, never from one another.
"""
from __future__ import annotations

import hashlib
import pickle

import numpy as np
import scipy.io
import torch
import torchvision


def md5(path) -> str:
    """The checksum torchvision checks a file against."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_cifar_batch(path, images: np.ndarray, labels: np.ndarray, label_keys: list[str]) -> None:
    # CIFAR's layout: one row of 3072 bytes per image: 1024 red values (row-major 32 x 32), then
    # 1024 green, then 1024 blue. The official files are Python 2 pickles whose byte-string keys
    # load as str under torchvision's encoding='latin1'; protocol-2 str keys load the same way.
    rows = np.empty((len(images), 3072), dtype=np.uint8)
    for n in range(len(images)):
        for c in range(3):
            rows[n, c * 1024 : (c + 1) * 1024] = images[n, c].reshape(-1)
    entry = {"batch_label": "a batch", "data": rows, "filenames": [f"img_{i}.png" for i in range(len(images))]}
    for key in label_keys:
        entry[key] = [int(v) for v in labels]
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def write_cifar(root, monkeypatch, *, kind: str, rng: np.random.Generator):
    """Write a tiny CIFAR-10/100 folder and point torchvision's checksums at it.

    Returns (train images N x 3 x 32 x 32, train labels, test images, test labels).
    """
    if kind == "cifar10":
        cls, folder, train_names, test_names = torchvision.datasets.CIFAR10, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
        meta_name, meta_key, label_keys, classes = "batches.meta", "label_names", ["labels"], 10
    else:
        cls, folder, train_names, test_names = torchvision.datasets.CIFAR100, "cifar-100-python", ["train"], ["test"]
        meta_name, meta_key, label_keys, classes = "meta", "fine_label_names", ["fine_labels", "coarse_labels"], 100
    directory = root / folder
    directory.mkdir(parents=True)
    written = {}
    for name in train_names + test_names:
        n = int(rng.integers(2, 5)) if len(train_names) > 1 or name in test_names else 12
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n)
        _write_cifar_batch(directory / name, images, labels, label_keys)
        written[name] = (images, labels)
    with open(directory / meta_name, "wb") as handle:
        pickle.dump({meta_key: [f"class_{i}" for i in range(classes)]}, handle, protocol=2)
    monkeypatch.setattr(cls, "train_list", [[n, md5(directory / n)] for n in train_names])
    monkeypatch.setattr(cls, "test_list", [[n, md5(directory / n)] for n in test_names])
    monkeypatch.setattr(cls, "meta", {"filename": meta_name, "key": meta_key, "md5": md5(directory / meta_name)})

    def stack(names):
        return (
            torch.from_numpy(np.concatenate([written[n][0] for n in names])),
            torch.from_numpy(np.concatenate([written[n][1] for n in names]).astype(np.int64)),
        )

    return (*stack(train_names), *stack(test_names))


def write_svhn(root, monkeypatch, *, rng: np.random.Generator, sizes=(("train", 7), ("test", 4))) -> dict:
    """Write SVHN's {split}_32x32.mat files under root and point torchvision's checksums at them.

    Returns {split: (images N x 3 x 32 x 32 uint8, labels with 0 for the digit 0)}.
    """
    expected = {}
    split_list = {k: list(v) for k, v in torchvision.datasets.SVHN.split_list.items()}
    for split, n in sizes:
        # SVHN's .mat layout: X is 32 x 32 x 3 x N (H, W, C, N), y is N x 1 with 10 for digit 0.
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        digits = rng.integers(0, 10, size=n)
        digits[0] = 0  # make sure the 10 -> 0 mapping is exercised
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        path = root / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": X, "y": y})
        split_list[split][2] = md5(path)
        images = np.stack([np.stack([X[:, :, c, i] for c in range(3)]) for i in range(n)])  # N x C x H x W by hand
        expected[split] = (torch.from_numpy(images), torch.from_numpy(digits.astype(np.int64)))
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", split_list)
    return expected
