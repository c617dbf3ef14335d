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

Reading a finished result (:func:`read_result`) checks what it returns: a hand-edited or damaged
``landscape.json`` (``flatness`` a list, ``settings.attack`` a string, a sample count that is not a
whole number, ...) or a table whose columns are not numbers is one :class:`UserError` line naming
the file and the value. :func:`check_fields` and :func:`numeric_columns` are those checks, shared
with the readers of ``analysis``. :func:`load_done`, the cache's reader, instead counts anything unreadable as nothing
done: the points are computed again.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from awp.errors import UserError, one_line
from awp.io import atomic_write_json, nonfinite_paths, read_csv_rows, sha256_file, write_csv

if TYPE_CHECKING:
    import pandas as pd

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
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
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
        if root.name != JSON:
            raise UserError(f"{root} is not a {JSON} file (give a folder of landscapes or a {JSON})")
        return [root.parent]
    return [f.parent for f in sorted(root.rglob(JSON))]


# ------------------------------------------------------------------------------ checked reading
def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # True is an int to Python


KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "text": (lambda v: isinstance(v, str), "a string"),
    "number": (_is_number, "a number"),
    "whole": (lambda v: _is_number(v) and float(v).is_integer(), "a whole number"),
    "numbers": (lambda v: isinstance(v, list) and all(_is_number(x) for x in v), "a list of numbers"),
    "object": (lambda v: isinstance(v, dict), "an object"),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def check_fields(path: str | Path, values: Mapping[str, Any], schema: Mapping[str, str], where: str = "") -> None:
    """One :class:`UserError` line naming ``path`` unless every key of ``schema`` that ``values``
    holds is of its kind (:data:`KINDS`; None, JSON's null, is always allowed: absent or not finite).
    ``where`` prefixes the key in the message (``settings.attack.``)."""
    for key, kind in schema.items():
        value = values.get(key)
        test, wanted = KINDS[kind]
        if value is not None and not test(value):
            raise UserError(f"{path}: {where}{key} must be {wanted}, got {_shown(value)}")


INFO_FIELDS = {"checkpoint_sha256": "text", "cache_key": "text", "csv_sha256": "text", "points_total": "whole",
               "flatness": "object", "settings": "object"}
SETTINGS_FIELDS = {"kind": "text", "normalization": "text", "loss": "text", "attack": "object", "split": "text",
                   "samples": "whole", "alphas": "numbers", "betas": "numbers"}
ATTACK_FIELDS = {"name": "text", "steps": "whole"}
TABLE_COLUMNS = ("direction", "alpha", "beta", "loss", "acc")  # every one a number where present


def _check_info(path: Path, info: Any) -> None:
    """What :func:`read_result` returns of ``landscape.json`` is of the types its readers use."""
    if not isinstance(info, dict):
        raise UserError(f"{path} must hold a JSON object (a landscape's settings), got {type(info).__name__}")
    check_fields(path, info, INFO_FIELDS)
    flatness = info.get("flatness") or {}
    check_fields(path, flatness, dict.fromkeys(flatness, "number"), "flatness.")
    settings = info.get("settings") or {}
    check_fields(path, settings, SETTINGS_FIELDS, "settings.")
    check_fields(path, settings.get("attack") or {}, ATTACK_FIELDS, "settings.attack.")


def numeric_columns(path: str | Path, df: "pd.DataFrame", columns: Any) -> "pd.DataFrame":
    """``df`` (read from the CSV ``path``) with each of ``columns`` that it has as numbers (an
    empty cell, ``nan`` or ``inf`` is a number); a cell that is not is one :class:`UserError` line
    naming the file, the column, the value and its line."""
    import pandas as pd

    for col in (c for c in columns if c in df.columns):
        if pd.api.types.is_numeric_dtype(df[col]):
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        words = df[col][df[col].notna() & values.isna()]
        if len(words):
            raise UserError(f"{path}: column {col!r} must hold numbers, got {words.iloc[0]!r} "
                            f"on line {int(words.index[0]) + 2}")  # line 1 is the header
        df[col] = values
    return df


def _check_table(path: Path, df: "pd.DataFrame") -> "pd.DataFrame":
    missing = [c for c in ("alpha", "loss") if c not in df.columns]
    if missing:
        raise UserError(f"{path} has no {missing[0]!r} column (expected {', '.join(TABLE_COLUMNS)})")
    return numeric_columns(path, df, TABLE_COLUMNS)


def read_result(folder: str | Path) -> "tuple[pd.DataFrame, dict[str, Any]]":
    """(DataFrame, settings dict) of a finished result folder, both checked (module docstring); a
    table that its settings do not describe (a run interrupted while saving) is a one-line
    :class:`UserError` too."""
    import pandas as pd

    folder = Path(folder)
    try:
        info = json.loads((folder / JSON).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {folder / JSON}: {one_line(exc, 200)}") from exc
    _check_info(folder / JSON, info)
    try:
        matches = _table_matches(folder, info)
    except (OSError, ValueError) as exc:  # a binary table, read by row count (files before csv_sha256)
        raise UserError(f"cannot read {folder / CSV}: {one_line(exc, 200)}") from exc
    if not matches:
        raise UserError(f"{folder / CSV} is missing or does not match {JSON} (interrupted while saving?); "
                        f"rerun `awp landscape` with the same settings to finish it")
    try:
        df = pd.read_csv(folder / CSV)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {folder / CSV}: {one_line(exc, 200)}") from exc
    return _check_table(folder / CSV, df), info
