"""The figures of Wu, Xia, Wang (NeurIPS 2020), regenerated from any set of run folders.

- :func:`fig_gap_over_epochs`: train and test robust accuracy and their gap over epochs, AT vs
  AT-AWP (robust overfitting, Rice et al. 2020; the gap of Wu et al. 2020, Sec. 3).
- :func:`fig_robust_overfitting`: train and test robust accuracy and robust loss over epochs, AT vs
  AT-AWP, the learning-rate decays marked (the paper's Fig. 1 and Rice et al.'s robust overfitting).
- :func:`fig_at_epochs`: Fig. 1a: AT's adversarial weight loss landscape at several epochs
  (sequential colours, colour bar), the early-stopping checkpoint dashed black, and the gap there.
- :func:`fig_methods` / :func:`fig_methods_awp`: Fig. 1b: landscapes of the last checkpoints of AT,
  AT with early stopping, TRADES, MART, RST (and their AWP variants, paired colours, dashed), with
  a bar chart of their gaps.
- :func:`fig_flatness_vs_gap`: sharpness against gap over all checkpoints with Spearman and
  Kendall correlations (the quantitative version of Fig. 1, after Stutz et al. 2021).
- :func:`fig_gamma`: gap and test robust accuracy against gamma, AWP vs random weight
  perturbation of the same relative size (Sec. 4.2 of the paper).

With several seeds per method (run folders whose configs differ only in ``seed``), curves and
bars show the mean over seeds with a +-1 standard deviation band or error bar, and the CSVs keep
every seed's rows. Each figure is written as PNG and PDF (:func:`awp.io.atomic_savefig`) beside the CSV it was drawn
from; :func:`make_figures` draws whatever the runs allow and notes what it skipped and why.
Accuracies are shown in %, the gap in percentage points; alpha in filter norms (the landscape's
normalization), the loss is the adversarial CE named by its attack.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import matplotlib
from matplotlib.figure import Figure
import numpy as np
import pandas as pd

from analysis.catalog import read_metrics, unique_checkpoints
from analysis.correlation import correlate, correlation
from analysis.style import GAP_LABEL, STYLE
from awp.errors import UserError
from awp.io import atomic_savefig, atomic_write_text
from landscape.curve import curve_spread
from landscape.plot import axis_label, loss_label

METHOD_ORDER = ("at", "trades", "mart", "rst")
# Paired palette: dark shade for the plain method, light shade for its AWP variant.
PAIRS = {"at": ("#1f78b4", "#a6cee3"), "trades": ("#33a02c", "#b2df8a"), "mart": ("#e31a1c", "#fb9a99"),
         "rst": ("#6a3d9a", "#cab2d6"), "at-es": ("#ff7f00", "#fdbf6f")}


def _subplots(*args: Any, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """``plt.subplots`` without pyplot: no backend is chosen for the caller (a notebook keeps its own)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


class FigureSkipped(Exception):
    """A figure the available runs do not allow; the message says what is missing."""


class FigureList(list):
    """The files written (Paths), with ``notes``: one line per figure drawn or skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.notes: list[str] = []


# ------------------------------------------------------------------------------------ helpers
PROVENANCE = {"attack": "gap_attack", "landscape_attack": "landscape_attack",
              "landscape_split": "landscape_split", "landscape_samples": "landscape_samples"}


def _save(fig: Any, table: pd.DataFrame, out_dir: str | Path, name: str, catalog: pd.DataFrame) -> list[Path]:
    """PNG, PDF and the CSV drawn from; every row of the CSV says which attack measured its run's
    gap and which attack, split and sample count its landscape used."""
    if "run" in table.columns:
        cols = [c for c in PROVENANCE if c in catalog.columns]
        per_run = (catalog[["run", *cols]].sort_values("run").groupby("run", sort=False).first()
                   .rename(columns=PROVENANCE).reset_index())
        table = table.drop(columns=[c for c in per_run.columns if c != "run" and c in table.columns])
        table = table.merge(per_run, on="run", how="left")
    out = Path(out_dir)
    paths = [out / f"{name}.png", out / f"{name}.pdf", out / f"{name}.csv"]
    fig.tight_layout()
    atomic_savefig(fig, paths[0], dpi=200, bbox_inches="tight")
    atomic_savefig(fig, paths[1], bbox_inches="tight")
    atomic_write_text(paths[2], table.to_csv(index=False))
    return paths


def _curve(landscape_dir: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Mean landscape curve over directions (alpha, loss_mean, loss_std, ...) and its settings."""
    from landscape import io as lio

    df, info = lio.read_result(str(landscape_dir))
    if "beta" in df.columns:  # a 2-D surface: its beta = 0 slice is the curve along d1
        df = df[np.isclose(df["beta"], 0.0)]
    return curve_spread(df), info.get("settings", {})


