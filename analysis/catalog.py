"""Runs catalog: one row per checkpoint with its robust generalization gap and landscape flatness.

The gap is the one of Wu, Xia, Wang (NeurIPS 2020, Sec. 3): training robust accuracy minus
test robust accuracy under the same attack, measured at the unperturbed weights in eval mode
(``awp.metrics``; *not* the official logs' train accuracy measured at w + v in train mode).
Flatness scalars (``sharpness``, ``curvature``, ...) come from the ``landscape.json`` files that
``awp landscape`` writes, joined by the checkpoint's sha256 (never by file name, so a renamed or
copied checkpoint still finds its landscape and a retrained one never picks up a stale one).

Rows. Every ``epoch_NNN.pt`` and every ``best.pt`` is a row; ``last.pt`` is a row only when no
other checkpoint of its run has its epoch (a run saved without ``save_every`` hitting the final
epoch). ``best.pt`` is its own row with ``is_best=True`` even when an ``epoch_NNN.pt`` of the same
epoch exists (the two files differ in bytes because best.pt records ``selected_on``); epoch rows
always have ``is_best=False``. Since best.pt and epoch_NNN.pt of the same run and epoch hold the same
weights (both are written at the end of that epoch), a best.pt without its own landscape borrows
the landscape scalars of that epoch file; ``landscape_source`` says which file's landscape a row uses.

Every file is read through a checking reader (:mod:`analysis.readers` for config.json, checkpoint
metadata and measures.json; :func:`landscape.io.read_result` for landscape.json): a damaged one is
one line naming it, never a row silently left out. :func:`read_metrics` and :data:`METRIC_COLUMNS`
live in :mod:`analysis.readers` and are importable from here.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from analysis.readers import (MEASURED_SPLITS, METRIC_COLUMNS, QUANTITIES, check_checkpoint, read_config,
                              read_measures, read_metrics)
from awp.errors import UserError, one_line

__all__ = ["COLUMNS", "MEASURED_SPLITS", "METRIC_COLUMNS", "QUANTITIES", "add_labels", "collect_landscapes",
           "collect_measures", "collect_runs", "find_runs", "join_landscapes", "legend_label", "read_metrics",
           "unique_checkpoints"]
METHOD_NAMES = {"at": "AT", "trades": "TRADES", "mart": "MART", "rst": "RST", "standard": "Standard"}
COLUMNS = (["run", "label", "method", "awp_gamma", "awp_kind", "epoch", "is_best", "is_last", "file",
            "path", "sha256", "dataset", "arch"] + METRIC_COLUMNS
           + ["gap", "attack", "metrics_source", "sharpness", "curvature", "landscape_dir", "landscape_source"])
MEASURE_PREFIX = "measure_"  # catalog columns of awp measures' values
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


# ----------------------------------------------------------------------------------------- runs
def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(_checkpoint_files(folder))


def _checkpoint_files(folder: Path) -> Iterable[Path]:
    for p in folder.iterdir():
        if p.is_file() and (_EPOCH_FILE.match(p.name) or p.name in ("best.pt", "last.pt")):
            yield p


def find_runs(runs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Run folders (config.json plus checkpoints) under a folder at any depth, or a list of them."""
    if isinstance(runs, (str, Path)):
        root = Path(runs)
        if not root.exists():
            raise UserError(f"runs folder not found: {root}")
        if not root.is_dir():
            raise UserError(f"{root} is not a folder (expected a folder of training runs)")
        if _is_run(root):
            return [root]
        found = sorted(p.parent for p in root.rglob("config.json") if _is_run(p.parent))
        if not found:
            what = "is empty" if not any(root.iterdir()) else "holds no training run (config.json + checkpoints)"
            raise UserError(f"runs folder {root} {what}")
        return found
    # A list: each item is a run folder or a folder of runs.
    folders: list[Path] = []
    for item in runs:
        for folder in find_runs(Path(item)):
            if folder not in folders:
                folders.append(folder)
    if not folders:
        raise UserError("no run folders given")
    return folders


def _run_names(folders: list[Path]) -> list[str]:
    """Folder names, prefixed with parents where two runs share a name (seed0/at, seed1/at)."""
    names = [f.name for f in folders]
    depth = 1
    while len(set(names)) != len(names) and depth < 8:
        depth += 1
        names = ["/".join(f.parts[-depth:]) for f in folders]
    return names


