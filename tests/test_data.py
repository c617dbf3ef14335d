"""Tests for awp.data: splits, real on-disk formats, augmentation, batching, RST data files.

References are independent of the code under test: per-pixel layouts written by hand in each
data set's documented on-disk format (tests/real_format.py), numpy padding/slicing for the crop,
hand-computed model outputs, and multisets of image bytes for the partition checks.
"""
from __future__ import annotations

import collections
import math
import os
import pickle
import re
import shlex

import numpy as np
import pytest
import torch
import torchvision
from sklearn.datasets import load_digits

from awp.data import (
    DataSplits,
    ImageSet,
    augment_batch,
    build_dataset,
    iterate_batches,
    iterate_mixed_batches,
    list_datasets,
    load_unlabeled,
    num_batches,
    pseudo_label,
    save_unlabeled_npz,
)
from awp.errors import UsageError, UserError

from real_format import md5, write_cifar, write_svhn


def _one_line(exc_info: pytest.ExceptionInfo) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


def _rows(images: torch.Tensor, labels: torch.Tensor) -> collections.Counter:
    """Multiset of (image bytes, label): partitions are checked on it, robust to duplicate images."""
    return collections.Counter(
        (images[i].numpy().tobytes(), int(labels[i])) for i in range(len(images))
    )


# --------------------------------------------------------------------------------------------
# Registry and digits
# --------------------------------------------------------------------------------------------


def test_list_datasets_and_unknown_name():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "svhn"]
    with pytest.raises(UsageError) as info:
        build_dataset("mnist")
    message = _one_line(info)
    for name in list_datasets():
        assert name in message


@pytest.fixture(scope="module")
def digits_raw():
    bunch = load_digits()
    return torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1), torch.tensor(bunch.target)


def test_digits_shapes_ranges_and_partition(digits_raw):
    images, labels = digits_raw
    splits = build_dataset("digits", train_subset=300)
    assert isinstance(splits, DataSplits)
    assert splits.num_classes == 10 and splits.image_shape == (1, 8, 8) and splits.augment == "none"
    parts = [splits.train, splits.val, splits.pool, splits.test]
    assert [len(p) for p in parts] == [300, 200, 1797 - 597 - 200 - 300, 597]
    assert splits.unlabeled is None
    for part in parts:
        assert part.images.dtype == torch.float32 and part.images.shape[1:] == (1, 8, 8)
        assert part.labels.dtype == torch.int64
        assert float(part.images.min()) >= 0.0 and float(part.images.max()) <= 1.0
    assert float(splits.train.images.max()) == 1.0  # /16, not /255: the full range is used
    assert set(torch.cat([p.labels for p in parts]).tolist()) == set(range(10))
    # train + val + pool + test is exactly the data set, as a multiset of (image, label).
    union = sum((_rows(p.images, p.labels) for p in parts), collections.Counter())
    assert union == _rows(images, labels)
    assert [len(splits.train), len(splits.val), len(splits.test), len(splits.pool)] == [300, 200, 597, 700]
    assert splits.unlabeled is None


def test_digits_defaults_and_no_val(digits_raw):
    splits = build_dataset("digits")
    assert (len(splits.train), len(splits.val), len(splits.test), splits.pool) == (1000, 200, 597, None)
    no_val = build_dataset("digits", val_size=0)
    assert no_val.val is None and len(no_val.train) == 1200


def test_digits_mean_std_match_the_data(digits_raw):
    images, _ = digits_raw
    splits = build_dataset("digits", val_size=0)
    assert splits.mean == pytest.approx((float(images.double().mean()),), abs=1e-4)
    assert splits.std == pytest.approx((float(images.double().std(unbiased=False)),), abs=1e-4)