def _labels_for(settings: dict[str, Any]) -> tuple[str, str]:
    attack = settings.get("attack") or {}
    return (axis_label(settings.get("normalization", "filter")),
            loss_label(settings.get("loss", "adversarial"), attack.get("steps")))


def _with_landscape(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["landscape_dir"].notna()]


def _pct(v: Any) -> Any:
    return 100 * np.asarray(v, dtype=float)


def _plain(df: pd.DataFrame, method: str) -> pd.DataFrame:
    return df[(df["method"] == method) & (df["awp_gamma"] == 0)]


def _awp(df: pd.DataFrame, method: str) -> pd.DataFrame:
    part = df[(df["method"] == method) & (df["awp_gamma"] > 0) & (df["awp_kind"] != "random")]
    if part.empty:
        return part
    # A gamma sweep: the method's AWP variant is the most common gamma, ties to the smallest.
    counts = part.groupby("awp_gamma")["run"].nunique()
    gamma = counts[counts == counts.max()].index.min()
    return part[part["awp_gamma"] == gamma]


# ----------------------------------------------------------------------------- seeds and bands
def _band(ax: Any, stats: pd.DataFrame, col: str, scale: float = 100.0, **kw: Any) -> None:
    """Mean of ``col`` over seeds as a line, +-1 standard deviation over seeds as a band
    (``stats``: one row per x with ``{col}_mean``, ``{col}_sd``; sd 0 with a single seed)."""
    x, mean, sd = stats["epoch"], scale * stats[f"{col}_mean"], scale * stats[f"{col}_sd"]
    ax.plot(x, mean, lw=1.2, **kw)
    ax.fill_between(x, mean - sd, mean + sd, color=kw.get("color"), alpha=0.18, lw=0)


def _over_seeds(table: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1; 0 with one seed) of ``cols`` over the runs
    (seeds) of each ``by`` group, plus ``n_seeds``."""
    grouped = table.groupby(by, sort=True)
    out = pd.concat([grouped[cols].mean().add_suffix("_mean"), grouped[cols].std(ddof=1).fillna(0.0).add_suffix("_sd"),
                     grouped["run"].nunique().rename("n_seeds")], axis=1)
    return out.reset_index()


def _seeds_note(table: pd.DataFrame) -> str:
    n = table.groupby("label")["run"].nunique()
    return f"mean ± sd over {n.min()} seeds" if n.min() == n.max() else f"mean ± sd over {n.min()}-{n.max()} seeds"


# ------------------------------------------------------------------------------------ (a) gap
EPOCH_COLUMNS = ["train_robust_acc", "test_robust_acc", "gap", "train_robust_loss", "test_robust_loss"]


def _epoch_table(catalog: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch metrics (each run's metrics.csv) of the AT and AT-AWP runs, every seed, with the
    epochs at which each run's piecewise schedule decays the learning rate (``decays``)."""
    import json

    from analysis.overfitting import decay_epochs

    runs = catalog[(catalog["method"] == "at") & (catalog["awp_kind"] != "random")]
    runs = runs[(runs["awp_gamma"] == 0) | runs["label"].str.startswith("AT-AWP")]
    if (runs["awp_gamma"] == 0).sum() == 0:
        raise FigureSkipped("no AT run")
    tables = []
    for (run, label, run_dir, gamma), _ in runs.groupby(["run", "label", "run_dir", "awp_gamma"], sort=True):
        m = read_metrics(run_dir)
        if m.empty or "gap" not in m:
            continue
        config_file = Path(run_dir) / "config.json"
        decays = decay_epochs(json.loads(config_file.read_text())) if config_file.exists() else []
        seed = runs.loc[runs["run"] == run, "seed"].iloc[0]
        tables.append(m[["epoch", *[c for c in EPOCH_COLUMNS if c in m]]].assign(
            run=run, label=label, seed=seed, awp_gamma=gamma, decays=" ".join(f"{d:g}" for d in decays)))
    if not tables:
        raise FigureSkipped("no metrics.csv in the AT runs")
    table = pd.concat(tables, ignore_index=True)
    return table[["run", "label", "seed", "awp_gamma", "decays", "epoch", *[c for c in EPOCH_COLUMNS if c in table]]]


