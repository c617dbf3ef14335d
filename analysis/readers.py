"""Readers of the files analysis takes from run folders, each checking what it reads.

- :func:`read_config`: a run's ``config.json`` (the resolved training config of ``awp train``);
- :func:`read_metrics`: its ``metrics.csv`` (one row per epoch), with the robust generalization
  gap of Wu, Xia, Wang (NeurIPS 2020, Sec. 3) added: train minus test robust accuracy;
- :func:`check_checkpoint`: the metadata the catalog takes from a checkpoint read by
  :func:`awp.checkpoint.read_checkpoint` (epoch, method, awp_gamma, metrics, config, ...);
- :func:`read_measures`: a ``measures.json`` of ``awp measures``.

A hand-edited or damaged file (an empty or binary ``metrics.csv``, a column of words where numbers
belong, ``epoch: "abc"`` in a checkpoint, a config that is not a JSON object) is one
:class:`~awp.errors.UserError` line naming the file and what is wrong (exit status 1), never a
traceback; the checks are :func:`landscape.io.check_fields` and
:func:`landscape.io.numeric_columns`, the ones :func:`landscape.io.read_result` gives
``landscape.json`` and ``landscape.csv``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from awp.errors import UserError, one_line
from landscape.io import check_fields, numeric_columns

CONFIG, METRICS = "config.json", "metrics.csv"
MEASURED_SPLITS = ("train", "test")  # the two splits of the gap
QUANTITIES = ("clean_acc", "clean_loss", "robust_acc", "robust_loss")
METRIC_COLUMNS = [f"{s}_{q}" for s in MEASURED_SPLITS for q in QUANTITIES]
# The fields analysis reads, by kind (landscape.io.KINDS); other keys are left as they are.
CONFIG_FIELDS = {"dataset": "text", "method": "text", "awp_gamma": "number", "awp_kind": "text", "seed": "whole",
                 "epochs": "whole", "schedule": "text", "lr_milestones": "numbers"}
CHECKPOINT_FIELDS = {"dataset": "text", "arch": "text", "method": "text", "awp_gamma": "number", "epoch": "whole",
                     "metrics": "object", "config": "object"}
METRIC_FIELDS = {**dict.fromkeys([*METRIC_COLUMNS, "val_robust_acc"], "number"), "attack": "text"}
TEXT_COLUMNS = ("attack",)  # metrics.csv's one column of words: the attack that measured the row


def _json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is one line naming the file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not text at all (UnicodeDecodeError)
        raise UserError(f"cannot read {path}: {one_line(exc, 200)}") from exc
    if not isinstance(value, dict):
        raise UserError(f"{path} must hold a JSON object ({what}), got {type(value).__name__}")
    return value


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``config.json`` as a dict, the fields analysis reads checked (:data:`CONFIG_FIELDS`)."""
    path = Path(run_dir) / CONFIG
    config = _json(path, "the run's training config")
    check_fields(path, config, CONFIG_FIELDS)
    return config


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """A run's ``metrics.csv`` (one row per epoch) with the gap added; empty when absent.

    Every column but the attack's name must hold numbers (an empty cell is NaN: no validation
    split), and an ``epoch`` column must be there; a file that is empty, not text or not such a
    table is one line naming it.
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return pd.DataFrame()
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path} is empty (expected one row per epoch, as `awp train` writes it)")
    try:
        m = pd.read_csv(path)
    except (OSError, ValueError) as exc:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        raise UserError(f"cannot read {path}: {one_line(exc, 200)}") from exc
    if "epoch" not in m.columns:
        raise UserError(f"{path} has no 'epoch' column (expected one row per epoch, as `awp train` writes it)")
    m = numeric_columns(path, m, [c for c in m.columns if c not in TEXT_COLUMNS])
    if {"train_robust_acc", "test_robust_acc"} <= set(m.columns):
        m["gap"] = m["train_robust_acc"] - m["test_robust_acc"]
    return m


def check_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """One line naming ``path`` unless the checkpoint's metadata that the catalog reads has its
    types: :data:`CHECKPOINT_FIELDS`, its ``metrics`` (:data:`METRIC_FIELDS`; a NaN is a number,
    and absent metrics are recomputed) and its stored ``config`` (:data:`CONFIG_FIELDS`)."""
    check_fields(path, payload, CHECKPOINT_FIELDS)
    check_fields(path, payload.get("metrics") or {}, METRIC_FIELDS, "metrics.")
    check_fields(path, payload.get("config") or {}, CONFIG_FIELDS, "config.")


def read_measures(path: str | Path) -> tuple[str, dict[str, float]]:
    """(checkpoint sha256, measure -> value) of a ``measures.json``; a value that was not finite
    (JSON null) is NaN."""
    path = Path(path)
    info = _json(path, "the measures of one checkpoint, from `awp measures`")
    check_fields(path, info, {"checkpoint_sha256": "text", "measures": "object"})
    if not isinstance(info.get("checkpoint_sha256"), str) or not isinstance(info.get("measures"), dict):
        raise UserError(f"{path} has no checkpoint_sha256 and measures (expected a measures.json of `awp measures`)")
    values = {}
    for name, entry in info["measures"].items():
        check_fields(path, {name: entry}, {name: "object"}, "measures.")
        check_fields(path, entry or {}, {"value": "number"}, f"measures.{name}.")
        value = (entry or {}).get("value")
        values[name] = np.nan if value is None else float(value)
    return info["checkpoint_sha256"], values