def test_digits_split_depends_only_on_split_seed():
    torch.manual_seed(1)
    np.random.seed(1)
    a = build_dataset("digits", train_subset=300)
    torch.manual_seed(2)
    np.random.seed(2)
    b = build_dataset("digits", train_subset=300)
    for part in ("train", "val", "pool", "test"):
        assert torch.equal(getattr(a, part).images, getattr(b, part).images)
        assert torch.equal(getattr(a, part).labels, getattr(b, part).labels)
    # The validation images do not move when the training subset or its size changes,
    # and the test set does not move with val_size.
    c = build_dataset("digits", train_subset=100)
    assert torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, build_dataset("digits", val_size=50).test.images)
    # A different split seed gives a different split.
    d = build_dataset("digits", train_subset=300, split_seed=1)
    assert not torch.equal(a.val.images, d.val.images)
    assert not torch.equal(a.test.images, d.test.images)


def test_digits_stratified(digits_raw):
    _, labels = digits_raw
    class_sizes = torch.bincount(labels, minlength=10).double()
    splits = build_dataset("digits", train_subset=300)
    for part, size in ((splits.test, 597), (splits.val, 200), (splits.train, 300)):
        counts = torch.bincount(part.labels, minlength=10).double()
        # Each class's share follows its share of the data, up to rounding at each stage.
        expected = class_sizes / class_sizes.sum() * size
        assert (counts - expected).abs().max() <= 2.0, (counts, expected)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(val_size=1200), "val_size must be below the 1200 training images of digits, got 1200"),
        (dict(val_size=-1), "val_size must be >= 0, got -1"),
        (dict(val_size=2.5), "val_size must be a whole number, got 2.5"),
        (dict(val_size=True), "val_size must be a whole number, got True"),
        (dict(train_subset=0), "train_subset must be >= 1, got 0"),
        (dict(train_subset=1001), "train_subset must be at most the 1000 training images left"),
        (dict(val_size=1199, train_subset=2), "train_subset must be at most the 1 training images left"),
        (dict(split_seed=-1), "split_seed must be >= 0, got -1"),
    ],
)
def test_digits_bad_sizes_are_usage_errors(kwargs, fragment):
    with pytest.raises(UsageError) as info:
        build_dataset("digits", **kwargs)
    assert fragment in _one_line(info)


def test_digits_largest_subset_leaves_no_pool():
    splits = build_dataset("digits", val_size=199, train_subset=1001)
    assert len(splits.train) == 1001 and splits.pool is None


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 / SVHN in their real on-disk formats
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_real_format(tmp_path, monkeypatch, kind):
    train_x, train_y, test_x, test_y = write_cifar(tmp_path, monkeypatch, kind=kind, rng=np.random.default_rng(0))
    splits = build_dataset(kind, data_dir=tmp_path, val_size=0)
    assert splits.num_classes == (10 if kind == "cifar10" else 100)
    assert splits.image_shape == (3, 32, 32) and splits.augment == "crop-flip" and len(splits.mean) == 3
    assert splits.train.images.dtype == torch.uint8 and splits.train.images.shape[1:] == (3, 32, 32)
    # With no hold-out the training set keeps the files' order: compare pixel for pixel.
    assert torch.equal(splits.train.images, train_x) and torch.equal(splits.train.labels, train_y)
    assert torch.equal(splits.test.images, test_x) and torch.equal(splits.test.labels, test_y)
    x, y = splits.test.batch([0, 1])
    assert x.dtype == torch.float32 and torch.equal(x, test_x[:2].float() / 255) and torch.equal(y, test_y[:2])

    held = build_dataset(kind, data_dir=tmp_path, val_size=3, train_subset=len(train_x) - 5)
    assert (len(held.train), len(held.val), len(held.pool)) == (len(train_x) - 5, 3, 2)
    union = sum((_rows(p.images, p.labels) for p in (held.train, held.val, held.pool)), collections.Counter())
    assert union == _rows(train_x, train_y)


