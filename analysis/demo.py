"""``awp demo``: the paper's whole story, offline, on a 2-core CPU, in minutes.

Wu, Xia, Wang (NeurIPS 2020) observe that a flatter adversarial weight loss landscape goes with
a smaller robust generalization gap (Fig. 1), and that AWP flattens it explicitly (Sec. 4-5).
The demo reproduces that chain on scikit-learn's 8x8 digits (the README's "What `awp demo` shows"):

1. trains a standard model, pseudo-labels the training images the robust runs do not use (RST's
   unlabeled pool), and trains AT (checkpoints every 5 epochs, so early stopping is visible),
   AT-AWP, TRADES, TRADES-AWP, MART, MART-AWP, RST, RST-AWP, a small gamma sweep of AT-AWP and
   random weight perturbation (RWP) of AT-AWP's size, two runs at a time;
2. computes every checkpoint's adversarial weight loss curve (PGD re-run at every perturbed
   weight, filter-normalized directions with the same seeds for every checkpoint);
3. catalogs checkpoints with their gaps and sharpness, correlates them, draws the figures, and
   writes ``summary.json`` and ``report.md`` into ``--out``.

Runs and landscapes go to ``--work`` (not committed); an interrupted demo resumes from them.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from awp.errors import UsageError
from awp.io import atomic_write_json, atomic_write_text, check_output_folder


@dataclass(frozen=True)
class DemoRun:
    """One training run of the demo: a preset plus overrides; ``every`` marks runs whose every
    saved epoch gets a landscape (AT: the paper's Fig. 1a), others get their last and best."""

    name: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    every: bool = False
    unlabeled: bool = False


GAMMAS = (0.005, 0.01, 0.05)  # the sweep around digits-at-awp's 0.02
NOISE = 0.03  # epoch-to-epoch spread of the gap on digits' small evaluation sets


def demo_runs() -> list[DemoRun]:
    runs = [DemoRun("at", "digits-at", every=True), DemoRun("at-awp", "digits-at-awp", every=True)]
    for method in ("trades", "mart"):
        runs += [DemoRun(method, f"digits-{method}"), DemoRun(f"{method}-awp", f"digits-{method}-awp")]
    runs += [DemoRun("rst", "digits-rst", unlabeled=True), DemoRun("rst-awp", "digits-rst-awp", unlabeled=True)]
    runs += [DemoRun(f"at-awp-gamma{g}", "digits-at-awp", {"awp_gamma": g}) for g in GAMMAS]
    runs += [DemoRun("at-rwp", "digits-at-awp", {"awp_kind": "random"})]
    return runs


@dataclass(frozen=True)
class Settings:
    """Sizes of the full demo and of ``--quick`` (the tests' version)."""

    epochs: int = 60
    save_every: int = 5
    eval_steps: int = 10
    standard_epochs: int = 30
    directions: int = 3
    alphas: str = "-1:1:11"
    samples: int = 256
    landscape_steps: int = 10
    radius: float = 0.5
    n_boot: int = 2000


QUICK = Settings(epochs=6, save_every=2, eval_steps=3, standard_epochs=4, directions=2,
                 alphas="-1:1:5", samples=64, landscape_steps=3, n_boot=200)


def _train(name: str, preset: str, overrides: dict[str, Any], run_dir: str) -> str:
    """Train (or resume, or reuse) one run in a worker process, on one thread."""
    import torch

    torch.set_num_threads(1)
    from awp.config import load_preset
    from awp.train import fit

    config = load_preset(preset, overrides)
    run = Path(run_dir)
    last = run / "last.pt"
    if last.exists():
        from awp.checkpoint import read_checkpoint

        if read_checkpoint(last)["epoch"] >= config.epochs:
            return name  # already complete: the demo resumes where it stopped
    fit(config, run, resume=last.exists(), progress=False)
    return name


def _landscape(run_dir: str, checkpoints: list[str], out: str, s: Settings) -> str:
    """The run's landscapes through :func:`landscape.compute_landscape` (the files, cache and
    resume of ``awp landscape``), plus the overlay of its curves."""
    import torch

    torch.set_num_threads(1)
    from landscape.compute import LandscapeConfig, compute_landscape, parse_range
    from landscape.plot import plot_curves

    config = LandscapeConfig(directions=s.directions, alphas=tuple(parse_range(s.alphas)), samples=s.samples,
                             steps=s.landscape_steps, radius=s.radius, split="train")
    curves = {Path(c).stem: compute_landscape(c, config, Path(out) / Path(c).stem, device="cpu").table
              for c in checkpoints}
    plot_curves(curves, Path(out) / "curves.png", normalization=config.normalization, loss=config.loss,
                steps=config.steps)
    return run_dir


def _parallel(jobs: list[tuple[Callable, tuple]], workers: int, log: Callable[[str], None]) -> None:
    if workers <= 1:
        for fn, job in jobs:
            log(f"  done: {fn(*job)}")
        return
    with futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = [pool.submit(fn, *job) for fn, job in jobs]
        for done in futures.as_completed(pending):
            log(f"  done: {done.result()}")


def _checkpoints(run_dir: Path, every: bool) -> list[str]:
    epochs = sorted(run_dir.glob("epoch_*.pt"))
    chosen = epochs if every else epochs[-1:]
    best = run_dir / "best.pt"
    return [str(p) for p in chosen] + ([str(best)] if best.exists() else [])


def run_demo(out: str | Path = "figures", work: str | Path = "runs/demo", *, quick: bool = False,
             workers: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to ``out/summary.json``)."""
    started = time.perf_counter()
    s = QUICK if quick else Settings()
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    out, work = check_output_folder(out, "--out"), check_output_folder(work, "--work")
    runs_dir, lands_dir = work / "runs", work / "landscapes"
    common = {"epochs": s.epochs, "save_every": s.save_every, "eval_steps": s.eval_steps}
    runs = demo_runs()

    log(f"[1/4] training: a standard model, then {len(runs)} robust runs ({workers} at a time)")
    std = runs_dir / "standard"
    jobs = [(_train, ("standard", "digits-standard", {"epochs": s.standard_epochs, "eval_steps": 1}, str(std)))]
    jobs += [(_train, (r.name, r.preset, {**common, **r.overrides}, str(runs_dir / r.name))) for r in runs if not r.unlabeled]
    _parallel(jobs, workers, log)
    pool_file = work / "pseudo_labeled_pool.npz"
    agreement = _pseudo_label(std / "last.pt", pool_file)
    log(f"  pseudo-labeled RST's pool with the standard model (agreement with true labels {agreement:.3f})")
    _parallel([(_train, (r.name, r.preset, {**common, **r.overrides, "unlabeled": str(pool_file)},
                         str(runs_dir / r.name))) for r in runs if r.unlabeled], workers, log)

    log("[2/4] landscapes: adversarial loss along filter-normalized directions, PGD re-run at every point")
    _parallel([(_landscape, (str(runs_dir / r.name), _checkpoints(runs_dir / r.name, r.every),
                             str(lands_dir / r.name), s)) for r in runs], workers, log)

    log("[3/4] catalog and correlation")
    from analysis.catalog import collect_runs, unique_checkpoints
    from analysis.correlation import correlate
    from analysis.figures import make_figures

    catalog = collect_runs([runs_dir / r.name for r in runs], lands_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = unique_checkpoints(catalog).dropna(subset=["sharpness", "gap"])
    table = correlate(checkpoints, "sharpness", "gap", n_boot=s.n_boot)

    log("[4/4] figures")
    from awp.config import load_preset

    gammas = {m: load_preset(f"digits-{m}-awp", {"unlabeled": "x"} if m == "rst" else {}).awp_gamma
              for m in ("at", "trades", "mart", "rst")}
    made = make_figures(catalog, out, n_boot=s.n_boot, awp_gammas=gammas)
    for note in made.notes:
        log(f"  {note}")
    summary = _summary(catalog, checkpoints, table, runs, gammas, s, quick, time.perf_counter() - started)
    summary["pseudo_label_agreement"] = agreement
    summary["setup"] = _setup(runs_dir / "at")
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", _report(summary))
    log(f"done in {summary['duration_s']:.0f} s: {out / 'report.md'}")
    return summary


def _pseudo_label(checkpoint: Path, out: Path) -> float:
    from awp.data import pseudo_label_checkpoint

    return pseudo_label_checkpoint(checkpoint, out)[1]


def _setup(run_dir: Path) -> dict[str, Any]:
    """What the report says about the setup, read from the AT run itself (its config and data)."""
    from awp.config import config_from_dict
    from awp.data import build_dataset

    config = config_from_dict(json.loads((run_dir / "config.json").read_text()))
    data = build_dataset(config.dataset, val_size=config.val_size, train_subset=config.train_subset,
                         split_seed=config.split_seed)
    return {"dataset": config.dataset, "train_images": len(data.train), "val_images": len(data.val or []),
            "test_images": len(data.test), "model": config.model,
            "channels": config.model_kwargs.get("channels"), "norm": config.norm, "eps": config.eps,
            "attack_steps": config.attack_steps, "eval_steps": config.eval_steps, "epochs": config.epochs,
            "seed": config.seed}


def _last(catalog: pd.DataFrame, run: str) -> pd.Series | None:
    rows = catalog[(catalog["run"] == run) & ~catalog["is_best"]]
    return None if rows.empty else rows.sort_values("epoch").iloc[-1]


def _summary(catalog, checkpoints, table, runs, gammas, s, quick, duration) -> dict[str, Any]:
    row = table.iloc[0]
    per_checkpoint = [{"run": r.run, "file": r.file, "epoch": int(r.epoch), "is_best": bool(r.is_best),
                       "gap": float(r.gap), "train_robust_acc": float(r.train_robust_acc),
                       "test_robust_acc": float(r.test_robust_acc), "sharpness": float(r.sharpness)}
                      for r in catalog.dropna(subset=["sharpness"]).itertuples()]
    pairs = []
    for base in ("at", "trades", "mart", "rst"):
        a, b = _last(catalog, base), _last(catalog, f"{base}-awp")
        if a is None or b is None:
            continue
        pairs.append({"method": base, "awp_gamma": gammas[base],
                      "sharpness": float(a.sharpness), "sharpness_awp": float(b.sharpness),
                      "gap": float(a.gap), "gap_awp": float(b.gap),
                      "test_robust_acc": float(a.test_robust_acc), "test_robust_acc_awp": float(b.test_robust_acc),
                      "awp_flatter": bool(b.sharpness < a.sharpness), "awp_smaller_gap": bool(b.gap < a.gap)})
    at = catalog[(catalog["run"] == "at") & ~catalog["is_best"]].sort_values("epoch")
    best = catalog[(catalog["run"] == "at") & catalog["is_best"]]
    sweep = []
    for r in runs:
        if r.name in ("at", "at-awp", "at-rwp") or r.name.startswith("at-awp-gamma"):
            last = _last(catalog, r.name)
            if last is not None:
                sweep.append({"run": r.name, "awp_kind": last.awp_kind, "awp_gamma": float(last.awp_gamma),
                              "gap": float(last.gap), "test_robust_acc": float(last.test_robust_acc),
                              "sharpness": float(last.sharpness)})
    return {
        "quick": quick, "duration_s": round(duration, 1), "settings": s.__dict__,
        "gap_attack": sorted(catalog["attack"].dropna().unique().tolist()),  # train and test, eval mode
        "landscape": {k: sorted(v if isinstance(v, str) else int(v) for v in catalog[c].dropna().unique())
                      for k, c in (("attack", "landscape_attack"), ("split", "landscape_split"),
                                   ("samples", "landscape_samples")) if c in catalog},
        "n_checkpoints": int(row["n"]),
        "spearman": float(row["spearman"]), "spearman_p": float(row["spearman_p"]),
        "spearman_ci": [float(row["spearman_lo"]), float(row["spearman_hi"])],
        "kendall": float(row["kendall"]), "kendall_p": float(row["kendall_p"]),
        "kendall_ci": [float(row["kendall_lo"]), float(row["kendall_hi"])],
        "pearson": float(row["pearson"]),
        "at_epochs": [{"epoch": int(r.epoch), "gap": float(r.gap), "sharpness": float(r.sharpness)}
                      for r in at.itertuples()],
        "at_best_epoch": int(best["epoch"].iloc[0]) if len(best) else None,
        "at_best": ({"epoch": int(best["epoch"].iloc[0]), "gap": float(best["gap"].iloc[0]),
                     "sharpness": float(best["sharpness"].iloc[0])} if len(best) else None),
        "awp_vs_base": pairs, "gamma_sweep": sweep, "checkpoints": per_checkpoint,
    }


def _report(summary: dict[str, Any]) -> str:
    """report.md, every number and every claim computed from ``summary`` (nothing hard-coded)."""
    at, setup = summary["at_epochs"], summary["setup"]
    model = setup["model"] + (f" ({'-'.join(map(str, setup['channels']))} channels)" if setup.get("channels") else "")
    lines = ["# What the demo shows", "",
             f"Offline run on scikit-learn's 8x8 digits ({setup['train_images']} training images, {model}, "
             f"{setup['norm'].capitalize()} eps {setup['eps']:g}, PGD-{setup['attack_steps']} training attack, "
             f"{setup['epochs']} epochs), {'quick version, ' if summary['quick'] else ''}"
             f"{summary['duration_s']:.0f} s in all. "
             "Sharpness = mean rise of the adversarial loss (PGD re-run at every perturbed weight) at "
             f"|alpha| = {summary['settings']['radius']} along {summary['settings']['directions']} filter-normalized "
             f"random directions ({', '.join(map(str, summary['landscape'].get('attack', [])))}, "
             f"{', '.join(map(str, summary['landscape'].get('samples', [])))} "
             f"{'/'.join(map(str, summary['landscape'].get('split', [])))} images); gap = train robust accuracy - "
             f"test robust accuracy ({', '.join(summary['gap_attack'])}, unperturbed weights).", ""]
    if at:
        first, last = at[0], at[-1]
        grows = last["gap"] > first["gap"] and last["sharpness"] > first["sharpness"]
        lines += ["## Robust overfitting sharpens the landscape (fig_gap_over_epochs, fig_at_epochs; paper Fig. 1a)", "",
                  f"AT's gap went from {first['gap']:.3f} at epoch {first['epoch']} to {last['gap']:.3f} at epoch "
                  f"{last['epoch']}, and its sharpness from {first['sharpness']:.2f} to {last['sharpness']:.2f}"
                  + (" : the landscape sharpened as the gap grew." if grows else
                     " : this run does NOT show the landscape sharpening with the gap.")
                  + _early_stopping(summary), ""]
    lines += ["## AWP flattens the landscape and shrinks the gap (fig_methods_awp; paper Fig. 1b and Sec. 5)", "",
              "| method | gamma | sharpness | with AWP | gap | with AWP | test robust acc | with AWP |",
              "|---|---|---|---|---|---|---|---|"]
    for p in summary["awp_vs_base"]:
        lines.append(f"| {p['method'].upper()} | {p['awp_gamma']} | {p['sharpness']:.3f} | {p['sharpness_awp']:.3f} | "
                     f"{p['gap']:.3f} | {p['gap_awp']:.3f} | {p['test_robust_acc']:.3f} | {p['test_robust_acc_awp']:.3f} |")
    both = [p["method"].upper() for p in summary["awp_vs_base"] if p["awp_flatter"] and p["awp_smaller_gap"]]
    not_both = [p["method"].upper() for p in summary["awp_vs_base"] if not (p["awp_flatter"] and p["awp_smaller_gap"])]
    close = [p["method"].upper() for p in summary["awp_vs_base"] if abs(p["gap"] - p["gap_awp"]) < NOISE]
    lines += ["", f"Last checkpoints. AWP ended flatter with a smaller gap for: {', '.join(both) or 'none'}"
              + (f"; not for: {', '.join(not_both)}." if not_both else ".")
              + (f" The gap difference is within the noise (< {NOISE}) for: {', '.join(close)}." if close else ""),
              _robustness_sentence(summary), ""]
    lines += ["## Flatness predicts the gap (fig_flatness_vs_gap)", "",
              f"Over {summary['n_checkpoints']} checkpoints (every run, AT at every saved epoch): Spearman "
              f"{summary['spearman']:.2f} (95% bootstrap CI {summary['spearman_ci'][0]:.2f} to {summary['spearman_ci'][1]:.2f}, "
              f"p = {summary['spearman_p']:.2g}), Kendall {summary['kendall']:.2f} (p = {summary['kendall_p']:.2g}).", ""]
    if summary["gamma_sweep"]:
        lines += ["## The size of the perturbation (fig_gamma; paper Fig. 4)", "",
                  "| run | kind | gamma | gap | test robust acc | sharpness |", "|---|---|---|---|---|---|"]
        for r in sorted(summary["gamma_sweep"], key=lambda r: (r["awp_kind"], r["awp_gamma"])):
            lines.append(f"| {r['run']} | {r['awp_kind']} | {r['awp_gamma']} | {r['gap']:.3f} | "
                         f"{r['test_robust_acc']:.3f} | {r['sharpness']:.2f} |")
        lines += ["", "Random weight perturbation (RWP) has AT-AWP's relative size but a random direction.", ""]
    lines += [f"Numbers are from single runs (seed {setup['seed']}) and single checkpoints; epoch-to-epoch noise "
              f"in the gap is about +-{NOISE} on these small evaluation sets ({setup['train_images']} training, "
              f"{setup['test_images']} test images).", ""]
    return "\n".join(lines)


def _robustness_sentence(summary: dict[str, Any]) -> str:
    """Whether AWP raised the last checkpoint's test robust accuracy beyond the noise, per method."""
    pairs = summary["awp_vs_base"]
    raised = [p["method"].upper() for p in pairs if p["test_robust_acc_awp"] - p["test_robust_acc"] > NOISE]
    lowered = [p["method"].upper() for p in pairs if p["test_robust_acc"] - p["test_robust_acc_awp"] > NOISE]
    if raised:
        text = f"AWP raised the last checkpoint's test robust accuracy by more than {NOISE} for: {', '.join(raised)}"
        return text + (f"; it lowered it by more than {NOISE} for: {', '.join(lowered)}." if lowered else ".")
    return (f"AWP did not raise the last checkpoint's test robust accuracy by more than the noise ({NOISE}) for any "
            f"method here (the paper's CIFAR gains come from preventing the late collapse of test robustness, "
            f"which these {summary['setup']['epochs']}-epoch digits runs barely show)"
            + (f"; it lowered it by more than {NOISE} for: {', '.join(lowered)}." if lowered else "."))


def _early_stopping(summary: dict[str, Any]) -> str:
    best, last = summary.get("at_best"), summary["at_epochs"][-1]
    if not best:
        return ""
    text = (f" The early-stopping checkpoint (best validation robust accuracy) is epoch {best['epoch']}: "
            f"gap {best['gap']:.3f}, sharpness {best['sharpness']:.2f}")
    if best["sharpness"] < last["sharpness"] and best["gap"] < last["gap"]:
        small = last["gap"] - best["gap"] < NOISE
        return text + (", flatter and with a smaller gap than the last checkpoint, as in the paper"
                       + (" but only marginally (within the noise): here the best validation accuracy came "
                          "late, not just after the first learning-rate decay." if small else "."))
    return text + "; it is not flatter with a smaller gap than the last checkpoint here."


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the whole story offline on digits: train, landscapes, correlation, figures",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="figures", help="figures, summary.json and report.md (default figures/)")
    p.add_argument("--work", default="runs/demo", help="run folders and landscapes (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a small version (about a minute), for tests")
    p.add_argument("--workers", type=int, help="parallel processes (default: 2, or 1 on one core)")


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    run_demo(args.out, args.work, quick=args.quick, workers=args.workers)
    return 0