def _select_files(folder: Path) -> list[tuple[Path, int | None]]:
    """(file, epoch from its name or None) following the row rules of the module docstring."""
    files = sorted(_checkpoint_files(folder))
    epochs = {p: int(m.group(1)) for p in files if (m := _EPOCH_FILE.match(p.name))}
    return [(p, epochs.get(p)) for p in files]


# ----------------------------------------------------------------------------------- landscapes
def collect_landscapes(landscapes: str | Path | Iterable[str | Path] | None) -> pd.DataFrame:
    """One row per ``landscape.json`` found (any depth): sha256, folder, the attack, split and sample
    count the landscape was computed with, every flatness scalar.

    When several landscapes exist for one checkpoint (different settings), the most recently
    written one is kept, so rerunning ``awp landscape`` with new settings supersedes the old.
    """
    if landscapes is None:
        return pd.DataFrame(columns=["sha256", "landscape_dir"])
    from landscape import io as lio

    roots = [Path(landscapes)] if isinstance(landscapes, (str, Path)) else [Path(p) for p in landscapes]
    rows = []
    for root in roots:
        if not root.exists():
            raise UserError(f"landscapes folder not found: {root}")
        for folder in lio.find_results(root):
            _, info = lio.read_result(folder)  # checked: a damaged result is one line, not a lost row
            sha = info.get("checkpoint_sha256")
            if sha is None:
                raise UserError(f"{folder / lio.JSON} names no checkpoint (no checkpoint_sha256), so it cannot "
                                f"be joined to one")
            flat = {k: np.nan if v is None else float(v) for k, v in (info.get("flatness") or {}).items()}
            settings = info.get("settings") or {}
            provenance = {"landscape_attack": (settings.get("attack") or {}).get("name"),
                          "landscape_split": settings.get("split"), "landscape_samples": settings.get("samples")}
            rows.append({"sha256": sha, "landscape_dir": str(folder), "_mtime": (folder / lio.JSON).stat().st_mtime,
                         **provenance, **flat})
    if not rows:
        return pd.DataFrame(columns=["sha256", "landscape_dir"])
    df = pd.DataFrame(rows).sort_values("_mtime").drop_duplicates("sha256", keep="last")
    df["landscape_samples"] = df["landscape_samples"].astype("Int64")  # a count, kept whole beside NaN
    return df.drop(columns="_mtime").reset_index(drop=True)


def collect_measures(measures: str | Path | Iterable[str | Path] | None) -> pd.DataFrame:
    """One row per ``measures.json`` found (any depth, written by ``awp measures``): sha256 and one
    column per measure value; the most recently written file wins for a checkpoint."""
    if measures is None:
        return pd.DataFrame(columns=["sha256"])
    roots = [Path(measures)] if isinstance(measures, (str, Path)) else [Path(p) for p in measures]
    rows = []
    for root in roots:
        if not root.exists():
            raise UserError(f"measures folder not found: {root}")
        for f in ([root] if root.is_file() else sorted(root.rglob("measures.json"))):
            sha, values = read_measures(f)  # checked: a damaged file is one line, not a lost row
            rows.append({"sha256": sha, "_mtime": f.stat().st_mtime, **values})
    if not rows:
        return pd.DataFrame(columns=["sha256"])
    df = pd.DataFrame(rows).sort_values("_mtime").drop_duplicates("sha256", keep="last")
    return df.drop(columns="_mtime").reset_index(drop=True)


# -------------------------------------------------------------------------------------- metrics
def _has_metrics(metrics: Any) -> bool:
    if not isinstance(metrics, dict):
        return False
    return all(isinstance(metrics.get(k), (int, float)) and math.isfinite(metrics[k]) for k in METRIC_COLUMNS)


