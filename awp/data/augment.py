"""Training-set augmentation of a whole batch at once: random crop (zero or reflect padding), flip, rotation.

Each recipe of the paper's rows uses its official script's pipeline (the recipe card shows it):

- AWP ``AT_AWP/train_cifar10.py`` (Rice et al.'s pipeline): the images are padded by 4 pixels
  by *reflection* (``utils.py`` ``pad(mode='reflect')``), cropped back to 32 x 32 and flipped;
- torchvision's ``RandomCrop(32, padding=4)`` pads with *zeros*, then ``RandomHorizontalFlip``:
  TRADES, MART, RST, TRADES-AWP and AWP's ``train_cifar100.py``, which adds ``RandomRotation(15)``
  (angle uniform in [-15, 15] degrees, nearest neighbour, zero fill, about the centre);
- SVHN (``train_svhn.py``) and the digits: none.

Augmentation runs on the batch, on the batch's device, airbench style. Its draws come from a CPU
generator in a fixed order: N row offsets and N column offsets (each uniform in 0..8) when
cropping, N uniforms when flipping (flip where < 0.5), N uniforms mapped to angles when rotating.
So adding rotation leaves the crop and flip draws of a seed unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from awp.errors import UsageError, require
from awp.registry import Registry

TRANSFORMS = Registry("augmentation", {  # in the order they run (torchvision's)
    "crop": "random 32x32 crop of the image padded by 4 pixels",
    "flip": "horizontal flip with probability 1/2",
    "rotation": "rotation by an angle uniform in [-15, 15] degrees, nearest neighbour, zero fill",
})
PADDING_MODES = Registry("padding_mode", {
    "zeros": "zero padding (torchvision's RandomCrop(32, padding=4))",
    "reflect": "reflection padding (Rice et al.'s and the AWP AT scripts)",
})
SPECIALS = {"none": [], "crop-flip": ["crop", "flip"]}  # a data set's default augmentation, spelled out
CROP_PADDING = 4          # pixels added on every side before the random crop
ROTATION_DEGREES = 15.0   # RandomRotation(15) of AWP's train_cifar100.py

Params = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Augmentation:
    """Which transforms run, in torchvision's order: crop, flip, rotation."""

    crop: bool = False
    flip: bool = False
    rotation: bool = False
    padding_mode: str = "zeros"

    @classmethod
    def parse(cls, spec: str, padding_mode: str = "zeros") -> "Augmentation":
        """'none', 'crop-flip' (a data set's default, zero padding) or names joined by '+',
        e.g. 'crop+flip+rotation'; ``padding_mode`` ('zeros' | 'reflect') applies to the crop."""
        require(isinstance(spec, str), f"augmentation must be a string, got {spec!r}")
        PADDING_MODES.resolve(padding_mode)
        names = SPECIALS[spec] if spec in SPECIALS else spec.split("+")
        for name in names:
            try:
                TRANSFORMS.resolve(name)
            except UsageError as exc:
                where = f" (in {spec!r})" if name != spec else ""
                raise UsageError(f"{exc}{where}; a spec is 'none', 'crop-flip' or names joined by '+'") from None
        require(len(set(names)) == len(names), f"augmentation {spec!r} names a transform twice")
        return cls(crop="crop" in names, flip="flip" in names, rotation="rotation" in names,
                   padding_mode=padding_mode)

    @classmethod
    def of(cls, spec: "str | Augmentation") -> "Augmentation":
        return spec if isinstance(spec, Augmentation) else cls.parse(spec)

    @property
    def names(self) -> list[str]:
        return [n for n in TRANSFORMS if getattr(self, n)]

    def draw(self, n: int, generator: torch.Generator) -> Params:
        """The random choices for ``n`` images, drawn on the CPU in the documented order."""
        params: Params = {}
        if self.crop:
            params["dy"] = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator)
            params["dx"] = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator)
        if self.flip:
            params["flip"] = torch.rand(n, generator=generator) < 0.5
        if self.rotation:
            params["angle"] = (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1) * ROTATION_DEGREES
        return params

    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """A new tensor: ``x`` (N x C x H x W, any dtype) transformed by ``params`` (one entry per image)."""
        if "dy" in params or "flip" in params:
            x = _crop_flip(x, params, self.padding_mode)
        if "angle" in params:
            x = _rotate(x, params["angle"])
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], generator)) if self.names else x


def _source_index(start: torch.Tensor, size: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (or columns) of the unpadded image that positions ``start`` of the padded one show,
    and whether they lie inside it (zero padding shows 0 elsewhere; reflection never leaves it)."""
    if mode == "reflect":  # numpy's / torch's 'reflect': the edge pixel is not repeated
        start = start.abs()
        start = torch.where(start > size - 1, 2 * (size - 1) - start, start)
    inside = (start >= 0) & (start < size)
    return start.clamp(0, size - 1), inside


def _crop_flip(x: torch.Tensor, params: Params, mode: str) -> torch.Tensor:
    """out[n, :, i, j] = padded[n, :, dy + i, dx + (W-1-j if flip else j)], one gather for the batch."""
    n, _, h, w = x.shape
    device = x.device
    zeros = torch.zeros(n, dtype=torch.long)
    dy = params.get("dy", zeros + CROP_PADDING).to(device)
    dx = params.get("dx", zeros + CROP_PADDING).to(device)
    flip = params.get("flip", zeros.bool()).to(device)
    cols = torch.arange(w, device=device)
    cols = torch.where(flip[:, None], (w - 1) - cols, cols)  # n x w, positions within the crop
    rows, rows_in = _source_index(dy[:, None] - CROP_PADDING + torch.arange(h, device=device), h, mode)
    cols, cols_in = _source_index(dx[:, None] - CROP_PADDING + cols, w, mode)
    batch = torch.arange(n, device=device)[:, None, None]
    # Advanced indices around a slice put the broadcast dims first: the result is n x h x w x c.
    out = x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    inside = (rows_in[:, :, None] & cols_in[:, None, :])[:, None]
    return torch.where(inside, out, torch.zeros((), dtype=x.dtype, device=device)).contiguous()


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by its angle about its centre: nearest neighbour, zero
    fill, same size (torchvision's ``rotate`` with NEAREST, as ``RandomRotation`` applies it)."""
    n, _, h, w = x.shape
    angle = degrees.to(torch.float64) * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output pixel p (relative to the centre, y down) samples the input at R(-angle) p in
    # on-screen terms; in affine_grid's normalized coordinates that is this matrix.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * (h / w)
    theta[:, 1, 0], theta[:, 1, 1] = sin * (w / h), cos
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False).to(torch.float32)
    source = x if x.is_floating_point() else x.to(torch.float32)
    out = F.grid_sample(source, grid.to(x.device), mode="nearest", padding_mode="zeros", align_corners=False)
    return out if x.is_floating_point() else out.round().to(x.dtype)


def resolve(augment: str | None, padding_mode: str, dataset_default: str) -> Augmentation:
    """A run's augmentation: its ``augment`` setting, or the data set's default when None."""
    return Augmentation.parse(dataset_default if augment is None else augment, padding_mode)


def augment_batch(x: torch.Tensor, kind: "str | Augmentation", generator: torch.Generator) -> torch.Tensor:
    """Augment a batch N x C x H x W on its own device; ``x`` is left alone ('none' returns it).

    ``kind``: an :class:`Augmentation` or its spec ('none', 'crop-flip', 'crop+flip+rotation').
    """
    return Augmentation.of(kind)(x, generator)
