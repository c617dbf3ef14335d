"""Landscape result files (the README's "Files"): a tidy table, its settings, its plot, and a
partial table that lets an interrupted run resume.

In ``<out>/<name>/``: ``landscape.csv`` (direction, alpha[, beta], loss, acc), ``landscape.json``
(every setting, the cache key, flatness scalars), ``landscape.png``; while running,
``landscape.partial.json`` holds the cache key and the rows done so far, rewritten atomically after
every point. The cache key is the sha256 of the checkpoint's bytes and of every setting that can
change a number, never the file name (reusing results by file name is the stale-cache fault of
Li et al.'s loss-landscape tool).

A point whose loss or accuracy is NaN or infinite is kept as such: ``nan``/``inf`` in the CSV, and
``null`` in the JSON files with its place listed under ``nonfinite_values`` (strict JSON,
:func:`awp.io.atomic_write_json`); ``landscape.json`` counts such points in ``nonfinite_points``
(:func:`nonfinite_results` says what a command must report).

Each file is replaced atomically, but the table and its settings are two files: a run killed
between writing ``landscape.csv`` and ``landscape.json`` would leave a new table beside the old
settings. So ``landscape.json`` records the sha256 of the table it describes (``csv_sha256``), and a
table that does not match is never reused nor read as a result; the partial table, removed only
once both files are in place, carries the run on.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from awp.errors import UserError
from awp.io import atomic_write_json, nonfinite_paths, read_csv_rows, sha256_file, write_csv

CSV, JSON, PNG, PARTIAL = "landscape.csv", "landscape.json", "landscape.png", "landscape.partial.json"
KEY_VERSION = 1  # bump when the meaning of a stored number changes


def cache_key(checkpoint_sha256: str, settings: dict[str, Any]) -> str:
    """sha256 of the checkpoint digest and the settings, as canonical JSON."""
    blob = json.dumps({"version": KEY_VERSION, "checkpoint": checkpoint_sha256, "settings": settings},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():  # a strict-JSON null is a value that was not finite
        out[k] = int(v) if k == "direction" else (math.nan if v is None else float(v))
    return out


def _nonfinite_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not all(math.isfinite(float(r[k])) for k in ("loss", "acc") if k in r)]


def nonfinite_results(rows: list[dict[str, Any]], info: dict[str, Any]) -> list[str]:
    """What of a finished landscape is not finite, one phrase each: the flatness scalars
    (``flatness.curvature is nan``) and the points with a NaN/inf loss or accuracy; [] when all is."""
    found = [f"{path} is {kind}" for path, kind in nonfinite_paths({"flatness": info.get("flatness") or {}}).items()]
    bad = _nonfinite_rows(rows)
    if bad:
        first = ", ".join(f"{k} {v:g}" for k, v in bad[0].items() if k not in ("loss", "acc"))
        found.append(f"{len(bad)} point(s) with a non-finite loss or accuracy (first: {first})")
    return found


def _table_matches(folder: Path, info: dict[str, Any]) -> bool:
    """Whether ``landscape.csv`` is the table that ``landscape.json`` describes."""
    if not (folder / CSV).is_file():
        return False
    if "csv_sha256" in info:
        return sha256_file(folder / CSV) == info["csv_sha256"]
    return len(read_csv_rows(folder / CSV)) == info.get("points_total")  # files written before csv_sha256


def load_done(folder: str | Path, key: str) -> list[dict[str, Any]]:
    """Rows already computed under ``key`` (finished result or partial table); [] when the key differs.

    Unreadable or mismatched files count as nothing done (the points are computed again), never
    as an error: they can only come from outside the toolkit, since every write is atomic.
    """
    folder = Path(folder)
    try:
        info = json.loads((folder / JSON).read_text())
        if isinstance(info, dict) and info.get("cache_key") == key and _table_matches(folder, info):
            return [_typed(r) for r in read_csv_rows(folder / CSV)]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    try:
        partial = json.loads((folder / PARTIAL).read_text())
        if isinstance(partial, dict) and partial.get("cache_key") == key:
            return [_typed(r) for r in partial.get("rows", [])]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return []


def save_partial(folder: str | Path, key: str, rows: list[dict[str, Any]]) -> None:
    """The rows done so far, atomically (called after every point)."""
    atomic_write_json(Path(folder) / PARTIAL, {"cache_key": key, "rows": rows})


def save_result(folder: str | Path, rows: list[dict[str, Any]], columns: list[str], info: dict[str, Any]) -> None:
    """The finished table, then its settings (with the table's sha256); the partial table is removed last."""
    folder = Path(folder)
    write_csv(folder / CSV, rows, columns)
    bad = len(_nonfinite_rows(rows))
    atomic_write_json(folder / JSON, {**info, **({"nonfinite_points": bad} if bad else {}),
                                      "csv_sha256": sha256_file(folder / CSV)})
    (folder / PARTIAL).unlink(missing_ok=True)


def find_results(root: str | Path) -> list[Path]:
    """Result folders under ``root`` (any depth; ``root`` may itself be one, or its landscape.json)."""
    root = Path(root)
    if root.is_file():
        return [root.parent]
    return [f.parent for f in sorted(root.rglob(JSON))]


def read_result(folder: str | Path):
    """(DataFrame, settings dict) of a finished result folder; a table that its settings do not
    describe (a run interrupted while saving) is a one-line :class:`UserError`."""
    import pandas as pd

    folder = Path(folder)
    try:
        info = json.loads((folder / JSON).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {folder / JSON}: {exc}") from exc
    if not isinstance(info, dict) or not _table_matches(folder, info):
        raise UserError(f"{folder / CSV} is missing or does not match {JSON} (interrupted while saving?); "
                        f"rerun `awp landscape` with the same settings to finish it")
    return pd.read_csv(folder / CSV), info
