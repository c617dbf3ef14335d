"""Batch augmentation (awp.data.augment) against independent references: numpy padding and torchvision."""
import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from awp.data.augment import Augmentation, augment_batch, resolve
from awp.data import iterate_batches, ImageSet
from awp.errors import UsageError


def _by_hand(image: np.ndarray, dy: int, dx: int, flip: bool, mode: str) -> np.ndarray:
    # numpy's 'reflect' is what AWP AT_AWP/utils.py:27 (and Rice et al.'s utils.py) pad CIFAR-10 with;
    # 'constant' zeros are torchvision's RandomCrop(32, padding=4).
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4)), mode="reflect" if mode == "reflect" else "constant")
    crop = padded[:, dy:dy + image.shape[1], dx:dx + image.shape[2]]
    return crop[:, :, ::-1] if flip else crop


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_crop_flip_matches_numpy_padding(mode, dtype):
    x = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8).to(dtype)
    aug = Augmentation.parse("crop-flip", mode)
    params = aug.draw(12, torch.Generator().manual_seed(5))
    out = aug.apply(x, params)
    assert out.dtype == dtype and out.shape == x.shape
    for i in range(12):
        ref = _by_hand(x[i].numpy(), int(params["dy"][i]), int(params["dx"][i]), bool(params["flip"][i]), mode)
        np.testing.assert_array_equal(out[i].numpy(), ref)
    # Not vacuous: the padding shows in some crops, and both flips occur.
    assert (params["dy"] != 4).any() and params["flip"].any() and (~params["flip"]).any()


def test_reflect_and_zeros_differ_only_in_the_padding():
    x = torch.rand(4, 3, 32, 32) + 0.5
    params = {"dy": torch.tensor([0, 8, 4, 2]), "dx": torch.tensor([0, 8, 4, 6]), "flip": torch.zeros(4, dtype=torch.bool)}
    zeros = Augmentation.parse("crop+flip", "zeros").apply(x, params)
    reflect = Augmentation.parse("crop+flip", "reflect").apply(x, params)
    assert (zeros[0, :, :4, :] == 0).all() and (reflect[0, :, :4, :] > 0).all()
    assert torch.equal(zeros[2], x[2]) and torch.equal(reflect[2], x[2])  # offset 4: no padding shows


@pytest.mark.parametrize("angle", [-15.0, -7.3, 0.0, 4.2, 11.9, 15.0])
def test_rotation_matches_torchvision(angle):
    x = torch.rand(2, 3, 32, 32)
    out = Augmentation(rotation=True).apply(x, {"angle": torch.tensor([angle, angle], dtype=torch.float64)})
    for i in range(2):  # torchvision's RandomRotation(15) rotates with this function (NEAREST, fill 0)
        ref = TF.rotate(x[i], angle, interpolation=InterpolationMode.NEAREST)
        assert torch.equal(out[i], ref)


def test_rotation_by_quarter_turns_is_rot90_and_keeps_uint8():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = Augmentation(rotation=True).apply(x, {"angle": torch.tensor([90.0, -90.0], dtype=torch.float64)})
    assert out.dtype == torch.uint8
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(1, 2)))  # counter-clockwise, as torchvision
    assert torch.equal(out[1], torch.rot90(x[1], -1, dims=(1, 2)))


def test_rotation_draws_after_crop_and_flip_within_15_degrees():
    plain = Augmentation.parse("crop+flip").draw(500, torch.Generator().manual_seed(3))
    rotated = Augmentation.parse("crop+flip+rotation").draw(500, torch.Generator().manual_seed(3))
    for key in ("dy", "dx", "flip"):  # adding rotation leaves a seed's crops and flips alone
        assert torch.equal(plain[key], rotated[key])
    angle = rotated["angle"]
    assert angle.abs().max() <= 15 and angle.min() < -14 and angle.max() > 14


def test_specs_resolve_and_bad_specs_are_refused():
    assert resolve(None, "zeros", "crop-flip").names == ["crop", "flip"]
    assert resolve("none", "reflect", "crop-flip").names == []
    assert resolve("crop+flip+rotation", "zeros", "none").names == ["crop", "flip", "rotation"]
    for spec in ("mixup", "crop+crop", "crop,flip"):
        with pytest.raises(UsageError, match="augmentation"):
            Augmentation.parse(spec)
    with pytest.raises(UsageError, match="padding_mode"):
        Augmentation.parse("crop", "edge")
    with pytest.raises(UsageError, match=r"unknown augmentation 'flp'; did you mean flip\?.*\(in 'crop\+flp'\)") as info:
        Augmentation.parse("crop+flp")
    assert "\n" not in str(info.value) and "'none'" in str(info.value)
    with pytest.raises(UsageError, match="unknown padding_mode 'reflct'; did you mean reflect"):
        Augmentation.parse("crop", "reflct")
    x = torch.rand(2, 3, 8, 8)
    assert augment_batch(x, "none", torch.Generator()) is x


def test_batches_with_rotation_are_deterministic_and_shard_consistently():
    data = ImageSet(torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8), torch.arange(10))
    aug = Augmentation.parse("crop+flip+rotation")
    kwargs = dict(shuffle=True, seed=3, epoch=1, augment=aug)
    one = [x for x, _ in iterate_batches(data, 4, **kwargs)]
    again = [x for x, _ in iterate_batches(data, 4, **kwargs)]
    shards = [[x for x, _ in iterate_batches(data, 4, rank=r, world_size=2, **kwargs)] for r in range(2)]
    for b, x in enumerate(one):
        assert torch.equal(x, again[b])
        assert torch.equal(shards[0][b], x[0::2]) and torch.equal(shards[1][b], x[1::2])
