"""Which measure predicts the robust generalization gap: correlations and granulated Kendall tau.

Jiang et al. (ICLR 2020, "Fantastic Generalization Measures and Where to Find Them", Sec. 4) and
Dziugaite et al. (NeurIPS 2020, "In Search of Robust Measures of Generalization") rank measures by
Kendall's tau with the generalization gap over all models, and by the granulated tau: for one
hyperparameter axis i at a time, the models that agree on every other axis form a group, tau is
computed within each group (so only axis i varies in it), and

    psi_i = (1 / m_i) sum_{groups g} tau_g(measure, gap),      Psi = (1 / |axes|) sum_i psi_i.

Here: tau is Kendall's tau-b (scipy, ties corrected; Jiang et al. write tau-a, equal without
ties); a group enters psi_i only when tau is defined in it (at least two checkpoints and neither
column constant), so m_i counts those groups (reported as ``groups_<axis>``); an axis enters Psi
only when some group defines it. The axes are the hyperparameter columns of the catalog that vary
(default: epoch, method, awp_gamma, seed); ``fixed`` columns (e.g. ``awp_kind``) are held fixed in
every group without being axes. Pearson r, Spearman rho and Kendall tau over all checkpoints,
with p-values and percentile bootstrap intervals, come from :func:`analysis.correlation.correlation`.

:func:`plot_measure_ranking` draws ``fig_measures.png``: the measures sorted by |tau| (the
strongest predictor, of either sign, on top), each with its bootstrap interval and its granulated tau.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.correlation import MIN_POINTS, STATISTICS, check_columns, correlation
from awp.errors import UsageError, UserError

AXES = ("epoch", "method", "awp_gamma", "seed")


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    with warnings.catch_warnings():  # a constant column: scipy warns and returns NaN, which is skipped
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(x, y)[0])


def varying_axes(df: pd.DataFrame, axes: Sequence[str] | None = None) -> list[str]:
    """The axes to granulate over: ``axes`` (each must be a column), default those of :data:`AXES`
    present in ``df``; only the ones that take at least two values are kept."""
    if axes is None:
        axes = [a for a in AXES if a in df.columns]
    check_columns(df, axes, "hyperparameter axis column")
    return [a for a in axes if df[a].nunique(dropna=True) >= 2]


def granulated_tau(df: pd.DataFrame, x: str, y: str, axes: Sequence[str],
                   fixed: Sequence[str] = ()) -> dict[str, float]:
    """psi_i for every axis i (``tau_<axis>``, ``groups_<axis>``) and their mean ``granulated_tau``.

    Rows where ``x`` or ``y`` is not finite are left out. Module docstring for the definition.
    """
    keep = np.isfinite(df[x].to_numpy(float)) & np.isfinite(df[y].to_numpy(float))
    df = df[keep]
    out: dict[str, float] = {}
    psis = []
    for axis in axes:
        others = [a for a in axes if a != axis] + list(fixed)
        groups = [part for _, part in df.groupby(others, dropna=False, sort=True)] if others else [df]
        taus = [_kendall(g[x].to_numpy(float), g[y].to_numpy(float)) for g in groups if len(g) >= 2]
        taus = [t for t in taus if np.isfinite(t)]
        out[f"tau_{axis}"] = float(np.mean(taus)) if taus else np.nan
        out[f"groups_{axis}"] = len(taus)
        if taus:
            psis.append(out[f"tau_{axis}"])
    out["granulated_tau"] = float(np.mean(psis)) if psis else np.nan
    return out


def rank_measures(df: pd.DataFrame, measures: Sequence[str], gap: str = "gap", axes: Sequence[str] | None = None, *,
                  fixed: Sequence[str] = (), n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per measure: n, ci, pearson/spearman/kendall with ``_p``, ``_lo``, ``_hi`` (bootstrap
    ``ci`` interval, ``n_boot`` resamples, seeded), ``granulated_tau`` and ``tau_<axis>`` /
    ``groups_<axis>`` for each varying axis; sorted by |kendall|, strongest first.

    ``df``: one row per checkpoint (each set of weights once: :func:`analysis.catalog.unique_checkpoints`)
    with the gap and one column per measure. A measure with fewer than 3 finite points keeps its
    row with n and NaN statistics; when no measure has 3, :class:`UsageError`.
    """
    measures = list(measures)
    if not measures:
        raise UsageError("no measures to rank")
    check_columns(df, [gap, *measures, *fixed])
    used = varying_axes(df, axes)
    rows = []
    for name in measures:
        x, y = df[name].to_numpy(float), df[gap].to_numpy(float)
        try:
            stat = correlation(x, y, n_boot=n_boot, ci=ci, seed=seed, names=(name, gap))
        except UsageError:
            stat = {"n": int((np.isfinite(x) & np.isfinite(y)).sum())}
        rows.append({"measure": name, "ci": ci, **stat, **granulated_tau(df, name, gap, used, fixed)})
    if all(r["n"] < MIN_POINTS for r in rows):
        raise UsageError(f"need at least {MIN_POINTS} checkpoints with both {gap} and a measure to rank, "
                         f"got at most {max(r['n'] for r in rows)}")
    columns = (["measure", "n", "ci"] + [f"{s}{suffix}" for s in STATISTICS for suffix in ("", "_p", "_lo", "_hi")]
               + ["granulated_tau"] + [f"{k}_{a}" for a in used for k in ("tau", "groups")])
    table = pd.DataFrame(rows).reindex(columns=columns)
    order = (-table["kendall"].abs()).fillna(np.inf).argsort(kind="stable")
    return table.iloc[order].reset_index(drop=True)


