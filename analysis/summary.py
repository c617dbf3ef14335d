"""``summary.json`` of ``awp demo``: every number its report states, every seed's value kept, and
each comparison as a paired difference over seeds (:func:`analysis.seeds.paired_difference`).

Sections: the correlation of sharpness and gap over every checkpoint of every seed; AT's gap and
sharpness over epochs (paper Fig. 1a) and its early-stopping checkpoint; robust overfitting of AT
and AT-AWP from their per-epoch metrics (Rice et al. 2020; :mod:`analysis.overfitting`); AWP
against its base method at the last checkpoint; the gamma sweep. Which checkpoint is "the last"
or "the early-stopping" one is :mod:`analysis.rows`' choice, the same as the figures'.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from analysis import rows as select
from analysis.overfitting import overfitting_stats
from analysis.readers import read_config, read_metrics
from analysis.seeds import CONFIDENCE, mean_sd, paired_difference

INTERVAL = "Student t-interval of the per-seed differences"
SWEEP_PREFIXES = ("at-awp-gamma", "at-rwp")


def _rows(catalog: pd.DataFrame, name: str) -> pd.DataFrame:
    return catalog[catalog["name"] == name]


def _last(catalog: pd.DataFrame, name: str) -> dict[int, pd.Series]:
    """seed -> the last epoch checkpoint with a sharpness of each run called ``name``."""
    return select.by_seed(select.last_checkpoints(_rows(catalog, name), needs="sharpness"))


def _at_epochs(catalog: pd.DataFrame) -> dict[str, Any]:
    """AT's gap and sharpness at every saved epoch: per seed, mean and sd over seeds, and the
    paired change from the first saved epoch to the last."""
    at = select.epoch_checkpoints(_rows(catalog, "at"), needs="sharpness")
    if at.empty:
        return {}
    epochs = sorted(set.intersection(*(set(g["epoch"]) for _, g in at.groupby("seed"))))
    at = at[at["epoch"].isin(epochs)].sort_values(["seed", "epoch"])
    mean = []
    for epoch, g in at.groupby("epoch"):
        (gap, gap_sd), (sharp, sharp_sd) = mean_sd(g["gap"].tolist()), mean_sd(g["sharpness"].tolist())
        mean.append({"epoch": int(epoch), "gap": gap, "gap_sd": gap_sd, "sharpness": sharp, "sharpness_sd": sharp_sd,
                     "n": len(g)})
    first, last = at[at["epoch"] == epochs[0]], at[at["epoch"] == epochs[-1]]
    return {"per_seed": [{"seed": int(r.seed), "epoch": int(r.epoch), "gap": float(r.gap),
                          "sharpness": float(r.sharpness)} for r in at.itertuples()],
            "mean": mean, "first_epoch": int(epochs[0]), "last_epoch": int(epochs[-1]),
            "gap_change": paired_difference(first["gap"].tolist(), last["gap"].tolist()),
            "sharpness_change": paired_difference(first["sharpness"].tolist(), last["sharpness"].tolist())}


def _early_stopping(catalog: pd.DataFrame) -> dict[str, Any]:
    """Each seed's best.pt (best validation robust accuracy) against its last checkpoint:
    differences last minus best (positive: the early-stopping checkpoint is smaller / flatter)."""
    last = _last(catalog, "at")
    best = select.by_seed(select.early_stopping(_rows(catalog, "at"), needs="sharpness"))
    seeds = sorted(set(last) & set(best))
    if not seeds:
        return {}
    per_seed = [{"seed": k, "epoch": int(best[k]["epoch"]), "gap": float(best[k]["gap"]),
                 "sharpness": float(best[k]["sharpness"]), "last_epoch": int(last[k]["epoch"]),
                 "last_gap": float(last[k]["gap"]), "last_sharpness": float(last[k]["sharpness"])} for k in seeds]
    return {"per_seed": per_seed,
            "gap": paired_difference([p["gap"] for p in per_seed], [p["last_gap"] for p in per_seed]),
            "sharpness": paired_difference([p["sharpness"] for p in per_seed], [p["last_sharpness"] for p in per_seed])}


def _overfitting(catalog: pd.DataFrame) -> dict[str, Any]:
    """Robust overfitting of AT and AT-AWP per seed (:func:`analysis.overfitting.overfitting_stats`)
    and the headline's paired claims."""
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for name in ("at", "at-awp"):
        for run_dir, g in _rows(catalog, name).groupby("run_dir"):
            stats = overfitting_stats(read_metrics(run_dir), read_config(run_dir))
            runs.setdefault(name, {})[int(g["seed"].iloc[0])] = stats
    if "at" not in runs:
        return {}
    at = runs["at"]
    result: dict[str, Any] = {name: [{"seed": k, **v} for k, v in sorted(r.items())] for name, r in runs.items()}
    seeds = sorted(at)
    result["at_fall"] = paired_difference([at[k]["test_best"] for k in seeds], [at[k]["test_last"] for k in seeds])
    result["at_loss_rise"] = paired_difference([at[k]["loss_after_decay"] for k in seeds],
                                               [at[k]["loss_end"] for k in seeds])
    awp = runs.get("at-awp", {})
    both = sorted(set(at) & set(awp))
    if both:
        result["awp_fall"] = paired_difference([awp[k]["test_best"] for k in both], [awp[k]["test_last"] for k in both])
        for key in ("test_last", "test_best"):
            result[f"awp_minus_at_{key}"] = paired_difference([at[k][key] for k in both], [awp[k][key] for k in both])
    return result


