"""Claims over seeds: paired differences (AWP minus base, seed by seed) with Student-t intervals.

A comparison of two methods trained with the same seeds (same initial weights and data order) is
judged on the per-seed differences d_s = b_s - a_s: their mean, and the 95% t-interval
mean +- t_{0.975, n-1} * sd / sqrt(n) (sd with n - 1 in the denominator). An effect "holds beyond
the seed spread" when that interval excludes 0. With three seeds t_{0.975, 2} = 4.30, so the mean
must exceed about 2.5 standard deviations of the differences.

Spreads over seeds are the sample standard deviation (n - 1; 0 with one seed) of :func:`mean_sd`,
the one definition behind every "mean +- sd over seeds" of the figures, the summary and the
report; :func:`over_seeds` applies it to each group of a table.
"""
from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
from scipy import stats

from awp.errors import UsageError

CONFIDENCE = 0.95


def paired_difference(base: Sequence[float], other: Sequence[float],
                      confidence: float = CONFIDENCE) -> dict[str, object]:
    """Differences ``other - base`` seed by seed: per-seed values, mean, sd and the t-interval
    (``lo``, ``hi``; NaN with a single seed) and ``sign``: +1 or -1 when the interval excludes 0
    on that side, 0 when it does not (or cannot, with one seed)."""
    if len(base) != len(other):
        raise UsageError(f"paired difference needs the same seeds on both sides, got {len(base)} and {len(other)}")
    if not base:
        raise UsageError("paired difference needs at least one seed")
    diffs = [float(b) - float(a) for a, b in zip(base, other)]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        sd = half = float("nan")
    else:
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    sign = 1 if lo > 0 else -1 if hi < 0 else 0
    return {"per_seed": diffs, "n": n, "mean": mean, "sd": sd, "lo": lo, "hi": hi,
            "confidence": confidence, "sign": sign}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 with one value) of a seed list (NaN, NaN: empty)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


def over_seeds(table: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    """:func:`mean_sd` of each of ``cols`` over the rows (seeds) of each ``by`` group: one row per
    group (sorted) with ``{col}_mean``, ``{col}_sd`` and, where the table has a ``run`` column,
    ``n_seeds``. A seed without the value (NaN) is left out of its group."""
    rows = []
    for key, part in table.groupby(by, sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for col in cols:
            row[f"{col}_mean"], row[f"{col}_sd"] = mean_sd(part[col].dropna().astype(float).tolist())
        if "run" in part:
            row["n_seeds"] = part["run"].nunique()
        rows.append(row)
    return pd.DataFrame(rows, columns=[*by, *[f"{c}_{s}" for c in cols for s in ("mean", "sd")],
                                       *(["n_seeds"] if "run" in table else [])])
