"""A checkpoint made ready to measure, and RST's pseudo-labels from one.

:func:`load_run` is the one place that turns a checkpoint (ours, an imported one, or
``robustbench:NAME``) into what every measurement needs: the model, its resolved training config,
its data splits and the attack that measured its per-epoch metrics (a :class:`LoadedCheckpoint`).
:func:`pseudo_label_checkpoint` labels RST's unlabeled pool with a standard model's checkpoint
(Carmon et al. 2019). This is the top layer of checkpoint handling: it sees the config, the data
and RobustBench; the layers below it (:mod:`awp.safety`, :mod:`awp.checkpoint_file`,
:mod:`awp.robustbench`) see none of them.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from awp.config import TrainConfig, config_from_dict
from awp.data import DataSplits, ImageSet, build_dataset, load_unlabeled, pseudo_label, save_unlabeled_npz
from awp.errors import UsageError
from awp.io import check_output_file, sha256_file
from awp.metrics import AttackSpec, metric_attack
from awp.checkpoint_file import check_fits_data, load_checkpoint
from awp.robustbench import ROBUSTBENCH_PREFIX, load_robustbench
from awp.safety import nonfinite_warning


@dataclass
class LoadedCheckpoint:
    """A checkpoint made ready to measure: ``model`` (eval mode, on the requested device), ``meta``
    (the checkpoint without its weights, plus ``path`` and ``sha256``), ``config`` (its resolved
    training config), ``data`` (its splits, built on first use with the run's own ``val_size``,
    ``train_subset`` and ``split_seed``, so 'train' and 'val' are the images it trained on and held
    out) and ``attack`` (the attack of its per-epoch metrics, :func:`awp.metrics.metric_attack`).

    (Called ``Run`` before; that name still imports. A *run* is a training folder.)"""

    model: nn.Module
    meta: dict[str, Any]
    config: TrainConfig
    source: str = ""                    # what was loaded: a path or 'robustbench:NAME'
    data_dir: str | None = None
    download: bool = False
    _data: Any = field(default=None, repr=False)

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    @property
    def attack(self) -> AttackSpec:
        return metric_attack(self.config)

    @functools.cached_property
    def data(self) -> DataSplits:
        if self._data is not None:
            return self._data
        c = self.config
        return build_dataset(c.dataset, data_dir=self.data_dir or c.data_dir, download=self.download,
                             val_size=c.val_size, train_subset=c.train_subset, split_seed=c.split_seed)

    def split(self, name: str) -> ImageSet:
        """The images of split ``name`` ('train', 'val', 'test'); a missing one is one line."""
        return self.data.split(name)


Run = LoadedCheckpoint  # the name before the redesign; users' notebooks keep working


def _stored_config(meta: dict[str, Any]) -> TrainConfig:
    stored = dict(meta.get("config") or {}) if isinstance(meta.get("config"), dict) else {}
    # A checkpoint imported from foreign code may carry no config; its dataset key still says
    # which data it belongs to (the other settings are then the defaults).
    if "dataset" not in stored and meta.get("dataset"):
        stored["dataset"] = meta["dataset"]
    return config_from_dict(stored)


def load_run(spec: str | Path, device: str | torch.device = "cpu", *, data_dir: str | None = None,
             download: bool = False, data: DataSplits | None = None, dataset: str = "cifar10",
             threat: str = "Linf", model_dir: str | Path | None = None, allow_nonfinite: bool = False,
             max_params: int | None = None) -> LoadedCheckpoint:
    """The :class:`LoadedCheckpoint` of a checkpoint of ours (trained or imported) or of
    ``'robustbench:NAME'``.

    ``device``: where the model goes. ``data_dir`` / ``download``: where its data set lives
    (default: the run's own ``data_dir``). ``data``: splits already built for this checkpoint's
    data (e.g. shared by the checkpoints of one run). ``dataset``, ``threat`` and ``model_dir`` say
    which RobustBench entry a ``robustbench:`` name is (see :func:`awp.robustbench.load_robustbench`).
    The weights are checked before anything is allocated (finite unless ``allow_nonfinite``, which
    lists them in ``meta['nonfinite_weights']``; shapes; size within ``max_params``).
    """
    checks = dict(allow_nonfinite=allow_nonfinite, max_params=max_params)
    text = str(spec)
    robustbench = text.startswith(ROBUSTBENCH_PREFIX)
    if robustbench:
        name = text[len(ROBUSTBENCH_PREFIX):]
        if not name:
            raise UsageError("robustbench:NAME needs a model name, e.g. robustbench:Wu2020Adversarial_extra")
        model, meta = load_robustbench(name, dataset=dataset, threat=threat, model_dir=model_dir, **checks)
        model = model.to(device)
    else:
        model, meta = load_checkpoint(spec, map_location=device, **checks)
        meta["sha256"] = sha256_file(spec)
    config = _stored_config(meta)
    if not robustbench:  # RobustBench's zoo is built for its own data set
        check_fits_data(meta["arch"], meta["arch_kwargs"], config.dataset, text)
    return LoadedCheckpoint(model=model, meta=meta, config=config, source=text, data_dir=data_dir, download=download,
                            _data=data)


def pseudo_label_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, source: str = "pool",
                            device: str | torch.device = "cpu", data_dir: str | None = None,
                            allow_nonfinite: bool = False,
                            log: Callable[[str], None] | None = None) -> tuple[int, float | None]:
    """Pseudo-label ``source`` with a standard-trained checkpoint and write RST's ``.npz`` to ``out``.

    ``source``: 'pool' (the training images the checkpoint's run did not use) or an .npz/.pickle
    file (:func:`awp.data.load_unlabeled`). Returns (number of images, agreement with the true
    labels, or None when the source has none). ``out`` is checked first; non-finite weights are
    refused unless ``allow_nonfinite`` (then ``log`` is told).
    """
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