def test_cifar_corrupt_files_are_user_errors(tmp_path, monkeypatch):
    write_cifar(tmp_path, monkeypatch, kind="cifar10", rng=np.random.default_rng(1))
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    target.write_bytes(target.read_bytes()[:-10])  # truncated: the checksum no longer matches
    with pytest.raises(UserError) as info:
        build_dataset("cifar10", data_dir=tmp_path, val_size=0)
    assert "corrupt" in _one_line(info)

    # A file whose checksum matches but which does not unpickle.
    target.write_bytes(b"this is not a pickle")
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5(target) if n == "data_batch_3" else m] for n, m in cls.train_list])
    with pytest.raises(UserError) as info:
        build_dataset("cifar10", data_dir=tmp_path, val_size=0)
    assert "corrupt" in _one_line(info)


@pytest.mark.parametrize("kind,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("svhn", "train_32x32.mat")])
def test_missing_files_say_how_to_get_them(tmp_path, kind, folder):
    with pytest.raises(UserError) as info:
        build_dataset(kind, data_dir=tmp_path / "nowhere")
    message = _one_line(info)
    assert "download" in message and folder in message and "nowhere" in message
    with pytest.raises(UserError) as info:
        build_dataset(kind)  # no data_dir at all
    assert "download" in _one_line(info)


def test_svhn_real_format(tmp_path, monkeypatch):
    expected = write_svhn(tmp_path, monkeypatch, rng=np.random.default_rng(2))

    with pytest.raises(UsageError):
        build_dataset("svhn", data_dir=tmp_path)  # the default 1000-image hold-out exceeds 7 images
    splits = build_dataset("svhn", data_dir=tmp_path, val_size=0)
    assert splits.augment == "none" and splits.num_classes == 10
    assert torch.equal(splits.train.images, expected["train"][0])
    assert torch.equal(splits.train.labels, expected["train"][1])
    assert torch.equal(splits.test.images, expected["test"][0])
    assert torch.equal(splits.test.labels, expected["test"][1])


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


def _crop_flip_by_hand(image: np.ndarray, dy: int, dx: int, flip: bool) -> np.ndarray:
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4)))  # zeros
    crop = padded[:, dy : dy + h, dx : dx + w]
    return crop[:, :, ::-1] if flip else crop


def test_augment_none_is_identity():
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(augment_batch(x, "none", torch.Generator().manual_seed(0)), x)


def test_crop_flip_matches_hand_computation():
    x = torch.rand(16, 3, 32, 32)
    before = x.clone()
    out = augment_batch(x, "crop-flip", torch.Generator().manual_seed(123))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, before)  # the input is left alone
    # Replay the documented draws: N row offsets, N column offsets in 0..8, N uniforms (< 0.5 flips).
    replay = torch.Generator().manual_seed(123)
    dy = torch.randint(0, 9, (16,), generator=replay)
    dx = torch.randint(0, 9, (16,), generator=replay)
    flip = torch.rand(16, generator=replay) < 0.5
    for i in range(16):
        ref = _crop_flip_by_hand(x[i].numpy(), int(dy[i]), int(dx[i]), bool(flip[i]))
        np.testing.assert_array_equal(out[i].numpy(), ref)
    # The draws vary: both flips and several offsets occur, so the check above is not vacuous.
    assert flip.any() and (~flip).any() and len(set(dy.tolist())) > 2


