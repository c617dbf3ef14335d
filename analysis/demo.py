"""``awp demo``: the paper's whole story, offline, on a 2-core CPU, in minutes.

Wu, Xia, Wang (NeurIPS 2020) observe that a flatter adversarial weight loss landscape goes with
a smaller robust generalization gap (Fig. 1), and that AWP flattens it explicitly (Sec. 4-5).
The demo reproduces that chain on scikit-learn's 8x8 digits (the README's "What `awp demo` shows"):

1. trains a standard model, pseudo-labels the training images the robust runs do not use (RST's
   unlabeled pool), and trains AT and AT-AWP (checkpoints every few epochs, so robust overfitting
   and early stopping are visible), TRADES, TRADES-AWP, MART, MART-AWP, RST, RST-AWP, each with
   several seeds (:class:`Settings`), plus a small gamma sweep of AT-AWP and random weight
   perturbation of AT-AWP's size (run name at-rwp), two runs at a time;
2. computes every checkpoint's adversarial weight loss curve (PGD re-run at every perturbed
   weight, filter-normalized directions with the same seeds for every checkpoint);
3. catalogs checkpoints with their gaps and sharpness, correlates them over every checkpoint of
   every seed, draws the figures (means over seeds with bands), and writes ``summary.json`` (every
   seed's numbers, each comparison as a paired difference over seeds with its 95% t-interval,
   :mod:`analysis.summary`) and ``report.md`` (:mod:`analysis.report`) into ``--out``.

Runs and landscapes go to ``--work`` (not committed); an interrupted demo resumes from them.
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from analysis.report import report_markdown
from analysis.studies import DEFAULT_STUDY, STUDIES, study_folders, study_function
from analysis.summary import build_summary
from awp.errors import UsageError
from awp.io import atomic_write_json, atomic_write_text, check_output_folder


@dataclass(frozen=True)
class DemoRun:
    """One training run of the demo: a preset plus overrides and a seed; ``every`` marks runs whose
    every saved epoch gets a landscape (AT, AT-AWP: the paper's Fig. 1a), others get their last and
    best. ``name`` is the comparison's name (``at``, ``at-awp``, ...), ``folder`` the run's own."""

    name: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    every: bool = False
    unlabeled: bool = False
    seed: int = 0

    @property
    def folder(self) -> str:
        return f"{self.name}-seed{self.seed}"


GAMMAS = (0.005, 0.01, 0.05)  # the sweep around digits-at-awp's 0.02
METHODS = ("at", "trades", "mart", "rst")


@dataclass(frozen=True)
class Settings:
    """Sizes of the full demo and of ``--quick`` (the tests' version). ``epochs`` None: each
    preset's own. ``seeds``: the AT / AT-AWP pair; ``method_seeds``: TRADES, MART, RST and their
    AWP variants; ``sweep_seeds``: the gamma sweep and random perturbation."""

    # Three seeds of all four pairs fit 15 minutes on a shared 2-core CPU with: checkpoints every
    # 10 epochs (6 landscapes per AT / AT-AWP seed), the per-epoch gap measured with PGD-5 (step
    # eps/4 reaches the eps boundary in 4 steps; PGD-10 made every run about 1.7x longer, since
    # the evaluation of ~1100 images after every epoch dominates), landscapes on 128 training
    # images (sharpness of an AT last checkpoint 1.36 against 1.35 with 256, in half the time).
    epochs: int | None = None
    save_every: int = 10
    eval_steps: int = 5
    standard_epochs: int = 30
    directions: int = 3
    alphas: str = "-1:1:11"
    samples: int = 128
    landscape_steps: int = 10
    radius: float = 0.5
    n_boot: int = 2000
    seeds: tuple[int, ...] = (0, 1, 2)
    method_seeds: tuple[int, ...] = (0, 1, 2)
    sweep_seeds: tuple[int, ...] = (0,)
    # The measures of landscape.measures that fit the time budget (a few training passes each on
    # the small CNN; the curve sharpness comes from the landscapes), on the landscapes' checkpoints.
    measures: tuple[str, ...] = ("weight_norm", "logit_margin", "input_gradient_norm", "awp_sharpness",
                                 "worst_case_sharpness", "hessian_top_eigenvalue")
    measure_samples: int = 128


QUICK = Settings(epochs=6, save_every=2, eval_steps=3, standard_epochs=4, directions=2,
                 alphas="-1:1:5", samples=64, landscape_steps=3, n_boot=200, seeds=(0, 1), method_seeds=(0, 1),
                 measure_samples=32)


def demo_runs(s: Settings = Settings()) -> list[DemoRun]:
    """Every training run of the demo: the AT / AT-AWP pair over ``s.seeds``, TRADES, MART and RST
    with their AWP variants over ``s.method_seeds``, the gamma sweep and random weight perturbation
    over ``s.sweep_seeds``."""
    runs = [DemoRun(n, f"digits-{n}", {"seed": k}, every=True, seed=k) for k in s.seeds for n in ("at", "at-awp")]
    for k in s.method_seeds:
        for method in METHODS[1:]:
            for name in (method, f"{method}-awp"):
                runs.append(DemoRun(name, f"digits-{name}", {"seed": k}, unlabeled=method == "rst", seed=k))
    for k in s.sweep_seeds:
        runs += [DemoRun(f"at-awp-gamma{g}", "digits-at-awp", {"awp_gamma": g, "seed": k}, seed=k) for g in GAMMAS]
        runs.append(DemoRun("at-rwp", "digits-at-awp", {"awp_kind": "random", "seed": k}, seed=k))
    return runs


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


def _measures(run_dir: str, checkpoints: list[str], out: str, s: Settings) -> str:
    """The run's measures through :func:`landscape.measure_run.compute_measures` (the files, cache
    and resume of ``awp measures``), with the landscapes' attack on a subset of their samples."""
    import torch

    torch.set_num_threads(1)
    from landscape.measure_run import MeasureConfig, compute_measures

    config = MeasureConfig(measures=s.measures, samples=s.measure_samples, steps=s.landscape_steps, split="train")
    for c in checkpoints:
        compute_measures(c, config, Path(out) / Path(c).stem, device="cpu")
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
    """The checkpoints that get a landscape: every saved epoch (``every``) or the last one, and the
    early-stopping weights: ``best.pt`` itself, or its ``epoch_NNN.pt`` twin when one exists (the
    same weights; the catalog lends the twin's landscape to best.pt, so each set of weights that
    has a landscape is one point of the correlation)."""
    from awp.checkpoint import read_checkpoint

    epochs = sorted(run_dir.glob("epoch_*.pt"))
    chosen = epochs if every else epochs[-1:]
    best = run_dir / "best.pt"
    if best.exists():
        twin = run_dir / f"epoch_{int(read_checkpoint(best)['epoch']):03d}.pt"
        early = twin if twin.exists() else best
        chosen = chosen + ([early] if early not in chosen else [])
    return [str(p) for p in chosen]


def run_demo(out: str | Path = "figures", work: str | Path = "runs/demo", *, quick: bool = False,
             workers: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo; returns the summary (also written to ``out/summary.json``)."""
    started = time.perf_counter()
    s = QUICK if quick else Settings()
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    out, work = check_output_folder(out, "--out"), check_output_folder(work, "--work")
    runs_dir, lands_dir, meas_dir = work / "runs", work / "landscapes", work / "measures"
    common = {"save_every": s.save_every, "eval_steps": s.eval_steps, **({"epochs": s.epochs} if s.epochs else {})}
    runs = demo_runs(s)

    log(f"[1/4] training: a standard model, then {len(runs)} robust runs ({workers} at a time)")
    std = runs_dir / "standard"
    jobs = [(_train, ("standard", "digits-standard", {"epochs": s.standard_epochs, "eval_steps": 1}, str(std)))]
    jobs += [(_train, (r.folder, r.preset, {**common, **r.overrides}, str(runs_dir / r.folder)))
             for r in runs if not r.unlabeled]
    _parallel(jobs, workers, log)
    pool_file = work / "pseudo_labeled_pool.npz"
    agreement = _pseudo_label(std / "last.pt", pool_file)
    log(f"  pseudo-labeled RST's pool with the standard model (agreement with true labels {agreement:.3f})")
    _parallel([(_train, (r.folder, r.preset, {**common, **r.overrides, "unlabeled": str(pool_file)},
                         str(runs_dir / r.folder))) for r in runs if r.unlabeled], workers, log)

    log("[2/4] landscapes: adversarial loss along filter-normalized directions, PGD re-run at every point; "
        f"then {len(s.measures)} other measures of the same checkpoints")
    for step, folder in ((_landscape, lands_dir), (_measures, meas_dir)):
        _parallel([(step, (str(runs_dir / r.folder), _checkpoints(runs_dir / r.folder, r.every),
                           str(folder / r.folder), s)) for r in runs], workers, log)

    log("[3/4] catalog and correlation")
    from analysis.catalog import collect_runs, unique_checkpoints
    from analysis.correlation import correlate
    from analysis.figures import make_figures
    from analysis.ranking import rank_catalog, ranking_rows, write_ranking

    catalog = collect_runs([runs_dir / r.folder for r in runs], lands_dir, measures=meas_dir)
    catalog["name"] = catalog["run"].map({r.folder: r.name for r in runs})
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = unique_checkpoints(catalog).dropna(subset=["sharpness", "gap"])
    table = correlate(checkpoints, "sharpness", "gap", n_boot=s.n_boot)

    log("[4/4] figures")
    from awp.config import load_preset

    gammas = {m: load_preset(f"digits-{m}-awp", {"unlabeled": "x"} if m == "rst" else {}).awp_gamma
              for m in METHODS}
    made = make_figures(catalog, out, n_boot=s.n_boot, awp_gammas=gammas)
    for note in made.notes:
        log(f"  {note}")
    ranking = rank_catalog(catalog, landscape=("sharpness",), n_boot=s.n_boot)
    write_ranking(ranking, out)
    summary = build_summary(catalog, table, runs, gammas, s)
    summary["measure_ranking"] = ranking_rows(ranking)
    summary.update(quick=quick, pseudo_label_agreement=agreement, setup=_setup(runs_dir / runs[0].folder),
                   duration_s=round(time.perf_counter() - started, 1))
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "report.md", report_markdown(summary))
    log(f"done in {summary['duration_s']:.0f} s: {out / 'report.md'}")
    return summary


def _pseudo_label(checkpoint: Path, out: Path) -> float:
    from awp.loaded import pseudo_label_checkpoint

    return pseudo_label_checkpoint(checkpoint, out)[1]


def _setup(run_dir: Path) -> dict[str, Any]:
    """What the report says about the setup, read from the AT run itself (its config and data)."""
    from awp.config import config_from_dict
    from awp.data import build_dataset

    from analysis.overfitting import decay_epochs
    from analysis.readers import read_config

    config = config_from_dict(read_config(run_dir))
    data = build_dataset(config.dataset, val_size=config.val_size, train_subset=config.train_subset,
                         split_seed=config.split_seed)
    return {"dataset": config.dataset, "train_images": len(data.train), "val_images": len(data.val or []),
            "test_images": len(data.test), "model": config.model,
            "channels": config.model_kwargs.get("channels"), "norm": config.norm, "eps": config.eps,
            "attack_steps": config.attack_steps, "eval_steps": config.eval_steps, "epochs": config.epochs,
            "batch_size": config.batch_size, "lr": config.lr, "schedule": config.schedule,
            "decay_epochs": decay_epochs(config.to_dict()), "lr_decay": config.lr_decay}


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the whole story offline on digits: train, landscapes, correlation, figures",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default=DEFAULT_STUDY, choices=STUDIES.names(), metavar="NAME",
                   help="which study: " + "; ".join(f"{k}: {v}" for k, v in STUDIES.describe().items()))
    p.add_argument("--out", help="figures, summary.json and report.md (default figures/, or figures/STUDY/)")
    p.add_argument("--work", help="run folders and landscapes (default runs/demo, or runs/STUDY/)")
    p.add_argument("--quick", action="store_true", help="a small version (about a minute), for tests")
    p.add_argument("--workers", type=int, help="parallel processes (default: 2, or 1 on one core)")


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    out, work = study_folders(args.study, args.out, args.work)
    study_function(args.study)(out, work, quick=args.quick, workers=args.workers)
    return 0
