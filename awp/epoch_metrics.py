"""The per-epoch metrics of a training run: clean and robust accuracy and loss of the train, val
and test splits at the unperturbed weights, in eval mode, under the run's metric attack.

The robust generalization gap of Wu, Xia & Wang (NeurIPS 2020, Sec. 3) is the train minus the
test robust accuracy of these rows (``metrics.csv``). ("Measures", in :mod:`landscape.measures`,
are the quantities that may predict that gap; these are the metrics it is computed from.)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from awp import distributed
from awp.config import TrainConfig
from awp.data import SPLITS, DataSplits
from awp.metrics import AttackSpec, clean_and_robust
from awp.runtime import Runtime

QUANTITIES = ("clean_acc", "clean_loss", "robust_acc", "robust_loss")
COLUMNS = (["epoch", "lr", "awp_active", "train_batch_loss", "train_batch_adv_acc"]
           + [f"{s}_{q}" for s in SPLITS for q in QUANTITIES] + ["attack", "time"])


def epoch_metrics(model: nn.Module, data: DataSplits, config: TrainConfig, attack: AttackSpec,
                  runtime: Runtime, splits: Sequence[str] = tuple(SPLITS)) -> dict[str, float]:
    """Clean and robust metrics of ``splits`` at the current weights: the first
    ``eval_train_samples`` training images, the whole validation split, the first
    ``eval_test_samples`` (or all) test images. Under DDP each rank measures images rank::world
    and the sums are all-reduced (same images in all, other random starts than one process)."""
    sets = {"train": lambda: data.train.tensors(limit=config.eval_train_samples),
            "val": lambda: data.val.tensors() if data.val is not None and len(data.val) else None,
            "test": lambda: data.test.tensors(limit=config.eval_test_samples)}
    sets = {split: sets[split]() for split in splits}
    rank, world = distributed.rank(), distributed.world()
    row: dict[str, float] = {}
    for split, tensors in sets.items():
        if tensors is None:
            result = dict.fromkeys(QUANTITIES, float("nan"))
        elif world == 1:
            result = clean_and_robust(model, *tensors, attack, batch_size=config.eval_batch_size, runtime=runtime)
        else:
            x, y = (t[rank::world] for t in tensors)
            share = (clean_and_robust(model, x, y, attack, batch_size=config.eval_batch_size, runtime=runtime)
                     if len(x) else dict.fromkeys(QUANTITIES, 0.0))
            sums = torch.tensor([share[k] * len(x) for k in QUANTITIES], dtype=torch.float64,
                                device=runtime.device)
            result = dict(zip(QUANTITIES, (distributed.all_reduce_sum(sums) / len(tensors[0])).tolist()))
        row.update({f"{split}_{k}": v for k, v in result.items()})
    return row
