"""The figures of Wu, Xia, Wang (NeurIPS 2020), drawn from any set of run folders.

:data:`FIGURES` is the registry of figures (:class:`awp.registry.Registry`); each entry draws one
figure from a catalog (:func:`analysis.catalog.collect_runs`) and returns it unsaved
(:class:`~analysis.output.Drawing`), with one signature: ``draw(catalog, *, n_boot, seed)``.

- ``fig_gap_over_epochs``: train and test robust accuracy and their gap over epochs, AT vs AT-AWP
  (robust overfitting, Rice et al. 2020; the gap of Wu et al. 2020, Sec. 3).
- ``fig_robust_overfitting``: train and test robust accuracy and robust loss over epochs, AT vs
  AT-AWP, the learning-rate decays marked (the paper's Fig. 1 and Rice et al.'s robust overfitting).
- ``fig_at_epochs``: Fig. 1a: AT's adversarial weight loss landscape at several epochs
  (sequential colours, colour bar), the early-stopping checkpoint dashed black, and the gap there.
- ``fig_methods`` / ``fig_methods_awp``: Fig. 1b: landscapes of the last checkpoints of AT, AT
  with early stopping, TRADES, MART, RST (and their AWP variants, paired colours, dashed), with a
  bar chart of their gaps.
- ``fig_flatness_vs_gap``: sharpness against gap over all checkpoints with Spearman and Kendall
  correlations (the quantitative version of Fig. 1, after Stutz et al. 2021).
- ``fig_gamma``: gap and test robust accuracy against gamma, AWP vs random weight perturbation of
  the same relative size (Sec. 4.2 of the paper).

Entries marked ``sweep`` use every run of a gamma sweep; the others show each method's chosen AWP
gamma (:func:`analysis.rows.select_awp_gamma`). With several seeds per method, curves and bars
show the mean over seeds (:func:`analysis.seeds.mean_sd`) with a +-1 standard deviation band or
error bar, and the CSVs keep every seed's rows. :func:`make_figures` draws whatever the runs allow,
then writes each figure as PNG and PDF beside the CSV it was drawn from
(:func:`analysis.output.save_figure`) and ``correlation.csv``, and notes what it skipped and why.
Accuracies are shown in %, the gap in percentage points; alpha in filter norms (the landscape's
normalization), the loss is the adversarial CE named by its attack.

The tables drawn from are built in :mod:`analysis.tables`. Names that lived here are importable
from here still: ``FigureSkipped`` and ``FigureList`` (now :mod:`analysis.output`),
``select_awp_gamma`` (:mod:`analysis.rows`), ``write_correlation`` (:mod:`analysis.correlation`).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib
import numpy as np
import pandas as pd

from analysis import rows as select
from analysis import tables
from analysis.catalog import collect_landscapes, join_landscapes, legend_label
from analysis.correlation import NoCorrelation, correlation, correlation_table, write_correlation
from analysis.output import Drawing, FigureList, FigureSkipped, save_figure
from analysis.rows import select_awp_gamma
from analysis.seeds import mean_sd, over_seeds
from analysis.style import (GAP_LABEL, PAIRS, STYLE, band, finish, label_colors, labels_for, pct, seeds_note,
                            subplots)
from awp.checks import check_int, check_seed
from awp.registry import Registry

__all__ = ["FIGURES", "FigureEntry", "FigureList", "FigureSkipped", "make_figures", "select_awp_gamma",
           "write_correlation"]


@dataclass(frozen=True)
class FigureEntry:
    """A registered figure: ``draw(catalog, *, n_boot, seed) -> Drawing``, and ``sweep``: whether it
    uses every run of a gamma sweep rather than each method's chosen AWP gamma."""

    draw: Callable[..., Drawing]
    sweep: bool = False


FIGURES: Registry[FigureEntry] = Registry("figure")


def register(name: str, *, sweep: bool = False) -> Callable[[Callable[..., Drawing]], Callable[..., Drawing]]:
    """Register a draw function as figure ``name``, described by its docstring's first line."""
    def add(draw: Callable[..., Drawing]) -> Callable[..., Drawing]:
        FIGURES.register(name, FigureEntry(draw, sweep), description=inspect.getdoc(draw).splitlines()[0])
        return draw

    return add


def _gap_attack(catalog: pd.DataFrame) -> str:
    return catalog["attack"].dropna().iloc[0] if catalog["attack"].notna().any() else "PGD"


