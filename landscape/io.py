"""Landscape result files (DESIGN.md, "Files on disk"): a tidy table, its settings, its plot, and a
partial table that lets an interrupted run resume.

In ``<out>/<name>/``: ``landscape.csv`` (direction, alpha[, beta], loss, acc), ``landscape.json``
(every setting, the cache key, flatness scalars), ``landscape.png``; while running,
``landscape.partial.json`` holds the cache key and the rows done so far, rewritten atomically after
every point. The cache key is the sha256 of the checkpoint's bytes and of every setting that can
change a number, never the file name (reusing results by file name is the stale-cache fault of
Li et al.'s tool, REFERENCE §7).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from awp.io import atomic_write_json, read_csv_rows, write_csv

CSV, JSON, PNG, PARTIAL = "landscape.csv", "landscape.json", "landscape.png", "landscape.partial.json"
KEY_VERSION = 1  # bump when the meaning of a stored number changes


def cache_key(checkpoint_sha256: str, settings: dict[str, Any]) -> str:
    """sha256 of the checkpoint digest and the settings, as canonical JSON."""
    blob = json.dumps({"version": KEY_VERSION, "checkpoint": checkpoint_sha256, "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        out[k] = int(v) if k == "direction" else float(v)
    return out


def load_done(folder: str | Path, key: str) -> list[dict[str, Any]]:
    """Rows already computed under ``key`` (finished result or partial table); [] when the key differs."""
    folder = Path(folder)
    try:
        info = json.loads((folder / JSON).read_text())
        if info.get("cache_key") == key and (folder / CSV).exists():
            return [_typed(r) for r in read_csv_rows(folder / CSV)]
    except (OSError, ValueError):
        pass
    try:
        partial = json.loads((folder / PARTIAL).read_text())
        if partial.get("cache_key") == key:
            return [_typed(r) for r in partial.get("rows", [])]
    except (OSError, ValueError):
        pass
    return []


def save_partial(folder: str | Path, key: str, rows: list[dict[str, Any]]) -> None:
    """The rows done so far, atomically (called after every point)."""
    atomic_write_json(Path(folder) / PARTIAL, {"cache_key": key, "rows": rows})


def save_result(folder: str | Path, rows: list[dict[str, Any]], columns: list[str], info: dict[str, Any]) -> None:
    """The finished table and its settings; the partial table is removed once both are written."""
    folder = Path(folder)
    write_csv(folder / CSV, rows, columns)
    atomic_write_json(folder / JSON, info)
    (folder / PARTIAL).unlink(missing_ok=True)


def read_result(folder: str | Path):
    """(DataFrame, settings dict) of a finished result folder."""
    import pandas as pd

    folder = Path(folder)
    return pd.read_csv(folder / CSV), json.loads((folder / JSON).read_text())