def plot_measure_ranking(ranking: pd.DataFrame, path: str | Path) -> list[Path]:
    """Draw ``ranking`` (:func:`rank_measures`) as ``path`` (PNG), with a PDF and the CSV drawn from
    beside it; returns the three paths. Measures sorted by |Kendall tau|, strongest on top, each with
    its bootstrap interval and (diamond) its granulated tau. Uses no pyplot state and selects no
    backend, so it is safe in a notebook."""
    import matplotlib
    from matplotlib.figure import Figure

    from analysis.output import save_figure
    from analysis.style import STYLE

    for col in ("measure", "n", "kendall", "kendall_lo", "kendall_hi"):
        if col not in ranking.columns:
            raise UsageError(f"the ranking table has no {col!r} column (expected rank_measures' output)")
    table = ranking[np.isfinite(ranking["kendall"].to_numpy(float))]
    if table.empty:
        raise UsageError("no measure has a Kendall tau to draw (fewer than 3 checkpoints each)")
    table = table.iloc[(-table["kendall"].abs()).argsort(kind="stable")].reset_index(drop=True)
    png = Path(path)
    ypos = np.arange(len(table))[::-1]  # the strongest on top
    level = f"{100 * float(table['ci'].iloc[0]):g}%" if "ci" in table else "confidence"
    tau, lo, hi = (table[c].to_numpy(float) for c in ("kendall", "kendall_lo", "kendall_hi"))
    # A percentile bootstrap interval need not contain the estimate (a few tied points): the bars
    # reach from tau towards each end, clipped at tau, and the interval itself is drawn beneath them.
    err = np.clip(np.nan_to_num(np.vstack([tau - lo, hi - tau])), 0, None)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 1.5 + 0.3 * len(table)), layout="constrained")
        ax = fig.add_subplot()
        ax.hlines(ypos, lo, hi, color="#a6cee3", lw=2)
        ax.errorbar(tau, ypos, xerr=err, fmt="o", ms=4, color="#1f78b4", ecolor="#a6cee3", elinewidth=2,
                    capsize=2, label=f"Kendall τ over all checkpoints (bootstrap {level} interval)")
        if "granulated_tau" in table and np.isfinite(table["granulated_tau"].to_numpy(float)).any():
            ax.scatter(table["granulated_tau"], ypos, marker="D", s=18, color="#e31a1c", zorder=3,
                       label="granulated τ (mean over hyperparameter axes)")
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_yticks(ypos)
        ax.set_yticklabels(table["measure"])
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel("rank correlation with the robust gap (Kendall τ)")
        n_lo, n_hi = int(table["n"].min()), int(table["n"].max())
        ax.set_title(f"Which measure predicts the robust gap? (n = {n_lo if n_lo == n_hi else f'{n_lo}–{n_hi}'}"
                     " checkpoints)")
        ax.grid(alpha=0.3, axis="x")
        fig.legend(loc="outside lower center", ncol=2)
    return save_figure(fig, table, png.parent, png.stem)


def rank_catalog(catalog: pd.DataFrame, gap: str = "gap", *, landscape: Sequence[str] = (),
                 n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """:func:`rank_measures` over a catalog (:func:`analysis.catalog.collect_runs` with ``measures=``):
    every ``measure_*`` column, plus the landscape scalars named in ``landscape`` (e.g. the curve
    ``sharpness`` of ``awp landscape``, ranked as ``landscape_sharpness``), each set of weights once."""
    from analysis.catalog import MEASURE_PREFIX, unique_checkpoints

    columns = [c for c in catalog.columns if c.startswith(MEASURE_PREFIX)]
    if not columns or catalog[columns].isna().all().all():
        raise UserError("no measure of any checkpoint in the catalog; run `awp measures` on them")
    rename = {c: c[len(MEASURE_PREFIX):] for c in columns}
    rename.update({c: f"landscape_{c}" for c in landscape if c in catalog})
    table = unique_checkpoints(catalog).rename(columns=rename)
    return rank_measures(table, list(rename.values()), gap, n_boot=n_boot, ci=ci, seed=seed,
                         fixed=[c for c in ("awp_kind", "dataset") if c in table])


def ranking_rows(ranking: pd.DataFrame) -> list[dict[str, Any]]:
    """The ranking as plain rows for summary.json: measure, n, the three statistics with their
    intervals, the granulated tau; in the ranking's order (strongest |Kendall tau| first)."""
    keep = ["measure", "n", "kendall", "kendall_lo", "kendall_hi", "spearman", "spearman_lo", "spearman_hi",
            "pearson", "pearson_lo", "pearson_hi", "granulated_tau"]
    rows = ranking[[c for c in keep if c in ranking]].to_dict("records")
    return [{k: (int(v) if k == "n" else v if isinstance(v, str) else float(v)) for k, v in r.items()} for r in rows]


def write_ranking(ranking: pd.DataFrame, folder: str | Path) -> list[Path]:
    """``measure_ranking.csv`` and ``fig_measures.png`` (+ its PDF and CSV) in ``folder``."""
    from awp.io import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "measure_ranking.csv", ranking.to_csv(index=False))
    return [folder / "measure_ranking.csv", *plot_measure_ranking(ranking, folder / "fig_measures.png")]