class _Recompute:
    """Recomputes a checkpoint's train/test metrics exactly like ``awp.train`` does after an epoch.

    Same subsets (the first ``eval_train_samples`` training images, the first ``eval_test_samples``
    or all test images), same seeded attack (PGD-eval_steps, step eps/4, the run seed), eval mode.
    Data sets are cached per config so a run's checkpoints share one load.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device  # resolved on first use: a catalog that recomputes nothing needs no device
        self._data: dict[str, Any] = {}

    def __call__(self, path: Path, payload: dict[str, Any]) -> tuple[dict[str, float], str]:
        from awp.checkpoint import load_run
        from awp.config import config_from_dict
        from awp.runtime import resolve_runtime
        from awp.epoch_metrics import epoch_metrics

        runtime = resolve_runtime(self.device)
        if not isinstance(payload.get("config"), dict):
            raise UserError(f"{path} has no metrics and no training config to recompute them from")
        try:
            config = config_from_dict(payload["config"])
        except UserError as exc:  # the stored config's own fault, not the command's usage: exit 1
            raise UserError(f"{path}: its training config cannot rebuild the run to recompute its metrics: "
                            f"{one_line(exc)}") from exc
        key = json.dumps([config.dataset, config.data_dir, config.val_size, config.train_subset,
                          config.split_seed], default=str)
        run = load_run(path, runtime.device, data=self._data.get(key))
        run.config = config  # the run folder's config where the checkpoint stores none
        self._data[key] = run.data
        # The training loop's own measurement and attack, not a copy of them.
        metrics = epoch_metrics(run.model, run.data, config, run.attack, runtime, splits=("train", "test"))
        return metrics, run.attack.name


# -------------------------------------------------------------------------------------- labels
RANDOM_SUFFIX = "-RWP"  # the labels' mark of random weight perturbation (awp_kind 'random')


def _base_label(method: str, gamma: float, kind: str) -> str:
    name = METHOD_NAMES.get(str(method).lower(), str(method).upper())
    if gamma and gamma > 0:
        name += RANDOM_SUFFIX if kind == "random" else "-AWP"
    return name


def legend_label(label: str) -> str:
    """A label as a legend shows it: random weight perturbation spelled out ('AT-RWP' -> 'AT +
    random weight perturbation'), since RWP also abbreviates Yu et al.'s Robust Weight Perturbation.
    The catalog and its CSVs keep the short label."""
    base, sep, rest = label.partition(RANDOM_SUFFIX)
    return f"{base} + random weight perturbation{rest}" if sep else label


def add_labels(df: pd.DataFrame) -> pd.Series:
    """Human labels ('AT', 'AT-AWP', 'MART-AWP', 'AT-RWP'); gamma is appended when the catalog holds
    several gammas of the same method and kind (a sweep), e.g. 'AT-AWP (γ=0.005)'."""
    base = [_base_label(m, g, k) for m, g, k in zip(df["method"], df["awp_gamma"], df["awp_kind"])]
    base = pd.Series(base, index=df.index)
    gammas = df.assign(_b=base).groupby("_b")["awp_gamma"].nunique()
    return pd.Series([f"{b} (γ={g:g})" if g > 0 and gammas[b] > 1 else b
                      for b, g in zip(base, df["awp_gamma"])], index=df.index)


# ------------------------------------------------------------------------------------- catalog
def collect_runs(runs: str | Path | Iterable[str | Path], landscapes: str | Path | Iterable[str | Path] | None = None,
                 *, recompute: bool = False, device: str = "cpu",
                 measures: str | Path | Iterable[str | Path] | None = None) -> pd.DataFrame:
    """Catalog of every checkpoint of ``runs`` (see the module docstring for which files are rows).

    ``runs``: a folder holding run folders at any depth (or a run folder itself), or a list of run
    folders. ``landscapes``: folder(s) searched for ``landscape.json``; their flatness scalars are
    joined by checkpoint sha256 (NaN where a checkpoint has none). ``recompute``: measure train/test
    metrics again even when the checkpoint stores them (``metrics_source`` says which were used).
    ``measures``: folder(s) searched for ``measures.json`` (``awp measures``); one column per measure.
    Columns: :data:`COLUMNS` plus any further flatness scalar found; sorted by run, epoch, is_best.
    """
    folders = find_runs(runs)
    recomputer = _Recompute(device)  # loads nothing until a checkpoint needs it
    rows = [row for folder, name in zip(folders, _run_names(folders))
            for row in _run_rows(folder, name, recomputer, recompute)]
    if not rows:
        raise UserError("no checkpoints found in the given runs")
    df = pd.DataFrame(rows)
    df["gap"] = df["train_robust_acc"] - df["test_robust_acc"]
    df["label"] = add_labels(df)

    df = join_landscapes(df, collect_landscapes(landscapes))
    measured = collect_measures(measures)  # prefixed: a measure may share a landscape scalar's name
    df = df.merge(measured.rename(columns={c: MEASURE_PREFIX + c for c in measured.columns if c != "sha256"}),
                  on="sha256", how="left")

    df = df.sort_values(["run", "epoch", "is_best", "file"], kind="stable").reset_index(drop=True)
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[COLUMNS + extra]


def join_landscapes(df: pd.DataFrame, lands: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the landscapes ``lands`` (:func:`collect_landscapes`) joined by sha256, replacing
    any landscape columns it had: flatness scalars, ``landscape_dir`` and ``landscape_source``, and
    best.pt rows borrowing their epoch twin's landscape (module docstring)."""
    df = df.drop(columns=[c for c in lands.columns if c != "sha256" and c in df.columns])
    df = df.merge(lands, on="sha256", how="left")
    for col in ("sharpness", "curvature", "landscape_dir"):
        if col not in df:
            df[col] = np.nan
    df["landscape_source"] = np.where(df["landscape_dir"].notna(), df["file"], None)
    _borrow_best_landscape(df, [c for c in lands.columns if c != "sha256"])
    return df


def _run_rows(folder: Path, name: str, recomputer: "_Recompute", recompute: bool) -> list[dict[str, Any]]:
    """One catalog row per selected checkpoint of a run folder; last.pt only when no epoch_NNN.pt
    or best.pt covers its epoch."""
    from awp.checkpoint import read_checkpoint
    from awp.io import sha256_file

    run_config = read_config(folder)
    rows = []
    for path, _ in _select_files(folder):
        payload = read_checkpoint(path)
        check_checkpoint(path, payload)
        config = payload.get("config") if isinstance(payload.get("config"), dict) else run_config
        metrics = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else {}
        if recompute or not _has_metrics(metrics):
            values, attack = recomputer(path, {**payload, "config": config})
            source = "recomputed"
        else:
            values, attack = {k: float(metrics[k]) for k in METRIC_COLUMNS}, metrics.get("attack")
            source = "checkpoint"
        val = metrics.get("val_robust_acc")
        rows.append({
            "run": name, "run_dir": str(folder), "file": path.name, "path": str(path.resolve()),
            "sha256": sha256_file(path), "dataset": payload.get("dataset", config.get("dataset")),
            "arch": payload.get("arch"), "method": payload.get("method", config.get("method", "at")),
            "awp_gamma": float(payload.get("awp_gamma", config.get("awp_gamma", 0.0)) or 0.0),
            "awp_kind": config.get("awp_kind", "adversarial") or "adversarial", "seed": config.get("seed"),
            "epoch": _epoch(payload), "is_best": path.name == "best.pt",
            "is_last": path.name == "last.pt", **values, "attack": attack, "metrics_source": source,
            "val_robust_acc": float(val) if isinstance(val, (int, float)) else np.nan,
        })
    covered = {r["epoch"] for r in rows if not r["is_last"]}
    return [r for r in rows if not r["is_last"] or r["epoch"] not in covered]


def _epoch(payload: dict[str, Any]) -> int:
    """The checkpoint's epoch; -1 where it records none (an imported checkpoint stores None)."""
    epoch = payload.get("epoch")
    return -1 if epoch is None else int(epoch)


def _borrow_best_landscape(df: pd.DataFrame, columns: list[str]) -> None:
    """In place: best.pt rows without a landscape take that of epoch_NNN.pt of the same run and
    epoch (same weights, see the module docstring)."""
    for i in df.index[df["is_best"] & df["landscape_dir"].isna()]:
        twin = df[(df["run"] == df.at[i, "run"]) & (df["epoch"] == df.at[i, "epoch"])
                  & ~df["is_best"] & df["landscape_dir"].notna()]
        if len(twin):
            j = twin.index[0]
            for c in columns:
                df.at[i, c] = df.at[j, c]
            df.at[i, "landscape_source"] = df.at[j, "file"]


def unique_checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """The catalog without best.pt rows whose run also has an epoch_NNN.pt of the same epoch (the
    same weights), so correlations and scatter plots count each set of weights once."""
    epoch_rows = set(zip(df.loc[~df["is_best"], "run"], df.loc[~df["is_best"], "epoch"]))
    dup = df["is_best"] & pd.Series([(r, e) in epoch_rows for r, e in zip(df["run"], df["epoch"])], index=df.index)
    return df[~dup]