def test_crop_flip_every_output_is_a_shifted_copy():
    # Independent of the draw order: each output is one of the 9 x 9 x 2 candidates.
    x = torch.rand(6, 1, 8, 8)
    out = augment_batch(x, "crop-flip", torch.Generator().manual_seed(7))
    assert out.shape == x.shape
    for i in range(6):
        candidates = [
            _crop_flip_by_hand(x[i].numpy(), dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
        ]
        assert any(np.array_equal(out[i].numpy(), c) for c in candidates)


def test_crop_flip_seeded_and_uint8():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    a = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    b = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    c = augment_batch(x, "crop-flip", torch.Generator().manual_seed(2))
    assert a.dtype == torch.uint8 and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(UsageError):
        augment_batch(x, "mixup", torch.Generator())


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


def _id_set(n: int, size: int = 32) -> ImageSet:
    """Images whose labels are their own indices, so batches reveal which rows they hold."""
    images = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
    return ImageSet(images, torch.arange(n))


@pytest.mark.parametrize("drop_last", [False, True])
def test_iterate_batches_covers_each_index_once(drop_last):
    data = _id_set(23)
    batches = list(iterate_batches(data, 5, shuffle=True, seed=3, epoch=0, drop_last=drop_last))
    assert len(batches) == num_batches(23, 5, drop_last) == (4 if drop_last else 5)
    ids = torch.cat([y for _, y in batches])
    if drop_last:
        assert all(len(y) == 5 for _, y in batches) and len(set(ids.tolist())) == 20
    else:
        assert sorted(ids.tolist()) == list(range(23))
    for x, y in batches:  # the images travel with their labels
        assert torch.equal(x, data.images[y].float() / 255)
    in_order = torch.cat([y for _, y in iterate_batches(data, 5, shuffle=False)])
    assert in_order.tolist() == list(range(23))


def test_iterate_batches_order_depends_only_on_seed_and_epoch():
    data = _id_set(30)

    def order(seed, epoch):
        return torch.cat([y for _, y in iterate_batches(data, 8, shuffle=True, seed=seed, epoch=epoch, augment="crop-flip")])

    torch.manual_seed(0)
    first = order(1, 4)
    list(iterate_batches(data, 8, shuffle=True, seed=1, epoch=3))  # an earlier epoch leaves no trace
    torch.manual_seed(99)
    assert torch.equal(first, order(1, 4))
    assert not torch.equal(first, order(1, 5))
    assert not torch.equal(first, order(2, 4))
    xa = torch.cat([x for x, _ in iterate_batches(data, 8, shuffle=True, seed=1, epoch=4, augment="crop-flip")])
    xb = torch.cat([x for x, _ in iterate_batches(data, 8, shuffle=True, seed=1, epoch=4, augment="crop-flip")])
    assert torch.equal(xa, xb)


@pytest.mark.parametrize("world_size", [2, 3])
def test_iterate_batches_rank_shards_rebuild_the_single_process_batch(world_size):
    data = _id_set(22)
    kwargs = dict(shuffle=True, seed=5, epoch=2, augment="crop-flip")
    single = list(iterate_batches(data, 8, **kwargs))
    shards = [list(iterate_batches(data, 8, rank=r, world_size=world_size, **kwargs)) for r in range(world_size)]
    assert all(len(s) == len(single) for s in shards)
    for b, (x, y) in enumerate(single):
        for r in range(world_size):
            xr, yr = shards[r][b]
            assert torch.equal(yr, y[r::world_size])
            assert torch.equal(xr, x[r::world_size])  # augmentation included


def test_imageset_batch_and_tensors():
    data = _id_set(6)
    x, y = data.tensors(limit=4)
    assert x.shape == (4, 3, 32, 32) and torch.equal(x, data.images[:4].float() / 255) and y.tolist() == [0, 1, 2, 3]
    assert len(data.tensors()[0]) == 6
    sub = data.subset(torch.tensor([True, False, True, False, False, True]))
    assert sub.labels.tolist() == [0, 2, 5] and len(data) == 6
    floats = ImageSet(torch.rand(3, 1, 8, 8), torch.zeros(3, dtype=torch.int64))
    assert torch.equal(floats.batch([2, 0])[0], floats.images[[2, 0]])


# --------------------------------------------------------------------------------------------
# RST mixed batches
# --------------------------------------------------------------------------------------------


def _mixed_sets(n_lab: int, n_unl: int):
    labeled = _id_set(n_lab)
    unl_images = torch.randint(0, 256, (n_unl, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return labeled, ImageSet(unl_images, 1000 + torch.arange(n_unl))  # ids 1000+ mark unlabeled rows


@pytest.mark.parametrize("batch_size,fraction", [(8, 0.5), (12, 0.25), (10, 0.7)])
def test_mixed_batches_composition(batch_size, fraction):
    labeled, unlabeled = _mixed_sets(25, 40)
    batches = list(iterate_mixed_batches(labeled, unlabeled, batch_size, unsup_fraction=fraction, seed=1, epoch=0))
    n_unl = round(batch_size * fraction)
    n_lab = batch_size - n_unl
    assert len(batches) == math.ceil(25 / (batch_size * (1 - fraction)) - 1e-9)
    assert len(batches) * n_lab >= 25 > (len(batches) - 1) * n_lab
    lab_ids = []
    for x, y, is_unl in batches:
        assert x.shape == (batch_size, 3, 32, 32) and is_unl.dtype == torch.bool
        assert int(is_unl.sum()) == n_unl
        assert torch.equal(is_unl, y >= 1000)  # the mask marks exactly the unlabeled rows
        assert int(y[is_unl].max()) < 1040
        for xi, yi in zip(x, y):  # every image travels with its id
            source = unlabeled.images[yi - 1000] if yi >= 1000 else labeled.images[yi]
            assert torch.equal(xi, source.float() / 255)
        lab_ids += y[~is_unl].tolist()
    # The first pass over the labeled permutation has no repeats; the tail wraps around.
    assert sorted(lab_ids[:25]) == list(range(25))
    assert lab_ids[25:] == lab_ids[: len(lab_ids) - 25]


def test_mixed_batches_unlabeled_with_replacement_and_deterministic():
    labeled, unlabeled = _mixed_sets(40, 3)
    run = lambda **kw: list(iterate_mixed_batches(labeled, unlabeled, 8, seed=2, epoch=1, **kw))  # noqa: E731
    first = run()
    unl_ids = torch.cat([y[m] for _, y, m in first])
    assert len(unl_ids) == 10 * 4 > 3 and set(unl_ids.tolist()) <= {1000, 1001, 1002}
    again = run()
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again))
    other = list(iterate_mixed_batches(labeled, unlabeled, 8, seed=2, epoch=2))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other))


