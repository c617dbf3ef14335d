"""Which catalog rows stand for what: a run's last checkpoint, its early-stopping checkpoint, its
saved epochs; a method's plain runs and its AWP runs at one gamma.

Wu, Xia, Wang (NeurIPS 2020, Fig. 1) compare the *last* checkpoint of each method with AT's
*early-stopping* one (best validation robust accuracy, Rice et al. 2020): ``best.pt`` here. The
figures (:mod:`analysis.figures`) and the demo's summary (:mod:`analysis.summary`) both select
through these functions, so the two never disagree about which checkpoint is "the last".

Rows are those of :func:`analysis.catalog.collect_runs`: ``best.pt`` rows have ``is_best``, every
other row is an epoch checkpoint. ``needs`` names the column a row must have filled to count
(``landscape_dir`` for a figure that draws the landscape, ``sharpness`` for a number that reports
it; None: every row).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

LANDSCAPE = "landscape_dir"


def having(df: pd.DataFrame, needs: str | None = LANDSCAPE) -> pd.DataFrame:
    """The rows whose column ``needs`` is filled (every row when None)."""
    return df if needs is None else df[df[needs].notna()]


def epoch_checkpoints(df: pd.DataFrame, needs: str | None = LANDSCAPE) -> pd.DataFrame:
    """The epoch checkpoints (every row but best.pt) with ``needs`` filled."""
    return having(df[~df["is_best"]], needs)


def last_checkpoints(df: pd.DataFrame, needs: str | None = LANDSCAPE) -> pd.DataFrame:
    """Each run's last epoch checkpoint among those with ``needs`` filled, one row per run."""
    part = epoch_checkpoints(df, needs)
    if part.empty:
        return part
    return part.loc[part.groupby("run")["epoch"].idxmax()]


def early_stopping(df: pd.DataFrame, needs: str | None = LANDSCAPE) -> pd.DataFrame:
    """The early-stopping checkpoints (best.pt) with ``needs`` filled."""
    return having(df[df["is_best"]], needs)


def by_seed(rows: pd.DataFrame) -> dict[int, Any]:
    """seed -> row, for rows that hold one row per seed (e.g. :func:`last_checkpoints` of one method)."""
    return {int(r["seed"]): r for _, r in rows.iterrows()}


def plain(df: pd.DataFrame, method: str) -> pd.DataFrame:
    """The runs of ``method`` without a weight perturbation (gamma 0)."""
    return df[(df["method"] == method) & (df["awp_gamma"] == 0)]


def _awp_sweep(df: pd.DataFrame, method: str | None = None) -> pd.Series:
    """Whether a row is an AWP run (adversarial perturbation, gamma > 0), of ``method`` when given."""
    awp = (df["awp_gamma"] > 0) & (df["awp_kind"] != "random")
    return awp if method is None else awp & (df["method"] == method)


def awp_runs(df: pd.DataFrame, method: str) -> pd.DataFrame:
    """The AWP runs of ``method`` at one gamma: in a gamma sweep, the most common gamma (ties to
    the smallest), which stands for "method-AWP" when no gamma is chosen (:func:`select_awp_gamma`)."""
    part = df[_awp_sweep(df, method)]
    if part.empty:
        return part
    counts = part.groupby("awp_gamma")["run"].nunique()
    gamma = counts[counts == counts.max()].index.min()
    return part[part["awp_gamma"] == gamma]


def select_awp_gamma(catalog: pd.DataFrame, awp_gammas: dict[str, float]) -> pd.DataFrame:
    """Keep, for each method named in ``awp_gammas``, only the AWP runs at that gamma (and all
    non-AWP and random-perturbation runs): the method comparison then shows the chosen AWP
    variant, not a gamma sweep's other points."""
    keep = pd.Series(True, index=catalog.index)
    for method, gamma in awp_gammas.items():
        keep &= ~_awp_sweep(catalog, method) | np.isclose(catalog["awp_gamma"], gamma)
    return catalog[keep]
