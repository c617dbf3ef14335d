"""The house style of the figures (sizes for a two-column paper page, the paired palette of
Wu et al. 2020's Fig. 1b), the axis labels, and the small drawing steps the figures share.

A module of its own so that plotting code (:mod:`analysis.figures`, :mod:`analysis.ranking`,
:mod:`analysis.output`) shares it without importing one another. Nothing here selects a matplotlib
backend: figures are plain ``matplotlib.figure.Figure`` objects, so a notebook keeps its own.
"""
from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from landscape.plot import axis_label, loss_label

STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7}
GAP_LABEL = "robust gap (train − test robust acc., pp)"
# Paired palette: dark shade for the plain method, light shade for its AWP variant.
PAIRS = {"at": ("#1f78b4", "#a6cee3"), "trades": ("#33a02c", "#b2df8a"), "mart": ("#e31a1c", "#fb9a99"),
         "rst": ("#6a3d9a", "#cab2d6"), "at-es": ("#ff7f00", "#fdbf6f")}


def subplots(*args: Any, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` without pyplot: no backend is chosen for the caller (a notebook keeps its own)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def labels_for(settings: dict[str, Any]) -> tuple[str, str]:
    """The x and y labels of a landscape drawn with ``settings`` (its landscape.json's)."""
    attack = settings.get("attack") or {}
    return (axis_label(settings.get("normalization", "filter")),
            loss_label(settings.get("loss", "adversarial"), attack.get("steps")))


def pct(v: Any) -> Any:
    """Fractions as percentages (accuracies in %, the gap in percentage points)."""
    return 100 * np.asarray(v, dtype=float)


def band(ax: Any, stats: pd.DataFrame, col: str, x: str = "epoch", scale: float = 100.0, *, lw: float = 1.2,
         opacity: float = 0.18, **kw: Any) -> None:
    """Mean of ``col`` over seeds as a line, +-1 standard deviation over seeds as a band
    (``stats``: :func:`analysis.seeds.over_seeds`, one row per ``x``)."""
    mean, sd = scale * stats[f"{col}_mean"], scale * stats[f"{col}_sd"]
    ax.plot(stats[x], mean, lw=lw, **kw)
    ax.fill_between(stats[x], mean - sd, mean + sd, color=kw.get("color"), alpha=opacity, lw=0)


def seeds_note(table: pd.DataFrame) -> str:
    """'mean ± sd over 3 seeds' (or '2-3 seeds'), counting the runs of each label."""
    n = table.groupby("label")["run"].nunique()
    return f"mean ± sd over {n.min()} seeds" if n.min() == n.max() else f"mean ± sd over {n.min()}-{n.max()} seeds"


def label_colors(table: pd.DataFrame) -> tuple[list[str], dict[str, Any]]:
    """The table's labels, AT first, and a tab10 colour for each."""
    labels = sorted(table["label"].unique(), key=lambda s: (s != "AT", s))
    return labels, dict(zip(labels, matplotlib.colormaps.get_cmap("tab10").colors))


def dedupe_legend(ax: Any, **kwargs: Any) -> None:
    """A legend with each label once (seeds draw several lines under one label)."""
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, l in zip(handles, labels):  # noqa: E741 (handle, label)
        seen.setdefault(l, h)
    if seen:
        ax.legend(list(seen.values()), list(seen.keys()), **kwargs)


def finish(axes: Any, titles: tuple[str, ...], ylabels: tuple[str, ...], xlabel: str = "epoch") -> None:
    """Labels, title, grid and a deduplicated legend for each of ``axes``."""
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        dedupe_legend(ax)
