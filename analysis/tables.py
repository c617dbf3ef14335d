"""The tables the paper's figures are drawn from (Wu, Xia, Wang, NeurIPS 2020, Fig. 1 and Sec. 4.2),
built from a catalog (:func:`analysis.catalog.collect_runs`) and the files its rows point to.

- :func:`epoch_table`: every AT and AT-AWP run's metrics.csv with the epochs at which its
  learning rate decays (robust overfitting, Rice et al. 2020);
- :func:`landscape_curve` / :func:`curves`: the mean landscape curve over directions of each row
  (its ``landscape.json`` and ``landscape.csv``, read by :func:`landscape.io.read_result`);
- :func:`method_entries`: the checkpoints that stand for AT, AT with early stopping, TRADES, MART,
  RST (and their AWP variants) in the method comparison (:mod:`analysis.rows` selects them);
- :func:`flatness_points` and :func:`gamma_table`: the scatter's checkpoints, the gamma sweep's
  last checkpoints.

Each raises :class:`~analysis.output.FigureSkipped` when the runs do not allow its figure; the
drawing is :mod:`analysis.figures`' job.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import rows as select
from analysis.catalog import unique_checkpoints
from analysis.output import FigureSkipped
from analysis.overfitting import decay_epochs
from analysis.readers import read_config, read_metrics
from landscape.curve import curve_spread

METHOD_ORDER = ("at", "trades", "mart", "rst")
EPOCH_COLUMNS = ["train_robust_acc", "test_robust_acc", "gap", "train_robust_loss", "test_robust_loss"]


def epoch_table(catalog: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch metrics (each run's metrics.csv) of the AT and AT-AWP runs, every seed, with the
    epochs at which each run's piecewise schedule decays the learning rate (``decays``)."""
    runs = catalog[(catalog["method"] == "at") & (catalog["awp_kind"] != "random")]
    runs = runs[(runs["awp_gamma"] == 0) | runs["label"].str.startswith("AT-AWP")]
    if (runs["awp_gamma"] == 0).sum() == 0:
        raise FigureSkipped("no AT run")
    tables = []
    for (run, label, run_dir, gamma), _ in runs.groupby(["run", "label", "run_dir", "awp_gamma"], sort=True):
        m = read_metrics(run_dir)
        if m.empty or "gap" not in m:
            continue
        decays = decay_epochs(read_config(run_dir)) if (Path(run_dir) / "config.json").exists() else []
        seed = runs.loc[runs["run"] == run, "seed"].iloc[0]
        tables.append(m[["epoch", *[c for c in EPOCH_COLUMNS if c in m]]].assign(
            run=run, label=label, seed=seed, awp_gamma=gamma, decays=" ".join(f"{d:g}" for d in decays)))
    if not tables:
        raise FigureSkipped("no metrics.csv in the AT runs")
    table = pd.concat(tables, ignore_index=True)
    return table[["run", "label", "seed", "awp_gamma", "decays", "epoch", *[c for c in EPOCH_COLUMNS if c in table]]]


def landscape_curve(landscape_dir: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Mean landscape curve over directions (alpha, loss_mean, loss_std, ...) and its settings."""
    from landscape import io as lio

    df, info = lio.read_result(str(landscape_dir))
    if "beta" in df.columns:  # a 2-D surface: its beta = 0 slice is the curve along d1
        df = df[np.isclose(df["beta"], 0.0)]
    return curve_spread(df), info.get("settings") or {}


def curves(rows: pd.DataFrame, **extra: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every row's mean landscape curve (over directions), tagged with its run, seed, file, epoch,
    gap and sharpness (and ``extra``), concatenated; plus the landscape settings."""
    records, settings = [], {}
    for _, r in rows.iterrows():
        s, settings = landscape_curve(r["landscape_dir"])
        records.append(s.assign(run=r["run"], seed=r.get("seed"), file=r["file"], epoch=r["epoch"],
                                is_best=r["is_best"], gap=r["gap"], sharpness=r["sharpness"],
                                test_robust_acc=r["test_robust_acc"], **extra))
    return pd.concat(records, ignore_index=True), settings


def method_entries(catalog: pd.DataFrame, with_awp: bool) -> list[dict[str, Any]]:
    """The method comparison's entries in order: ``name`` (the legend's), ``rows`` (one checkpoint
    with a landscape per seed), ``method`` and ``variant`` ('plain', 'awp' or 'early stop': AT's
    early-stopping checkpoints, right after plain AT)."""
    entries = []
    for method in METHOD_ORDER:
        part = select.plain(catalog, method)
        variants = [("plain", part)] + ([("awp", select.awp_runs(catalog, method))] if with_awp else [])
        for variant, runs in variants:
            last = select.last_checkpoints(runs)
            if not last.empty:
                entries.append({"name": last["label"].iloc[0], "rows": last, "method": method, "variant": variant})
            if method == "at" and variant == "plain":
                best = select.early_stopping(runs)
                if not best.empty:
                    epochs = ", ".join(str(e) for e in sorted(best["epoch"]))
                    entries.append({"name": f"AT (early stop, ep. {epochs})", "rows": best, "method": method,
                                    "variant": "early stop"})
    return entries


def flatness_points(catalog: pd.DataFrame, x: str) -> pd.DataFrame:
    """Every checkpoint (each set of weights once) with both ``x`` and the gap finite; 3 at least."""
    df = unique_checkpoints(catalog)
    df = df[np.isfinite(df[x].to_numpy(float)) & np.isfinite(df["gap"].to_numpy(float))]
    if len(df) < 3:
        raise FigureSkipped(f"fewer than 3 checkpoints with both {x} and gap")
    return df


def gamma_table(catalog: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every AT run: kind ('adversarial' for AT and AT-AWP, 'random' for
    random weight perturbation), gamma, gap and robust accuracies; plain AT (gamma 0) appears under
    both kinds, the common start of both curves."""
    last = select.last_checkpoints(catalog[catalog["method"] == "at"], needs=None)
    table = pd.DataFrame([{"run": r["run"], "seed": r.get("seed"),
                           "kind": "random" if r["awp_kind"] == "random" and r["awp_gamma"] > 0 else "adversarial",
                           "awp_gamma": r["awp_gamma"], "epoch": r["epoch"], "gap": r["gap"],
                           "train_robust_acc": r["train_robust_acc"], "test_robust_acc": r["test_robust_acc"]}
                          for _, r in last.iterrows()])
    if table.empty or table.loc[table["kind"] == "adversarial", "awp_gamma"].nunique() < 2:
        raise FigureSkipped("fewer than 2 values of gamma among the AT / AT-AWP runs")
    zero = table[table["awp_gamma"] == 0]
    table = pd.concat([table, zero.assign(kind="random")] if (table["kind"] == "random").any() else [table],
                      ignore_index=True)
    return table.sort_values(["kind", "awp_gamma", "run"]).reset_index(drop=True)
