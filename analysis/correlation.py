"""Flatness versus robust generalization gap: rank and linear correlation with bootstrap intervals.

Wu et al. 2020 (Fig. 1) relate a flatter adversarial weight loss landscape to a smaller robust
generalization gap by eye; Stutz et al. 2021 ("Relating adversarially robust generalization to
flat minima") quantify it with correlations across checkpoints. We report Pearson, Spearman and
Kendall (tau-b) coefficients with scipy's p-values and percentile bootstrap confidence intervals
(checkpoints resampled with replacement, a seeded ``numpy.random.Generator``).

The functional form :func:`correlation` (two arrays -> dict) and the table form :func:`correlate`
(DataFrame -> one row per group) share one implementation, as in torchmetrics.
:func:`correlation_table` is ``correlation.csv`` of ``awp figures`` (sharpness and curvature
against the gap, over all checkpoints, per run and per label), written by :func:`write_correlation`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.catalog import unique_checkpoints
from awp.errors import UsageError
from awp.registry import unknown_name

STATISTICS = ("pearson", "spearman", "kendall")
MIN_POINTS = 3
CORRELATION_CSV = "correlation.csv"
FLATNESS = ("sharpness", "curvature")  # the landscape scalars of correlation.csv


class NoCorrelation(UsageError):
    """Too few checkpoints with both a flatness scalar and the gap for any correlation."""


def check_columns(df: pd.DataFrame, columns: Sequence[str], kind: str = "column") -> None:
    """One :class:`UsageError` line for the first of ``columns`` that ``df`` lacks, naming the
    closest columns it has and then all of them (:func:`awp.registry.unknown_name`)."""
    names = [str(c) for c in df.columns]
    for col in columns:
        if col not in df.columns:
            raise unknown_name(kind, col, names, listing=", ".join(names))  # a catalog has more than 16


def _check(n: int, x: str, y: str) -> None:
    if n < MIN_POINTS:
        raise UsageError(f"need at least {MIN_POINTS} checkpoints with both {x} and {y} to correlate, got {n}")


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (B, n) arrays; NaN where a row is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def _kendall_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row pair: sum sign(da) sign(db) / sqrt(sum sign(da)^2 sum sign(db)^2)
    over pairs i < j, which is tau-b's tie correction written with sign matrices."""
    sa = np.sign(a[:, :, None] - a[:, None, :])
    sb = np.sign(b[:, :, None] - b[:, None, :])
    num = (sa * sb).sum((1, 2))
    den = np.sqrt(np.abs(sa).sum((1, 2)) * np.abs(sb).sum((1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def statistics_rows(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Pearson, Spearman (Pearson of average ranks) and Kendall tau-b of each row of (B, n) arrays,
    vectorized for the bootstrap; equal to scipy's pearsonr / spearmanr / kendalltau row by row."""
    a = np.atleast_2d(np.asarray(a, dtype=float))
    b = np.atleast_2d(np.asarray(b, dtype=float))
    return {"pearson": _pearson_rows(a, b),
            "spearman": _pearson_rows(stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)),
            "kendall": _kendall_rows(a, b)}


def correlation(x: Any, y: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0,
                names: tuple[str, str] = ("x", "y")) -> dict[str, float]:
    """Correlations of two paired arrays (points where either is NaN/inf are dropped).

    Returns n, and for each of pearson / spearman / kendall: the coefficient, its p-value
    (scipy, two-sided) and ``*_lo`` / ``*_hi``, the ``ci`` percentile bootstrap interval from
    ``n_boot`` resamples of the points drawn with ``numpy.random.default_rng(seed)``; resamples
    where a statistic is undefined (all x or all y equal) are left out of its interval.
    Fewer than 3 usable points -> :class:`UsageError`.
    """
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise UsageError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if not 0 < ci < 1:
        raise UsageError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 0:
        raise UsageError(f"n_boot must be >= 0, got {n_boot}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    _check(n, *names)
    out: dict[str, float] = {"n": n}
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():  # constant inputs: scipy warns and returns NaN, which we keep
            warnings.simplefilter("ignore")
            point = {"pearson": stats.pearsonr(x, y), "spearman": stats.spearmanr(x, y),
                     "kendall": stats.kendalltau(x, y)}
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    boots = _bootstrap(x, y, n_boot, seed)
    for name in STATISTICS:
        out[name] = float(point[name][0])
        out[f"{name}_p"] = float(point[name][1])
        values = boots[name][np.isfinite(boots[name])]
        out[f"{name}_lo"], out[f"{name}_hi"] = ((float(np.percentile(values, lo_q)), float(np.percentile(values, hi_q)))
                                                if len(values) else (np.nan, np.nan))
    return out


def _bootstrap(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = len(x)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in STATISTICS}
    chunk = max(1, 2_000_000 // max(n * n, 1))  # bounds the (chunk, n, n) sign arrays of Kendall
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        for name, values in statistics_rows(x[idx], y[idx]).items():
            parts[name].append(values)
        done += b
    return {s: (np.concatenate(v) if v else np.empty(0)) for s, v in parts.items()}


def correlate(df: pd.DataFrame, x: str = "sharpness", y: str = "gap", *, groupby: str | None = None,
              n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Correlation of columns ``x`` and ``y`` of a catalog (:func:`analysis.catalog.collect_runs`).

    One row per group of ``groupby`` (e.g. ``'run'``: across the epochs of each run; ``'label'``),
    or a single row ``group='all'`` when None. Columns: group, x, y, n, then pearson, pearson_p,
    pearson_lo, pearson_hi and the same for spearman and kendall (see :func:`correlation`).
    A group with fewer than 3 points with finite x and y raises :class:`UsageError` when it is the
    only group; otherwise it is kept with NaN statistics and its n, so no group silently vanishes.
    """
    check_columns(df, (x, y) + ((groupby,) if groupby else ()))
    groups = [("all", df)] if groupby is None else list(df.groupby(groupby, sort=True))
    rows = []
    for key, part in groups:
        base = {"group": key, "x": x, "y": y}
        try:
            rows.append({**base, **correlation(part[x].to_numpy(float), part[y].to_numpy(float),
                                               n_boot=n_boot, ci=ci, seed=seed, names=(x, y))})
        except UsageError:
            if len(groups) == 1:
                raise
            n = int((np.isfinite(part[x].to_numpy(float)) & np.isfinite(part[y].to_numpy(float))).sum())
            rows.append({**base, "n": n})
    if groupby is not None and all(not np.isfinite(r.get("pearson", np.nan)) and r["n"] < MIN_POINTS for r in rows):
        n = max(r["n"] for r in rows)
        raise UsageError(f"need at least {MIN_POINTS} checkpoints with both {x} and {y} to correlate "
                         f"in some {groupby}, got at most {n}")
    columns = ["group", "x", "y", "n"] + [f"{s}{suffix}" for s in STATISTICS for suffix in ("", "_p", "_lo", "_hi")]
    table = pd.DataFrame(rows).reindex(columns=columns)
    table["n"] = table["n"].astype(int)
    return table


def correlation_table(catalog: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """``correlation.csv``: each of :data:`FLATNESS` against the gap over all checkpoints (each set
    of weights once), per run and per label (groups with fewer than 3 points have n and NaN
    statistics); column ``groupby`` says which. :class:`NoCorrelation` when no scalar has 3 points."""
    df = unique_checkpoints(catalog)
    tables = []
    for x in FLATNESS:
        if x not in df or not np.isfinite(df[x].to_numpy(float)).any():
            continue
        for by in (None, "run", "label"):
            try:
                tables.append(correlate(df, x, "gap", groupby=by, n_boot=n_boot, seed=seed)
                              .assign(groupby=by or "all"))
            except UsageError:  # too few points in every group of this grouping: the others may do
                pass
    if not tables:
        raise NoCorrelation("fewer than 3 checkpoints with both sharpness and gap: no correlation")
    table = pd.concat(tables, ignore_index=True)
    return table[["groupby"] + [c for c in table.columns if c != "groupby"]]


def write_correlation(table: pd.DataFrame, out_dir: str | Path) -> Path:
    """Write ``table`` (:func:`correlation_table`) as ``out_dir/correlation.csv``; returns its path."""
    from awp.io import atomic_write_text

    path = Path(out_dir) / CORRELATION_CSV
    atomic_write_text(path, table.to_csv(index=False))
    return path
