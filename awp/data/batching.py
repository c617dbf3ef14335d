"""Deterministic batching: order and augmentation are functions of (seed, epoch) only, so a resumed
run sees exactly the batches of an uninterrupted one; RST's mixed labeled / pseudo-labeled batches
(Carmon et al. 2019); each rank's share of a global batch under torchrun."""
from __future__ import annotations

import math
from typing import Iterator

import torch

from awp.checks import check_int, check_number
from awp.errors import require
from awp.data.augment import Augmentation
from awp.data.images import Device, ImageSet


def _generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator behind one epoch's order and augmentation: a function of (seed, epoch) only."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed((int(seed) * 1_000_003 + int(epoch)) % (1 << 63))
    return generator


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch over ``n`` items."""
    return n // batch_size if drop_last else -(-n // batch_size)


def _check_shard(batch_size: int, rank: int, world_size: int) -> tuple[int, int, int]:
    """(batch_size, rank, world_size) as ints, checked (a rank is in 0..world_size - 1)."""
    batch_size, world_size = check_int(batch_size, "batch_size", 1), check_int(world_size, "world_size", 1)
    return batch_size, check_int(rank, "rank", 0, world_size - 1), world_size


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
    batch_size, rank, world_size = _check_shard(batch_size, rank, world_size)
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


def _mixed_shape(labeled: ImageSet, unlabeled: ImageSet, batch_size: int, unsup_fraction: float,
                 batches: int | None) -> tuple[int, int, int]:
    """(labeled and unlabeled images per global batch, batches per epoch), checked."""
    check_number(unsup_fraction, "unsup_fraction", low=0, high=1, high_open=True)
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
    return n_lab, n_unl, (total if batches is None else check_int(batches, "batches", 1))


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
    batches, which :func:`awp.schedule.iterations_per_epoch` passes for the recipes). Within a
    global batch the labeled images come first;
    ranks take positions ``[rank::world_size]`` of it, as in :func:`iterate_batches`. Unlike
    Carmon et al.'s sampler the batch is not shuffled internally: the loss and BatchNorm do not
    depend on the order within a batch.
    """
    batch_size, rank, world_size = _check_shard(batch_size, rank, world_size)
    augment = Augmentation.of(augment)
    n_lab, n_unl, total = _mixed_shape(labeled, unlabeled, batch_size, unsup_fraction, batches)
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