def _pairs(catalog: pd.DataFrame, gammas: dict[str, float]) -> list[dict[str, Any]]:
    """Each method against its AWP variant at the last checkpoint, seed by seed."""
    pairs = []
    for method, gamma in gammas.items():
        base, awp = _last(catalog, method), _last(catalog, f"{method}-awp")
        seeds = sorted(set(base) & set(awp))
        if not seeds:
            continue
        per_seed = [{"seed": k, **{f"{q}{suffix}": float(row[q]) for q in ("sharpness", "gap", "test_robust_acc")
                                   for suffix, row in (("", base[k]), ("_awp", awp[k]))}} for k in seeds]
        pair: dict[str, Any] = {"method": method, "awp_gamma": gamma, "seeds": seeds, "per_seed": per_seed}
        for q in ("sharpness", "gap", "test_robust_acc"):
            pair[q] = paired_difference([p[q] for p in per_seed], [p[f"{q}_awp"] for p in per_seed])
            pair[f"{q}_mean"] = mean_sd([p[q] for p in per_seed])[0]
            pair[f"{q}_awp_mean"] = mean_sd([p[f"{q}_awp"] for p in per_seed])[0]
        pairs.append(pair)
    return pairs


def _sweep(catalog: pd.DataFrame, names: list[str]) -> list[dict[str, Any]]:
    """AT, AT-AWP, the gamma sweep and random weight perturbation at the last checkpoint: mean and
    sd over their seeds."""
    sweep = []
    for name in names:
        last = _last(catalog, name)
        if not last:
            continue
        rows = [last[k] for k in sorted(last)]
        entry: dict[str, Any] = {"run": name, "awp_kind": rows[0]["awp_kind"], "awp_gamma": float(rows[0]["awp_gamma"]),
                                 "seeds": sorted(last)}
        for q in ("gap", "test_robust_acc", "sharpness"):
            entry[q], entry[f"{q}_sd"] = mean_sd([float(r[q]) for r in rows])
            entry[f"{q}_per_seed"] = [float(r[q]) for r in rows]
        sweep.append(entry)
    return sweep


def build_summary(catalog: pd.DataFrame, table: pd.DataFrame, runs: list[Any], gammas: dict[str, float],
                  settings: Any) -> dict[str, Any]:
    """The summary of the demo's catalog (a ``name`` column: the comparison each run belongs to),
    its correlation ``table`` (one row, from :func:`analysis.correlation.correlate`), its runs and
    each method's AWP gamma."""
    row = table.iloc[0]
    names = list(dict.fromkeys(r.name for r in runs if r.name in ("at", "at-awp") or r.name.startswith(SWEEP_PREFIXES)))
    checkpoints = [{"run": r.run, "name": r.name, "seed": int(r.seed), "file": r.file, "epoch": int(r.epoch),
                    "is_best": bool(r.is_best), "gap": float(r.gap), "train_robust_acc": float(r.train_robust_acc),
                    "test_robust_acc": float(r.test_robust_acc), "sharpness": float(r.sharpness)}
                   for r in catalog.dropna(subset=["sharpness"]).itertuples()]
    return {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.__dict__.items()},
        "seeds": sorted({int(k) for k in catalog["seed"].dropna()}), "confidence": CONFIDENCE, "interval": INTERVAL,
        "gap_attack": sorted(catalog["attack"].dropna().unique().tolist()),  # train and test, eval mode
        "landscape": {k: sorted(v if isinstance(v, str) else int(v) for v in catalog[c].dropna().unique())
                      for k, c in (("attack", "landscape_attack"), ("split", "landscape_split"),
                                   ("samples", "landscape_samples")) if c in catalog},
        "n_checkpoints": int(row["n"]), "n_runs": int(catalog.dropna(subset=["sharpness"])["run"].nunique()),
        "spearman": float(row["spearman"]), "spearman_p": float(row["spearman_p"]),
        "spearman_ci": [float(row["spearman_lo"]), float(row["spearman_hi"])],
        "kendall": float(row["kendall"]), "kendall_p": float(row["kendall_p"]),
        "kendall_ci": [float(row["kendall_lo"]), float(row["kendall_hi"])],
        "pearson": float(row["pearson"]),
        "at_epochs": _at_epochs(catalog), "early_stopping": _early_stopping(catalog),
        "overfitting": _overfitting(catalog), "awp_vs_base": _pairs(catalog, gammas),
        "gamma_sweep": _sweep(catalog, names), "checkpoints": checkpoints,
    }