# --------------------------------------------------------------------------- (a) over epochs
@register("fig_gap_over_epochs")
def fig_gap_over_epochs(catalog: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Drawing:
    """Train and test robust accuracy and their gap over epochs, AT vs AT-AWP (mean +- sd over seeds)."""
    table = tables.epoch_table(catalog)
    stats = over_seeds(table, ["label", "epoch"], ["train_robust_acc", "test_robust_acc", "gap"])
    with matplotlib.rc_context(STYLE):
        fig, axes = subplots(1, 3, figsize=(7.2, 2.6))
        labels, colors = label_colors(table)
        for label in labels:
            t = stats[stats["label"] == label]
            band(axes[0], t, "train_robust_acc", color=colors[label], ls="-", label=f"{label}: train")
            band(axes[0], t, "test_robust_acc", color=colors[label], ls="--", label=f"{label}: test")
            band(axes[1], t, "test_robust_acc", color=colors[label], ls="--", label=label)
            band(axes[2], t, "gap", color=colors[label], ls="-", label=label)
        finish(axes, ("train (solid) and test (dashed)\nrobust accuracy", "test robust accuracy",
                      "robust generalization gap"),
               ("robust accuracy (%)", "test robust accuracy (%)", GAP_LABEL))
        fig.suptitle(f"Robust overfitting, AT vs AT-AWP ({_gap_attack(catalog)}; {seeds_note(table)})", fontsize=9)
    shown = table.drop(columns=["train_robust_loss", "test_robust_loss", "decays"], errors="ignore")
    return Drawing("fig_gap_over_epochs", fig, shown)


@register("fig_robust_overfitting")
def fig_robust_overfitting(catalog: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Drawing:
    """Robust accuracy and robust loss over epochs, AT vs AT-AWP, the learning-rate decays marked.

    In the spirit of the paper's Fig. 1 and Rice et al.'s; mean over seeds with +-1 sd bands, the
    decays read from each run's config (lr_milestones x epochs)."""
    table = tables.epoch_table(catalog)
    if not {"train_robust_loss", "test_robust_loss"} <= set(table.columns):
        raise FigureSkipped("the AT runs' metrics.csv have no robust loss")
    cols = ["train_robust_acc", "test_robust_acc", "train_robust_loss", "test_robust_loss"]
    stats = over_seeds(table, ["label", "epoch"], cols)
    decays = sorted({float(d) for text in table["decays"] for d in str(text).split()})
    with matplotlib.rc_context(STYLE):
        fig, axes = subplots(1, 2, figsize=(7.2, 2.8))
        labels, colors = label_colors(table)
        for label in labels:
            t = stats[stats["label"] == label]
            for split, ls in (("train", "-"), ("test", "--")):
                band(axes[0], t, f"{split}_robust_acc", color=colors[label], ls=ls, label=f"{label}: {split}")
                band(axes[1], t, f"{split}_robust_loss", scale=1.0, color=colors[label], ls=ls,
                     label=f"{label}: {split}")
        for ax in axes:
            for i, d in enumerate(decays):
                ax.axvline(d, color="0.4", ls=":", lw=1, label="lr decay" if i == 0 else None)
        finish(axes, ("robust accuracy: train (solid), test (dashed)", "robust loss: train (solid), test (dashed)"),
               ("robust accuracy (%)", "robust loss (CE)"))
        fig.suptitle(f"Robust overfitting after the lr decay, AT vs AT-AWP ({_gap_attack(catalog)}; "
                     f"{seeds_note(table)})", fontsize=9)
    return Drawing("fig_robust_overfitting", fig, table)


# ------------------------------------------------------------------------------ (b) AT epochs
def _at_epoch_rows(catalog: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """AT's epoch checkpoints with a landscape (at least 2 epochs) and its early-stopping ones."""
    at = select.plain(catalog, "at")
    epochs_rows = select.epoch_checkpoints(at)
    if epochs_rows.empty:
        raise FigureSkipped("no AT checkpoint with a landscape")
    if epochs_rows["epoch"].nunique() < 2:
        raise FigureSkipped("the AT runs have fewer than 2 epoch checkpoints with a landscape")
    best = select.early_stopping(at)
    return epochs_rows, best[best["run"].isin(epochs_rows["run"].unique())]


def _gap_per_epoch(bx: Any, epochs_rows: pd.DataFrame, best: pd.DataFrame, color: Callable[[Any], Any]) -> None:
    gaps = over_seeds(epochs_rows, ["epoch"], ["gap"])
    ep = gaps["epoch"].to_numpy()
    bx.errorbar(ep, pct(gaps["gap_mean"]), yerr=pct(gaps["gap_sd"]), color="0.6", lw=1, zorder=1, capsize=2)
    bx.scatter(ep, pct(gaps["gap_mean"]), c=[color(e) for e in ep], s=30, zorder=2,
               edgecolor="k", lw=0.3, label="epoch checkpoints (mean ± sd)")
    for i, (_, r) in enumerate(best.iterrows()):
        bx.scatter([r["epoch"]], [pct(r["gap"])], marker="*", s=90, color="black", zorder=3,
                   label="early stopping (each seed)" if i == 0 else None)
    bx.set_xlabel("epoch")
    bx.set_ylabel(GAP_LABEL)
    bx.set_title("robust generalization gap")
    bx.grid(alpha=0.3)
    bx.legend(loc="upper left")


@register("fig_at_epochs")
def fig_at_epochs(catalog: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Drawing:
    """Fig. 1a: AT's landscape at several epochs and at early stopping, and the gap per epoch.

    Colour is the epoch (each curve the mean over seeds); the early-stopping checkpoints' mean is
    dashed black; the gap per epoch is the mean +- sd over seeds."""
    epochs_rows, best = _at_epoch_rows(catalog)
    curves, settings = tables.curves(epochs_rows)
    if not best.empty:
        curves = pd.concat([curves, tables.curves(best)[0]], ignore_index=True)
    n_runs = epochs_rows["run"].nunique()
    with matplotlib.rc_context(STYLE):
        fig, (ax, bx) = subplots(1, 2, figsize=(7.2, 3.0), gridspec_kw={"width_ratios": [1.4, 1]})
        cmap = matplotlib.colormaps.get_cmap("viridis")
        norm = matplotlib.colors.Normalize(vmin=epochs_rows["epoch"].min(), vmax=epochs_rows["epoch"].max())
        for epoch, c in curves[~curves["is_best"]].groupby("epoch"):
            m = over_seeds(c, ["alpha"], ["loss_mean"])
            ax.plot(m["alpha"], m["loss_mean_mean"], color=cmap(norm(epoch)), lw=1.3)
        if not best.empty:
            m = over_seeds(curves[curves["is_best"]], ["alpha"], ["loss_mean"])
            epochs = ", ".join(str(e) for e in sorted(best["epoch"]))
            ax.plot(m["alpha"], m["loss_mean_mean"], color="black", ls="--", lw=1.5,
                    label=f"early stopping (best.pt, epoch{'s' if len(best) > 1 else ''} {epochs})")
            ax.legend(loc="upper center")
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01).set_label("epoch")
        xlabel, ylabel = labels_for(settings)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"AT weight loss landscape over training ({n_runs} seed{'s' if n_runs > 1 else ''}, mean)")
        ax.grid(alpha=0.3)
        _gap_per_epoch(bx, epochs_rows, best, lambda e: cmap(norm(e)))
    table = curves[["run", "seed", "epoch", "file", "is_best", "gap", "sharpness", "alpha", "loss_mean",
                    "loss_std", "n"]]
    return Drawing("fig_at_epochs", fig, table)


# ---------------------------------------------------------------------------- (c) methods
def _style(entry: dict[str, Any]) -> tuple[str, str]:
    """Colour and line style of a method comparison entry: paired shades, AWP light and dashed."""
    if entry["variant"] == "early stop":
        return PAIRS["at-es"][0], "-"
    return PAIRS[entry["method"]][entry["variant"] == "awp"], "--" if entry["variant"] == "awp" else "-"


def _gap_bars(bx: Any, entries: list[dict[str, Any]], n: int) -> None:
    for x, e in enumerate(entries):
        color, ls = _style(e)
        gaps = pct(e["rows"]["gap"])
        mean, sd = mean_sd(gaps.tolist())
        bar = bx.bar([x], [mean], yerr=[sd], capsize=2, color=color, edgecolor="k", lw=0.5)[0]
        bx.scatter(np.full(len(gaps), x), gaps, s=6, color="k", zorder=3)
        if ls == "--":
            bar.set_hatch("//")
    bx.set_xticks(np.arange(len(entries)))
    bx.set_xticklabels([e["name"] for e in entries], rotation=35, ha="right")
    bx.set_ylabel(GAP_LABEL)
    bx.set_title("robust generalization gap" + ("\n(mean ± sd, dots: seeds)" if n > 1 else ""))
    bx.grid(alpha=0.3, axis="y")


def _fig_methods(catalog: pd.DataFrame, with_awp: bool) -> Drawing:
    entries = tables.method_entries(catalog, with_awp)
    if with_awp and not any(e["variant"] == "awp" for e in entries):
        raise FigureSkipped("no AWP run with a landscape")
    if len(entries) < 2:
        raise FigureSkipped("fewer than 2 of AT / AT early stop / TRADES / MART / RST have a landscape")
    records, settings = [], {}
    n = max(len(e["rows"]) for e in entries)
    with matplotlib.rc_context(STYLE):
        fig, (ax, bx) = subplots(1, 2, figsize=(7.2, 3.0), gridspec_kw={"width_ratios": [1.4, 1]})
        for e in entries:
            curves, settings = tables.curves(e["rows"], name=e["name"])
            records.append(curves)
            color, ls = _style(e)
            band(ax, over_seeds(curves, ["alpha"], ["loss_mean"]), "loss_mean", x="alpha", scale=1.0,
                 color=color, ls=ls, lw=1.4, opacity=0.15, label=e["name"])
        xlabel, ylabel = labels_for(settings)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title("weight loss landscape, last checkpoints" + (" (AWP dashed)" if with_awp else "")
                     + (f"\nmean ± sd over {n} seeds" if n > 1 else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", ncol=2 if len(entries) > 5 else 1)
        _gap_bars(bx, entries, n)
    table = pd.concat(records, ignore_index=True)[["name", "run", "seed", "file", "epoch", "gap", "sharpness",
                                                   "test_robust_acc", "alpha", "loss_mean", "loss_std", "n"]]
    return Drawing("fig_methods_awp" if with_awp else "fig_methods", fig, table)


@register("fig_methods")
def fig_methods(catalog: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Drawing:
    """Fig. 1b: landscapes and gaps of the last checkpoints of AT, AT early stop, TRADES, MART, RST.

    Mean over seeds with a +-1 sd band / error bar."""
    return _fig_methods(catalog, with_awp=False)


@register("fig_methods_awp")
def fig_methods_awp(catalog: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Drawing:
    """Fig. 1b with each method's AWP variant added (paired colours, AWP dashed / hatched)."""
    return _fig_methods(catalog, with_awp=True)


# --------------------------------------------------------------------- (d) flatness vs gap
def _stats_text(stats: dict[str, float]) -> str:
    return (f"n = {stats['n']} checkpoints\n"
            f"Spearman ρ = {stats['spearman']:.2f} (p = {stats['spearman_p']:.2g})\n"
            f"Kendall τ = {stats['kendall']:.2f} (p = {stats['kendall_p']:.2g})\n"
            f"Pearson r = {stats['pearson']:.2f} (p = {stats['pearson_p']:.2g})")


@register("fig_flatness_vs_gap", sweep=True)
def fig_flatness_vs_gap(catalog: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0,
                        x: str = "sharpness") -> Drawing:
    """Sharpness against gap over every checkpoint (each set of weights once), with correlations."""
    df = tables.flatness_points(catalog, x)
    stats = correlation(df[x], df["gap"], n_boot=n_boot, seed=seed, names=(x, "gap"))
    has_radius = "sharpness_radius" in df and df["sharpness_radius"].notna().any()
    radius = df["sharpness_radius"].dropna().iloc[0] if has_radius else None
    with matplotlib.rc_context(STYLE):
        fig, ax = subplots(figsize=(6.4, 3.6))
        labels = sorted(df["label"].unique())
        # tab10 has ten colours; past ten labels the marker changes, so no two labels look alike.
        palette = matplotlib.colormaps.get_cmap("tab10").colors
        emax = max(df["epoch"].max(), 1)
        for i, label in enumerate(labels):
            part = df[df["label"] == label]
            sizes = 12 + 60 * part["epoch"].clip(lower=0) / emax  # later epochs drawn larger
            ax.scatter(part[x], pct(part["gap"]), s=sizes, color=palette[i % 10], marker="osD^v"[(i // 10) % 5],
                       alpha=0.8, edgecolor="k", lw=0.3, label=legend_label(label))
        ax.text(0.02, 0.98, _stats_text(stats), transform=ax.transAxes, va="top", ha="left", fontsize=7,
                bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
        ax.set_xlabel(f"sharpness: mean adversarial loss rise at |alpha| = {radius:g} (CE)" if x == "sharpness"
                      and radius else f"{x} (CE)" if x in ("sharpness", "curvature") else x)
        ax.set_ylabel(GAP_LABEL)
        ax.set_title("flatness vs robust generalization gap\n(marker size: epoch)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    cols = ["run", "label", "file", "epoch", x, "gap", "train_robust_acc", "test_robust_acc", "sha256"]
    return Drawing("fig_flatness_vs_gap", fig, df[cols].reset_index(drop=True))


# ------------------------------------------------------------------------------- (e) gamma
@register("fig_gamma", sweep=True)
def fig_gamma(catalog: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Drawing:
    """Gap and test robust accuracy of the last checkpoint against gamma: AWP vs random weight perturbation.

    Mean over the runs (seeds) of each gamma with +-1 sd error bars, every run as a dot."""
    table = tables.gamma_table(catalog)
    styles = {"adversarial": dict(color="#1f78b4", ls="-", marker="o", label="AWP (adversarial)"),
              "random": dict(color="#e31a1c", ls="--", marker="s", label="random weight perturbation (same size)")}
    with matplotlib.rc_context(STYLE):
        fig, axes = subplots(1, 2, figsize=(7.2, 2.8))
        for kind, t in table.groupby("kind"):
            stats = over_seeds(t, ["awp_gamma"], ["gap", "test_robust_acc"])
            for ax, col in zip(axes, ("gap", "test_robust_acc")):
                ax.errorbar(stats["awp_gamma"], pct(stats[f"{col}_mean"]), yerr=pct(stats[f"{col}_sd"]), ms=4,
                            lw=1.3, capsize=2, **styles[kind])
                ax.scatter(t["awp_gamma"], pct(t[col]), s=8, color=styles[kind]["color"], alpha=0.5)
        finish(axes, ("robust generalization gap", "test robust accuracy (last checkpoint)"),
               (GAP_LABEL, "test robust accuracy (%)"), "gamma (relative weight perturbation, ||v_l|| / ||w_l||)")
    return Drawing("fig_gamma", fig, table)


# ------------------------------------------------------------------------------------ driver
def _draw_all(catalog: pd.DataFrame, names: list[str], n_boot: int, seed: int,
              awp_gammas: dict[str, float] | None) -> list[tuple[str, Drawing | str]]:
    """(name, drawing or the reason it was skipped) of each figure in ``names``, in registry order."""
    drawn: list[tuple[str, Drawing | str]] = []
    for name, entry in FIGURES.items():
        if name not in names:
            continue
        shown = catalog if (entry.sweep or not awp_gammas) else select_awp_gamma(catalog, awp_gammas)
        try:
            drawn.append((name, entry.draw(shown, n_boot=n_boot, seed=seed)))
        except FigureSkipped as exc:
            drawn.append((name, str(exc)))
    return drawn


def make_figures(catalog_df: pd.DataFrame, out_dir: str | Path, landscapes: Any = None, *,
                 only: list[str] | None = None, n_boot: int = 2000, seed: int = 0,
                 awp_gammas: dict[str, float] | None = None) -> FigureList:
    """Draw every figure the catalog allows into ``out_dir`` and write ``correlation.csv``.

    ``catalog_df``: from :func:`analysis.catalog.collect_runs`, with landscapes joined.
    ``only``: names of :data:`FIGURES` to draw (an unknown one is one line naming the choices).
    ``n_boot`` / ``seed``: the bootstrap of the correlations. ``awp_gammas``: method -> the gamma
    whose AWP runs stand for "method-AWP" in the method figures (default: the most common gamma of
    each method). ``landscapes``: when given and the catalog has no landscape filled, joined here
    (:func:`analysis.catalog.join_landscapes`). Every figure is drawn before any file is written,
    so a bad input leaves ``out_dir`` as it was. Returns the files written; ``.notes`` holds one
    line per figure ("drawn" / "skipped: why"). Never fails because a method's runs are absent.
    """
    n_boot, seed = check_int(n_boot, "n_boot", 0), check_seed(seed)
    names = FIGURES.names() if only is None else [FIGURES.resolve(name) for name in only]
    if landscapes is not None and catalog_df["landscape_dir"].isna().all():
        lands = collect_landscapes(landscapes)
        if not lands.empty:
            catalog_df = join_landscapes(catalog_df, lands)
    drawn = _draw_all(catalog_df, names, n_boot, seed, awp_gammas)
    try:
        correlations: pd.DataFrame | str = correlation_table(catalog_df, n_boot=n_boot, seed=seed)
    except NoCorrelation as exc:
        correlations = str(exc)
    made = FigureList()
    for name, drawing in drawn:
        if isinstance(drawing, str):
            made.notes.append(f"{name}: skipped ({drawing})")
            continue
        paths = save_figure(drawing.figure, drawing.table, out_dir, drawing.name, catalog_df)
        made.extend(paths)
        made.notes.append(f"{name}: {', '.join(p.name for p in paths)}")
    if isinstance(correlations, str):
        made.notes.append(f"correlation.csv: skipped ({correlations})")
    else:
        made.append(write_correlation(correlations, out_dir))
        made.notes.append("correlation.csv: written")
    return made