def test_mixed_batches_rank_shards():
    labeled, unlabeled = _mixed_sets(21, 30)
    kwargs = dict(unsup_fraction=0.5, seed=4, epoch=3, augment="crop-flip")
    single = list(iterate_mixed_batches(labeled, unlabeled, 10, **kwargs))
    shards = [list(iterate_mixed_batches(labeled, unlabeled, 10, rank=r, world_size=2, **kwargs)) for r in range(2)]
    for b, (x, y, m) in enumerate(single):
        for r in range(2):
            xr, yr, mr = shards[r][b]
            assert torch.equal(yr, y[r::2]) and torch.equal(mr, m[r::2]) and torch.equal(xr, x[r::2])


def test_mixed_batches_epoch_length_can_be_set():
    # Carmon et al.'s epoch is ceil(50000 / batch_size) batches whatever the labeled share
    # (semisup-adv robust_self_training.py:237-240): more batches than one labeled pass wrap around.
    labeled, unlabeled = _mixed_sets(10, 30)
    batches = list(iterate_mixed_batches(labeled, unlabeled, 4, unsup_fraction=0.5, seed=1, epoch=0, batches=7))
    assert len(batches) == 7 and all(len(y) == 4 for _, y, _ in batches)
    lab = torch.cat([y[~m] for _, y, m in batches]).tolist()
    assert sorted(lab[:10]) == list(range(10)) and lab[10:] == lab[:4]
    with pytest.raises(UsageError, match="batches"):
        list(iterate_mixed_batches(labeled, unlabeled, 4, batches=0))