def _label_colors(table: pd.DataFrame) -> tuple[list[str], dict[str, Any]]:
    labels = sorted(table["label"].unique(), key=lambda s: (s != "AT", s))
    return labels, dict(zip(labels, matplotlib.colormaps.get_cmap("tab10").colors))


def _finish(axes: Any, titles: tuple[str, ...], ylabels: tuple[str, ...]) -> None:
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        _dedupe_legend(ax)


def fig_gap_over_epochs(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Train / test robust accuracy and gap over epochs for the AT and AT-AWP runs (metrics.csv),
    mean over seeds with a +-1 sd band."""
    table = _epoch_table(catalog)
    attack = catalog["attack"].dropna().iloc[0] if catalog["attack"].notna().any() else "PGD"
    stats = _over_seeds(table, ["label", "epoch"], ["train_robust_acc", "test_robust_acc", "gap"])
    with matplotlib.rc_context(STYLE):
        fig, axes = _subplots(1, 3, figsize=(7.2, 2.6))
        labels, colors = _label_colors(table)
        for label in labels:
            t = stats[stats["label"] == label]
            _band(axes[0], t, "train_robust_acc", color=colors[label], ls="-", label=f"{label}: train")
            _band(axes[0], t, "test_robust_acc", color=colors[label], ls="--", label=f"{label}: test")
            _band(axes[1], t, "test_robust_acc", color=colors[label], ls="--", label=label)
            _band(axes[2], t, "gap", color=colors[label], ls="-", label=label)
        _finish(axes, ("train (solid) and test (dashed)\nrobust accuracy", "test robust accuracy",
                       "robust generalization gap"),
                ("robust accuracy (%)", "test robust accuracy (%)", GAP_LABEL))
        fig.suptitle(f"Robust overfitting, AT vs AT-AWP ({attack}; {_seeds_note(table)})", fontsize=9)
        return _save(fig, table.drop(columns=["train_robust_loss", "test_robust_loss", "decays"], errors="ignore"),
                     out_dir, "fig_gap_over_epochs", catalog)


def fig_robust_overfitting(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """In the spirit of the paper's Fig. 1 and Rice et al.'s: train and test robust accuracy and
    robust loss over epochs, AT vs AT-AWP, mean over seeds with +-1 sd bands, the epochs at which
    the learning rate decays marked (from each run's config: lr_milestones x epochs)."""
    table = _epoch_table(catalog)
    if not {"train_robust_loss", "test_robust_loss"} <= set(table.columns):
        raise FigureSkipped("the AT runs' metrics.csv have no robust loss")
    attack = catalog["attack"].dropna().iloc[0] if catalog["attack"].notna().any() else "PGD"
    cols = ["train_robust_acc", "test_robust_acc", "train_robust_loss", "test_robust_loss"]
    stats = _over_seeds(table, ["label", "epoch"], cols)
    decays = sorted({float(d) for text in table["decays"] for d in str(text).split()})
    with matplotlib.rc_context(STYLE):
        fig, axes = _subplots(1, 2, figsize=(7.2, 2.8))
        labels, colors = _label_colors(table)
        for label in labels:
            t = stats[stats["label"] == label]
            for split, ls in (("train", "-"), ("test", "--")):
                _band(axes[0], t, f"{split}_robust_acc", color=colors[label], ls=ls, label=f"{label}: {split}")
                _band(axes[1], t, f"{split}_robust_loss", scale=1.0, color=colors[label], ls=ls,
                      label=f"{label}: {split}")
        for ax in axes:
            for i, d in enumerate(decays):
                ax.axvline(d, color="0.4", ls=":", lw=1, label="lr decay" if i == 0 else None)
        _finish(axes, ("robust accuracy: train (solid), test (dashed)", "robust loss: train (solid), test (dashed)"),
                ("robust accuracy (%)", "robust loss (CE)"))
        fig.suptitle(f"Robust overfitting after the lr decay, AT vs AT-AWP ({attack}; {_seeds_note(table)})",
                     fontsize=9)
        return _save(fig, table, out_dir, "fig_robust_overfitting", catalog)


def _dedupe_legend(ax: Any, **kwargs: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, l in zip(handles, labels):  # noqa: E741 (handle, label)
        seen.setdefault(l, h)
    if seen:
        ax.legend(list(seen.values()), list(seen.keys()), **kwargs)


# ------------------------------------------------------------------------------ (b) AT epochs
def _curves(rows: pd.DataFrame, **extra: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every row's mean landscape curve (over directions), tagged with its run, seed, file, epoch,
    gap and sharpness (and ``extra``), concatenated; plus the landscape settings."""
    records, settings = [], {}
    for _, r in rows.iterrows():
        s, settings = _curve(r["landscape_dir"])
        records.append(s.assign(run=r["run"], seed=r.get("seed"), file=r["file"], epoch=r["epoch"],
                                is_best=r["is_best"], gap=r["gap"], sharpness=r["sharpness"],
                                test_robust_acc=r["test_robust_acc"], **extra))
    return pd.concat(records, ignore_index=True), settings


def _mean_curve(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean over runs (seeds) of their curves per alpha, with the sd over runs (0 with one run)."""
    g = curves.groupby("alpha", sort=True)["loss_mean"]
    return pd.DataFrame({"loss": g.mean(), "sd": g.std(ddof=1).fillna(0.0)}).reset_index()


def fig_at_epochs(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 1a: AT's landscape at several epochs (colour = epoch; the mean over seeds), the
    early-stopping checkpoints' mean dashed black; the gap per epoch, mean +- sd over seeds."""
    at = _with_landscape(_plain(catalog, "at"))
    epochs_rows = at[~at["is_best"]]
    if epochs_rows.empty:
        raise FigureSkipped("no AT checkpoint with a landscape")
    if epochs_rows["epoch"].nunique() < 2:
        raise FigureSkipped("the AT runs have fewer than 2 epoch checkpoints with a landscape")
    runs = sorted(epochs_rows["run"].unique())
    best = at[at["is_best"] & at["run"].isin(runs)]
    curves, settings = _curves(epochs_rows)
    if not best.empty:
        best_curves, _ = _curves(best)
        curves = pd.concat([curves, best_curves], ignore_index=True)
    with matplotlib.rc_context(STYLE):
        fig, (ax, bx) = _subplots(1, 2, figsize=(7.2, 3.0), gridspec_kw={"width_ratios": [1.4, 1]})
        cmap = matplotlib.colormaps.get_cmap("viridis")
        norm = matplotlib.colors.Normalize(vmin=epochs_rows["epoch"].min(), vmax=epochs_rows["epoch"].max())
        for epoch, c in curves[~curves["is_best"]].groupby("epoch"):
            m = _mean_curve(c)
            ax.plot(m["alpha"], m["loss"], color=cmap(norm(epoch)), lw=1.3)
        if not best.empty:
            m = _mean_curve(curves[curves["is_best"]])
            epochs = ", ".join(str(e) for e in sorted(best["epoch"]))
            ax.plot(m["alpha"], m["loss"], color="black", ls="--", lw=1.5,
                    label=f"early stopping (best.pt, epoch{'s' if len(best) > 1 else ''} {epochs})")
            ax.legend(loc="upper center")
        cbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
        cbar.set_label("epoch")
        xlabel, ylabel = _labels_for(settings)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"AT weight loss landscape over training ({len(runs)} seed{'s' if len(runs) > 1 else ''}, mean)")
        ax.grid(alpha=0.3)
        gaps = _over_seeds(epochs_rows, ["epoch"], ["gap"])
        ep = gaps["epoch"].to_numpy()
        bx.errorbar(ep, _pct(gaps["gap_mean"]), yerr=_pct(gaps["gap_sd"]), color="0.6", lw=1, zorder=1, capsize=2)
        bx.scatter(ep, _pct(gaps["gap_mean"]), c=[cmap(norm(e)) for e in ep], s=30, zorder=2,
                   edgecolor="k", lw=0.3, label="epoch checkpoints (mean ± sd)")
        for i, (_, r) in enumerate(best.iterrows()):
            bx.scatter([r["epoch"]], [_pct(r["gap"])], marker="*", s=90, color="black", zorder=3,
                       label="early stopping (each seed)" if i == 0 else None)
        bx.set_xlabel("epoch")
        bx.set_ylabel(GAP_LABEL)
        bx.set_title("robust generalization gap")
        bx.grid(alpha=0.3)
        bx.legend(loc="upper left")
        table = curves[["run", "seed", "epoch", "file", "is_best", "gap", "sharpness", "alpha", "loss_mean",
                        "loss_std", "n"]]
        return _save(fig, table, out_dir, "fig_at_epochs", catalog)


# ---------------------------------------------------------------------------- (c) methods
def _last_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last non-best checkpoint with a landscape of every run (seed) in ``df``."""
    part = _with_landscape(df[~df["is_best"]])
    if part.empty:
        return part
    return part.loc[part.groupby("run")["epoch"].idxmax()]


def _method_entries(catalog: pd.DataFrame, with_awp: bool) -> list[dict[str, Any]]:
    entries = []
    for method in METHOD_ORDER:
        plain = _plain(catalog, method)
        variants = [("plain", plain)] + ([("awp", _awp(catalog, method))] if with_awp else [])
        for variant, part in variants:
            last = _last_rows(part)
            if not last.empty:
                entries.append({"name": last["label"].iloc[0], "rows": last, "color": PAIRS[method][variant == "awp"],
                                "ls": "--" if variant == "awp" else "-"})
            if method == "at" and variant == "plain":
                best = _with_landscape(part[part["is_best"]])
                if not best.empty:
                    epochs = ", ".join(str(e) for e in sorted(best["epoch"]))
                    entries.append({"name": f"AT (early stop, ep. {epochs})", "rows": best,
                                    "color": PAIRS["at-es"][0], "ls": "-"})
    return entries


def _fig_methods(catalog: pd.DataFrame, out_dir: str | Path, with_awp: bool) -> list[Path]:
    entries = _method_entries(catalog, with_awp)
    name = "fig_methods_awp" if with_awp else "fig_methods"
    if with_awp and not any(e["ls"] == "--" for e in entries):
        raise FigureSkipped("no AWP run with a landscape")
    if len(entries) < 2:
        raise FigureSkipped("fewer than 2 of AT / AT early stop / TRADES / MART / RST have a landscape")
    records = []
    with matplotlib.rc_context(STYLE):
        fig, (ax, bx) = _subplots(1, 2, figsize=(7.2, 3.0), gridspec_kw={"width_ratios": [1.4, 1]})
        settings: dict[str, Any] = {}
        for x, e in enumerate(entries):
            curves, settings = _curves(e["rows"], name=e["name"])
            records.append(curves)
            m = _mean_curve(curves)
            ax.plot(m["alpha"], m["loss"], color=e["color"], ls=e["ls"], lw=1.4, label=e["name"])
            ax.fill_between(m["alpha"], m["loss"] - m["sd"], m["loss"] + m["sd"], color=e["color"], alpha=0.15, lw=0)
            gaps = _pct(e["rows"]["gap"])
            bar = bx.bar([x], [gaps.mean()], yerr=[gaps.std(ddof=1) if len(gaps) > 1 else 0.0], capsize=2,
                         color=e["color"], edgecolor="k", lw=0.5)[0]
            bx.scatter(np.full(len(gaps), x), gaps, s=6, color="k", zorder=3)
            if e["ls"] == "--":
                bar.set_hatch("//")
        n = max(len(e["rows"]) for e in entries)
        xlabel, ylabel = _labels_for(settings)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title("weight loss landscape, last checkpoints" + (" (AWP dashed)" if with_awp else "")
                     + (f"\nmean ± sd over {n} seeds" if n > 1 else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", ncol=2 if len(entries) > 5 else 1)
        bx.set_xticks(np.arange(len(entries)))
        bx.set_xticklabels([e["name"] for e in entries], rotation=35, ha="right")
        bx.set_ylabel(GAP_LABEL)
        bx.set_title("robust generalization gap" + ("\n(mean ± sd, dots: seeds)" if n > 1 else ""))
        bx.grid(alpha=0.3, axis="y")
        table = pd.concat(records, ignore_index=True)[["name", "run", "seed", "file", "epoch", "gap", "sharpness",
                                                       "test_robust_acc", "alpha", "loss_mean", "loss_std", "n"]]
        return _save(fig, table, out_dir, name, catalog)


def fig_methods(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 1b: landscapes of the last checkpoints of AT, AT early stop, TRADES, MART, RST + gaps
    (mean over seeds, +-1 sd band / error bar)."""
    return _fig_methods(catalog, out_dir, with_awp=False)


def fig_methods_awp(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 1b with each method's AWP variant added (paired colours, AWP dashed / hatched)."""
    return _fig_methods(catalog, out_dir, with_awp=True)


# --------------------------------------------------------------------- (d) flatness vs gap
def fig_flatness_vs_gap(catalog: pd.DataFrame, out_dir: str | Path, x: str = "sharpness",
                        n_boot: int = 2000, seed: int = 0) -> list[Path]:
    """Sharpness against gap over every checkpoint (each set of weights once), with correlations."""
    df = unique_checkpoints(catalog)
    df = df[np.isfinite(df[x].to_numpy(float)) & np.isfinite(df["gap"].to_numpy(float))]
    if len(df) < 3:
        raise FigureSkipped(f"fewer than 3 checkpoints with both {x} and gap")
    stats = correlation(df[x], df["gap"], n_boot=n_boot, seed=seed, names=(x, "gap"))
    has_radius = "sharpness_radius" in df and df["sharpness_radius"].notna().any()
    radius = df["sharpness_radius"].dropna().iloc[0] if has_radius else None
    with matplotlib.rc_context(STYLE):
        fig, ax = _subplots(figsize=(6.4, 3.6))
        labels = sorted(df["label"].unique())
        # tab10 has ten colours; past ten labels the marker changes, so no two labels look alike.
        palette = matplotlib.colormaps.get_cmap("tab10").colors
        colors = {label: palette[i % 10] for i, label in enumerate(labels)}
        markers = {label: "osD^v"[(i // 10) % 5] for i, label in enumerate(labels)}
        emax = max(df["epoch"].max(), 1)
        for label in labels:
            part = df[df["label"] == label]
            sizes = 12 + 60 * part["epoch"].clip(lower=0) / emax  # later epochs drawn larger
            ax.scatter(part[x], _pct(part["gap"]), s=sizes, color=colors[label], marker=markers[label],
                       alpha=0.8, edgecolor="k", lw=0.3, label=label)
        text = (f"n = {stats['n']} checkpoints\n"
                f"Spearman ρ = {stats['spearman']:.2f} (p = {stats['spearman_p']:.2g})\n"
                f"Kendall τ = {stats['kendall']:.2f} (p = {stats['kendall_p']:.2g})\n"
                f"Pearson r = {stats['pearson']:.2f} (p = {stats['pearson_p']:.2g})")
        ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", ha="left", fontsize=7,
                bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
        xl = (f"sharpness: mean adversarial loss rise at |alpha| = {radius:g} (CE)" if x == "sharpness" and radius
              else f"{x} (CE)" if x in ("sharpness", "curvature") else x)
        ax.set_xlabel(xl)
        ax.set_ylabel(GAP_LABEL)
        ax.set_title("flatness vs robust generalization gap\n(marker size: epoch)")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        cols = ["run", "label", "file", "epoch", x, "gap", "train_robust_acc", "test_robust_acc", "sha256"]
        return _save(fig, df[cols].reset_index(drop=True), out_dir, "fig_flatness_vs_gap", catalog)


# ------------------------------------------------------------------------------- (e) gamma
def fig_gamma(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Gap and test robust accuracy of the last checkpoint against gamma; AWP vs random (RWP);
    mean over the runs (seeds) of each gamma with +-1 sd error bars, every run as a dot."""
    at = catalog[(catalog["method"] == "at") & ~catalog["is_best"]]
    rows = []
    for run, part in at.groupby("run"):
        last = part.loc[part["epoch"].idxmax()]
        kind = "random" if last["awp_kind"] == "random" and last["awp_gamma"] > 0 else "adversarial"
        rows.append({"run": run, "seed": last.get("seed"), "kind": kind, "awp_gamma": last["awp_gamma"],
                     "epoch": last["epoch"],
                     "gap": last["gap"], "train_robust_acc": last["train_robust_acc"],
                     "test_robust_acc": last["test_robust_acc"]})
    table = pd.DataFrame(rows)
    if table.empty or table.loc[table["kind"] == "adversarial", "awp_gamma"].nunique() < 2:
        raise FigureSkipped("fewer than 2 values of gamma among the AT / AT-AWP runs")
    # gamma = 0 is plain AT, the common start of both curves.
    zero = table[table["awp_gamma"] == 0]
    table = pd.concat([table, zero.assign(kind="random")] if (table["kind"] == "random").any() else [table],
                      ignore_index=True).sort_values(["kind", "awp_gamma", "run"]).reset_index(drop=True)
    with matplotlib.rc_context(STYLE):
        fig, axes = _subplots(1, 2, figsize=(7.2, 2.8))
        styles = {"adversarial": dict(color="#1f78b4", ls="-", marker="o", label="AWP (adversarial)"),
                  "random": dict(color="#e31a1c", ls="--", marker="s", label="RWP (random, same size)")}
        for kind, t in table.groupby("kind"):
            mean = t.groupby("awp_gamma")[["gap", "test_robust_acc"]].mean().reset_index()
            sd = t.groupby("awp_gamma")[["gap", "test_robust_acc"]].std(ddof=1).fillna(0.0).reset_index()
            for ax, col in zip(axes, ("gap", "test_robust_acc")):
                ax.errorbar(mean["awp_gamma"], _pct(mean[col]), yerr=_pct(sd[col]), ms=4, lw=1.3, capsize=2,
                            **styles[kind])
                ax.scatter(t["awp_gamma"], _pct(t[col]), s=8, color=styles[kind]["color"], alpha=0.5)
        for ax, ylabel, title in zip(axes, (GAP_LABEL, "test robust accuracy (%)"),
                                     ("robust generalization gap", "test robust accuracy (last checkpoint)")):
            ax.set_xlabel("gamma (relative weight perturbation, ||v_l|| / ||w_l||)")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend()
        return _save(fig, table, out_dir, "fig_gamma", catalog)


# ------------------------------------------------------------------------------------ driver
FIGURES: dict[str, Callable[[pd.DataFrame, Path], list[Path]]] = {
    "fig_gap_over_epochs": fig_gap_over_epochs, "fig_robust_overfitting": fig_robust_overfitting,
    "fig_at_epochs": fig_at_epochs, "fig_methods": fig_methods,
    "fig_methods_awp": fig_methods_awp, "fig_flatness_vs_gap": fig_flatness_vs_gap, "fig_gamma": fig_gamma}


def write_correlation(catalog: pd.DataFrame, out_dir: str | Path, *, n_boot: int = 2000, seed: int = 0) -> Path:
    """``correlation.csv``: sharpness and curvature vs gap over all checkpoints, per run and per label
    (groups with fewer than 3 points have n and NaN statistics). Raises UserError when impossible."""
    df = unique_checkpoints(catalog)
    tables = []
    for x in ("sharpness", "curvature"):
        if x not in df or not np.isfinite(df[x].to_numpy(float)).any():
            continue
        for by in (None, "run", "label"):
            try:
                tables.append(correlate(df, x, "gap", groupby=by, n_boot=n_boot, seed=seed)
                              .assign(groupby=by or "all"))
            except UserError:
                pass
    if not tables:
        raise FigureSkipped("fewer than 3 checkpoints with both sharpness and gap: no correlation")
    table = pd.concat(tables, ignore_index=True)
    table = table[["groupby"] + [c for c in table.columns if c != "groupby"]]
    path = Path(out_dir) / "correlation.csv"
    atomic_write_text(path, table.to_csv(index=False))
    return path


def select_awp_gamma(catalog: pd.DataFrame, awp_gammas: dict[str, float]) -> pd.DataFrame:
    """Keep, for each method named in ``awp_gammas``, only the AWP runs at that gamma (and all
    non-AWP and random-perturbation runs): the method comparison then shows the chosen AWP
    variant, not a gamma sweep's other points."""
    keep = pd.Series(True, index=catalog.index)
    for method, gamma in awp_gammas.items():
        sweep = (catalog["method"] == method) & (catalog["awp_gamma"] > 0) & (catalog["awp_kind"] != "random")
        keep &= ~sweep | np.isclose(catalog["awp_gamma"], gamma)
    return catalog[keep]


SWEEP_FIGURES = ("fig_flatness_vs_gap", "fig_gamma")  # figures that use every run of a sweep


def make_figures(catalog_df: pd.DataFrame, out_dir: str | Path, landscapes: Any = None, *,
                 only: list[str] | None = None, n_boot: int = 2000,
                 awp_gammas: dict[str, float] | None = None) -> FigureList:
    """Draw every figure the catalog allows into ``out_dir`` and write ``correlation.csv``.

    ``catalog_df``: from :func:`analysis.catalog.collect_runs`, with landscapes joined.
    ``awp_gammas``: method -> the gamma whose AWP runs stand for "method-AWP" in the method
    figures (default: the most common gamma of each method).
    ``landscapes``: accepted for symmetry with the command line; when given and the catalog has no
    landscape columns filled, it is joined here. Returns the files written; ``.notes`` holds one
    line per figure ("drawn" / "skipped: why"). Never fails because a method's runs are absent.
    """
    if landscapes is not None and catalog_df["landscape_dir"].isna().all():
        from analysis.catalog import collect_landscapes

        lands = collect_landscapes(landscapes)
        if not lands.empty:
            catalog_df = catalog_df.drop(columns=[c for c in lands.columns if c != "sha256" and c in catalog_df])
            catalog_df = catalog_df.merge(lands, on="sha256", how="left")
    out = Path(out_dir)
    made = FigureList()
    for name, draw in FIGURES.items():
        if only is not None and name not in only:
            continue
        shown = catalog_df if (name in SWEEP_FIGURES or not awp_gammas) else select_awp_gamma(catalog_df, awp_gammas)
        try:
            paths = draw(shown, out) if name != "fig_flatness_vs_gap" else draw(shown, out, n_boot=n_boot)
        except FigureSkipped as exc:
            made.notes.append(f"{name}: skipped ({exc})")
            continue
        made.extend(paths)
        made.notes.append(f"{name}: {', '.join(p.name for p in paths)}")
    try:
        made.append(write_correlation(catalog_df, out, n_boot=n_boot))
        made.notes.append("correlation.csv: written")
    except FigureSkipped as exc:
        made.notes.append(f"correlation.csv: skipped ({exc})")
    return made
