"""The figures of Wu, Xia, Wang (NeurIPS 2020), regenerated from any set of run folders.

- :func:`fig_gap_over_epochs`: train and test robust accuracy and their gap over epochs, AT vs
  AT-AWP (robust overfitting, Rice et al. 2020; the gap of Wu et al. 2020, Sec. 3).
- :func:`fig_at_epochs`: Fig. 1a: AT's adversarial weight loss landscape at several epochs
  (sequential colours, colour bar), the early-stopping checkpoint dashed black, and the gap there.
- :func:`fig_methods` / :func:`fig_methods_awp`: Fig. 1b: landscapes of the last checkpoints of AT,
  AT with early stopping, TRADES, MART, RST (and their AWP variants, paired colours, dashed), with
  a bar chart of their gaps.
- :func:`fig_flatness_vs_gap`: sharpness against gap over all checkpoints with Spearman and
  Kendall correlations (the quantitative version of Fig. 1, after Stutz et al. 2021).
- :func:`fig_gamma`: gap and test robust accuracy against gamma, AWP vs random weight
  perturbation of the same relative size (Sec. 4.2 of the paper).

Each figure is written as PNG and PDF (:func:`awp.io.atomic_savefig`) beside the CSV it was drawn
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


def _last_row(df: pd.DataFrame, need_landscape: bool = True) -> pd.Series | None:
    """The last non-best checkpoint of the first run in ``df`` (with a landscape if asked)."""
    part = df[~df["is_best"]]
    if need_landscape:
        part = _with_landscape(part)
    if part.empty:
        return None
    run = sorted(part["run"].unique())[0]
    part = part[part["run"] == run]
    return part.loc[part["epoch"].idxmax()]


# ------------------------------------------------------------------------------------ (a) gap
def fig_gap_over_epochs(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Train / test robust accuracy and gap over epochs for the AT and AT-AWP runs (metrics.csv)."""
    runs = catalog[(catalog["method"] == "at") & (catalog["awp_kind"] != "random")]
    runs = runs[(runs["awp_gamma"] == 0) | runs["label"].str.startswith("AT-AWP")]
    if (runs["awp_gamma"] == 0).sum() == 0:
        raise FigureSkipped("no AT run")
    tables = []
    for (run, label, run_dir, gamma), _ in runs.groupby(["run", "label", "run_dir", "awp_gamma"], sort=True):
        m = read_metrics(run_dir)
        if m.empty or "gap" not in m:
            continue
        columns = ["epoch", "train_robust_acc", "test_robust_acc", "gap"]
        tables.append(m[columns].assign(run=run, label=label, awp_gamma=gamma))
    if not tables:
        raise FigureSkipped("no metrics.csv in the AT runs")
    table = pd.concat(tables, ignore_index=True)[["run", "label", "awp_gamma", "epoch", "train_robust_acc",
                                                  "test_robust_acc", "gap"]]
    attack = catalog["attack"].dropna().iloc[0] if catalog["attack"].notna().any() else "PGD"
    with matplotlib.rc_context(STYLE):
        fig, axes = _subplots(1, 3, figsize=(7.2, 2.6))
        labels = sorted(table["label"].unique(), key=lambda s: (s != "AT", s))
        colors = dict(zip(labels, matplotlib.colormaps.get_cmap("tab10").colors))
        for (run, label), t in table.groupby(["run", "label"], sort=False):
            kw = dict(color=colors[label], lw=1.2)
            axes[0].plot(t["epoch"], _pct(t["train_robust_acc"]), ls="-", label=f"{label}: train", **kw)
            axes[0].plot(t["epoch"], _pct(t["test_robust_acc"]), ls="--", label=f"{label}: test", **kw)
            axes[1].plot(t["epoch"], _pct(t["test_robust_acc"]), ls="--", label=label, **kw)
            axes[2].plot(t["epoch"], _pct(t["gap"]), ls="-", label=label, **kw)
        titles = ("train (solid) and test (dashed)\nrobust accuracy", "test robust accuracy",
                  "robust generalization gap")
        ylabels = ("robust accuracy (%)", "test robust accuracy (%)", GAP_LABEL)
        for ax, title, ylabel in zip(axes, titles, ylabels):
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            _dedupe_legend(ax)
        fig.suptitle(f"Robust overfitting, AT vs AT-AWP ({attack})", fontsize=9)
        return _save(fig, table, out_dir, "fig_gap_over_epochs", catalog)