def test_mixed_batches_bad_fraction():
    labeled, unlabeled = _mixed_sets(5, 5)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(UsageError, match="unsup_fraction must be a finite number >= 0 and < 1") as info:
            list(iterate_mixed_batches(labeled, unlabeled, 8, unsup_fraction=bad))
        _one_line(info)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(batch_size=0), "batch_size must be >= 1, got 0"),
    (dict(batch_size=2.5), "batch_size must be a whole number, got 2.5"),
    (dict(world_size=0), "world_size must be >= 1, got 0"),
    (dict(rank=2, world_size=2), "rank must be <= 1, got 2"),
    (dict(rank=-1, world_size=2), "rank must be >= 0, got -1"),
])
def test_bad_batching_settings_are_one_line(kwargs, fragment):
    labeled, unlabeled = _mixed_sets(5, 5)
    settings = {"batch_size": 4, **kwargs}
    with pytest.raises(UsageError, match=re.escape(fragment)) as info:
        list(iterate_batches(labeled, shuffle=False, **settings))
    _one_line(info)
    with pytest.raises(UsageError, match=re.escape(fragment)):
        list(iterate_mixed_batches(labeled, unlabeled, **settings))


def test_whole_float_batch_size_gives_the_int_batches():
    labeled, _ = _mixed_sets(5, 5)
    as_float = [y for _, y in iterate_batches(labeled, 2.0, shuffle=True, seed=3)]
    as_int = [y for _, y in iterate_batches(labeled, 2, shuffle=True, seed=3)]
    assert len(as_float) == 3 and all(torch.equal(a, b) for a, b in zip(as_float, as_int))


# --------------------------------------------------------------------------------------------
# Unlabeled data files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_npz_round_trip(tmp_path, dtype):
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    if dtype == torch.float32:
        images = images.float() / 255
    original = ImageSet(images, torch.tensor([3, 1, 4, 1, 5]))
    path = tmp_path / "extra.npz"
    save_unlabeled_npz(path, original)
    assert os.listdir(tmp_path) == ["extra.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as archive:
        assert archive["images"].dtype == (np.uint8 if dtype == torch.uint8 else np.float32)
    loaded = load_unlabeled(path)
    assert loaded.images.dtype == dtype
    assert torch.equal(loaded.images, original.images) and torch.equal(loaded.labels, original.labels)


def test_npz_channels_last_and_bad_content(tmp_path):
    hwc = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "hwc.npz", images=hwc, labels=np.arange(4))
    loaded = load_unlabeled(tmp_path / "hwc.npz")
    assert torch.equal(loaded.images, torch.from_numpy(hwc).permute(0, 3, 1, 2))
    np.savez(tmp_path / "keys.npz", x=hwc, labels=np.arange(4))
    with pytest.raises(UserError) as info:
        load_unlabeled(tmp_path / "keys.npz")
    assert "images" in _one_line(info)
    np.savez(tmp_path / "range.npz", images=hwc.astype(np.float32), labels=np.arange(4))  # floats above 1
    with pytest.raises(UserError):
        load_unlabeled(tmp_path / "range.npz")
    np.savez(tmp_path / "objects.npz", images=np.array([object()] * 4), labels=np.arange(4))
    with pytest.raises(UserError):
        load_unlabeled(tmp_path / "objects.npz")  # object arrays would need pickle: refused
    with pytest.raises(UserError) as info:
        load_unlabeled(tmp_path / "absent.npz")
    assert "absent.npz" in _one_line(info)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_carmon_pickle_round_trip(tmp_path, protocol):
    rng = np.random.default_rng(protocol)
    data = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    targets = rng.integers(0, 10, size=6)
    path = tmp_path / "ti_500K_pseudo_labeled.pickle"
    with open(path, "wb") as handle:
        pickle.dump({"data": data, "extrapolated_targets": targets}, handle, protocol=protocol)
    loaded = load_unlabeled(path)
    assert loaded.images.dtype == torch.uint8
    for n in range(6):  # N x H x W x C on disk -> N x C x H x W, pixel by pixel
        for c in range(3):
            np.testing.assert_array_equal(loaded.images[n, c].numpy(), data[n, :, :, c])
    assert loaded.labels.tolist() == targets.tolist()

    with open(path, "wb") as handle:  # targets as a plain list of numpy scalars
        pickle.dump({"data": data, "extrapolated_targets": [np.int64(t) for t in targets]}, handle, protocol=protocol)
    assert load_unlabeled(path).labels.tolist() == targets.tolist()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + shlex.quote(str(self.marker)),))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"data": _Payload(marker), "extrapolated_targets": [0]}))
    with pytest.raises(UserError) as info:
        load_unlabeled(path)
    message = _one_line(info)
    assert message.startswith("refusing to unpickle") and "system" in message and str(path) in message
    assert not marker.exists()
    # Control: the same bytes through plain pickle do run the payload, so the test can fail.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()


