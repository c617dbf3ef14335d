"""Epoch length and learning-rate schedules of a training config, as each official script has them.

The training loop and the recipe card (:mod:`awp.recipe`) both call these functions, so the card
cannot drift from training.

``progress`` is training progress in completed epochs, a float. Two granularities:

- ``lr_update='iteration'`` (Rice et al.'s and the AWP AT scripts, ``train_cifar10.py:321``):
  step ``i`` of epoch ``e`` (both 0-based) uses the lr at ``e + (i + 1) / iterations``;
- ``lr_update='epoch'`` (TRADES, MART, TRADES-AWP, RST): the whole epoch uses the lr at its
  start, ``e`` completed epochs. RST's cosine is ``0.5 (1 + cos(pi (epoch - 1) / epochs))`` with
  1-based epochs (``robust_self_training.py:413``); TRADES' ``epoch >= 75`` (1-based) is the
  milestone 74/76 (``train_trades_cifar10.py:140``).

A piecewise milestone ``m`` multiplies the lr by ``decay`` once ``m * epochs`` epochs are complete.

:data:`SCHEDULES` holds one function per schedule, ``f(base_lr, progress, epochs, milestones,
decay) -> lr``; adding a schedule is one function and its registration.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

from awp.methods import METHODS
from awp.registry import Registry

if TYPE_CHECKING:
    from awp.config import TrainConfig

Schedule = Callable[[float, float, int, Sequence[float], float], float]
SCHEDULES: Registry[Schedule] = Registry("schedule")
LR_UPDATES = Registry("lr_update", {
    "iteration": "the lr changes at every step (Rice et al.'s and the AWP AT scripts)",
    "epoch": "the lr changes once per epoch (TRADES, MART, TRADES-AWP, RST)",
})


@SCHEDULES.register("piecewise")
def _piecewise(base_lr: float, progress: float, epochs: int, milestones: Sequence[float], decay: float) -> float:
    """The lr times decay at each milestone (a fraction of the epochs) passed."""
    passed = sum(progress >= m * epochs - 1e-9 for m in milestones)
    return base_lr * decay ** passed


@SCHEDULES.register("cosine")
def _cosine(base_lr: float, progress: float, epochs: int, milestones: Sequence[float], decay: float) -> float:
    """Half a cosine from the lr to 0 over the epochs (milestones and decay unused)."""
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(progress / epochs, 1.0)))


@SCHEDULES.register("constant")
def _constant(base_lr: float, progress: float, epochs: int, milestones: Sequence[float], decay: float) -> float:
    """The lr throughout."""
    return base_lr


def learning_rate(base_lr: float, progress: float, epochs: int, schedule: str,
                  milestones: Sequence[float] = (0.5, 0.75), decay: float = 0.1) -> float:
    """lr at ``progress`` epochs under ``schedule`` (a :data:`SCHEDULES` name); an unknown name is
    one :class:`~awp.errors.UsageError` line."""
    return SCHEDULES.get(schedule)(base_lr, progress, epochs, milestones, decay)


def lr_at(config: "TrainConfig", epoch_index: int, iteration: int, iterations: int) -> float:
    """The lr of step ``iteration`` (0-based) of epoch ``epoch_index`` (0-based) with ``iterations`` steps."""
    if LR_UPDATES.resolve(config.lr_update) == "epoch":
        progress = float(epoch_index)
    else:
        progress = epoch_index + (iteration + 1) / iterations
    return learning_rate(config.lr, progress, config.epochs, config.schedule, config.lr_milestones,
                         config.lr_decay)


def lr_by_epoch(config: "TrainConfig", iterations: int) -> list[float]:
    """The lr in force at the start (first step) of every epoch: entry i is epoch i + 1's."""
    return [lr_at(config, epoch, 0, iterations) for epoch in range(config.epochs)]


def iterations_per_epoch(config: "TrainConfig", train_size: int) -> int:
    """Optimizer steps per epoch on ``train_size`` labeled images.

    One pass over the training set in batches of ``batch_size``, the last one smaller
    (``drop_last=False``, as every official script). RST: ``ceil(epoch_images / batch_size)``
    batches of labeled plus pseudo-labeled images, ``epoch_images`` defaulting to the labeled
    set's size: Carmon et al. define an epoch as ``ceil(50000 / batch_size)`` batches
    (``robust_self_training.py:237-240``), not as one pass over the labeled half of each batch.
    """
    images = (config.epoch_images or train_size) if METHODS[config.method].uses_unlabeled else train_size
    return max(1, -(-images // config.batch_size))