def _dedupe_legend(ax: Any, **kwargs: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, l in zip(handles, labels):  # noqa: E741 (handle, label)
        seen.setdefault(l, h)
    if seen:
        ax.legend(list(seen.values()), list(seen.keys()), **kwargs)


# ------------------------------------------------------------------------------ (b) AT epochs
def fig_at_epochs(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 1a: AT's landscape at several epochs (colour = epoch), early stopping dashed black."""
    at = _with_landscape(_plain(catalog, "at"))
    epochs_rows = at[~at["is_best"]]
    if epochs_rows.empty:
        raise FigureSkipped("no AT checkpoint with a landscape")
    run = epochs_rows.groupby("run").size().idxmax()  # the AT run with the most landscapes
    rows = at[at["run"] == run].sort_values(["epoch", "is_best"])
    epochs_rows = rows[~rows["is_best"]]
    if len(epochs_rows) < 2:
        raise FigureSkipped(f"AT run {run} has fewer than 2 epoch checkpoints with a landscape")
    best = rows[rows["is_best"]]
    records = []
    with matplotlib.rc_context(STYLE):
        fig, (ax, bx) = _subplots(1, 2, figsize=(7.2, 3.0), gridspec_kw={"width_ratios": [1.4, 1]})
        cmap = matplotlib.colormaps.get_cmap("viridis")
        norm = matplotlib.colors.Normalize(vmin=epochs_rows["epoch"].min(), vmax=epochs_rows["epoch"].max())
        settings: dict[str, Any] = {}
        for _, r in epochs_rows.iterrows():
            s, settings = _curve(r["landscape_dir"])
            ax.plot(s["alpha"], s["loss_mean"], color=cmap(norm(r["epoch"])), lw=1.3)
            records.append(s.assign(run=run, epoch=r["epoch"], file=r["file"], is_best=False, gap=r["gap"],
                                    sharpness=r["sharpness"]))
        for _, r in best.iterrows():
            s, settings = _curve(r["landscape_dir"])
            ax.plot(s["alpha"], s["loss_mean"], color="black", ls="--", lw=1.5,
                    label=f"early stopping (best.pt, epoch {r['epoch']})")
            records.append(s.assign(run=run, epoch=r["epoch"], file=r["file"], is_best=True, gap=r["gap"],
                                    sharpness=r["sharpness"]))
        cbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.01)
        cbar.set_label("epoch")
        xlabel, ylabel = _labels_for(settings)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"AT weight loss landscape over training ({run})")
        ax.grid(alpha=0.3)
        if not best.empty:
            ax.legend(loc="upper center")
        ep = epochs_rows["epoch"].to_numpy()
        bx.plot(ep, _pct(epochs_rows["gap"]), color="0.6", lw=1, zorder=1)
        bx.scatter(ep, _pct(epochs_rows["gap"]), c=[cmap(norm(e)) for e in ep], s=30, zorder=2,
                   edgecolor="k", lw=0.3, label="epoch checkpoints")
        for _, r in best.iterrows():
            bx.scatter([r["epoch"]], [_pct(r["gap"])], marker="*", s=120, color="black", zorder=3,
                       label=f"early stopping (epoch {r['epoch']})")
        bx.set_xlabel("epoch")
        bx.set_ylabel(GAP_LABEL)
        bx.set_title("robust generalization gap")
        bx.grid(alpha=0.3)
        bx.legend(loc="upper left")
        table = pd.concat(records, ignore_index=True)[["run", "epoch", "file", "is_best", "gap", "sharpness",
                                                       "alpha", "loss_mean", "loss_std", "n"]]
        return _save(fig, table, out_dir, "fig_at_epochs", catalog)


# ---------------------------------------------------------------------------- (c) methods
def _method_entries(catalog: pd.DataFrame, with_awp: bool) -> list[dict[str, Any]]:
    entries = []
    for method in METHOD_ORDER:
        plain = _plain(catalog, method)
        variants = [("plain", plain)] + ([("awp", _awp(catalog, method))] if with_awp else [])
        for variant, part in variants:
            last = _last_row(part)
            if last is not None:
                entries.append({"name": last["label"], "row": last, "color": PAIRS[method][variant == "awp"],
                                "ls": "--" if variant == "awp" else "-"})
            if method == "at" and variant == "plain":
                best = _with_landscape(part[part["is_best"]])
                if not best.empty:
                    b = best.iloc[0]
                    entries.append({"name": f"AT (early stop, ep. {b['epoch']})", "row": b,
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
        for e in entries:
            r = e["row"]
            s, settings = _curve(r["landscape_dir"])
            ax.plot(s["alpha"], s["loss_mean"], color=e["color"], ls=e["ls"], lw=1.4, label=e["name"])
            records.append(s.assign(name=e["name"], run=r["run"], file=r["file"], epoch=r["epoch"], gap=r["gap"],
                                    sharpness=r["sharpness"], test_robust_acc=r["test_robust_acc"]))
        xlabel, ylabel = _labels_for(settings)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title("weight loss landscape, last checkpoints" + (" (AWP dashed)" if with_awp else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", ncol=2 if len(entries) > 5 else 1)
        x = np.arange(len(entries))
        gaps = [_pct(e["row"]["gap"]) for e in entries]
        bars = bx.bar(x, gaps, color=[e["color"] for e in entries], edgecolor="k", lw=0.5)
        for bar, e in zip(bars, entries):
            if e["ls"] == "--":
                bar.set_hatch("//")
        bx.set_xticks(x)
        bx.set_xticklabels([e["name"] for e in entries], rotation=35, ha="right")
        bx.set_ylabel(GAP_LABEL)
        bx.set_title("robust generalization gap")
        bx.grid(alpha=0.3, axis="y")
        table = pd.concat(records, ignore_index=True)[["name", "run", "file", "epoch", "gap", "sharpness",
                                                       "test_robust_acc", "alpha", "loss_mean", "loss_std", "n"]]
        return _save(fig, table, out_dir, name, catalog)


def fig_methods(catalog: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Fig. 1b: landscapes of the last checkpoints of AT, AT early stop, TRADES, MART, RST + gaps."""
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
    """Gap and test robust accuracy of the last checkpoint against gamma; AWP vs random (RWP)."""
    at = catalog[(catalog["method"] == "at") & ~catalog["is_best"]]
    rows = []
    for run, part in at.groupby("run"):
        last = part.loc[part["epoch"].idxmax()]
        kind = "random" if last["awp_kind"] == "random" and last["awp_gamma"] > 0 else "adversarial"
        rows.append({"run": run, "kind": kind, "awp_gamma": last["awp_gamma"], "epoch": last["epoch"],
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
            for ax, col in zip(axes, ("gap", "test_robust_acc")):
                ax.plot(mean["awp_gamma"], _pct(mean[col]), ms=4, lw=1.3, **styles[kind])
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
    "fig_gap_over_epochs": fig_gap_over_epochs, "fig_at_epochs": fig_at_epochs, "fig_methods": fig_methods,
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