def test_bad_pickles_are_user_errors(tmp_path):
    path = tmp_path / "x.pickle"
    path.write_bytes(pickle.dumps({"images": np.zeros((2, 32, 32, 3), np.uint8)}))
    with pytest.raises(UserError) as info:
        load_unlabeled(path)
    assert "extrapolated_targets" in _one_line(info)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UserError):
        load_unlabeled(path)
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(UserError):
        load_unlabeled(path)


def test_build_dataset_with_unlabeled_file(tmp_path):
    pool = build_dataset("digits", train_subset=100).pool
    save_unlabeled_npz(tmp_path / "pool.npz", pool)
    splits = build_dataset("digits", train_subset=100, unlabeled=tmp_path / "pool.npz")
    assert torch.equal(splits.unlabeled.images, pool.images) and torch.equal(splits.unlabeled.labels, pool.labels)
    save_unlabeled_npz(tmp_path / "big.npz", _id_set(3))
    with pytest.raises(UserError) as info:
        build_dataset("digits", unlabeled=tmp_path / "big.npz")
    assert "(3, 32, 32)" in _one_line(info)


# --------------------------------------------------------------------------------------------
# Pseudo-labeling
# --------------------------------------------------------------------------------------------


def test_pseudo_label_uses_eval_mode_and_restores_modes():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.BatchNorm1d(10))
    bn = model[2]
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(10))
        bn.running_var.copy_(torch.rand(10) + 0.5)
        bn.weight.copy_(torch.randn(10))
    model.train()
    model[1].eval()  # a mixed state, which must come back exactly
    stats = (bn.running_mean.clone(), bn.running_var.clone())
    images = ImageSet(torch.rand(23, 1, 8, 8), torch.full((23,), -1))
    labeled = pseudo_label(model, images, batch_size=7)
    # Hand computation of the eval-mode forward.
    lin, x = model[1], images.images.reshape(23, 64)
    z = x @ lin.weight.T + lin.bias
    z = (z - stats[0]) / torch.sqrt(stats[1] + bn.eps) * bn.weight + bn.bias
    assert torch.equal(labeled.labels, z.argmax(dim=1))
    assert labeled.images is images.images and images.labels.tolist() == [-1] * 23
    assert model.training and bn.training and not model[1].training
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert labeled.labels.dtype == torch.int64


@pytest.mark.gpu
def test_gpu_batches_equal_cpu_batches():
    data = _id_set(20)
    kwargs = dict(shuffle=True, seed=1, epoch=0, augment="crop-flip")
    cpu = list(iterate_batches(data, 8, **kwargs))
    moved = list(iterate_batches(data, 8, device="cuda", **kwargs))
    resident = list(iterate_batches(data.to("cuda"), 8, **kwargs))
    for (x, y), (xm, ym), (xr, yr) in zip(cpu, moved, resident):
        assert xm.is_cuda and ym.is_cuda and xr.is_cuda
        assert torch.equal(xm.cpu(), x) and torch.equal(xr.cpu(), x) and torch.equal(ym.cpu(), y)
    labeled, unlabeled = _mixed_sets(10, 10)
    for x, y, m in iterate_mixed_batches(labeled, unlabeled, 4, device="cuda", augment="crop-flip"):
        assert x.is_cuda and y.is_cuda and m.is_cuda
