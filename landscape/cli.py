"""``awp landscape``: adversarial weight loss curves of checkpoints (Wu, Xia, Wang 2020, Sec. 3, Fig. 1).

For every checkpoint, model and data are rebuilt from the checkpoint alone (its stored config),
the same directions' seeds are used for every checkpoint (so curves compare), and the result is
written to ``OUT/<name>/`` (:mod:`landscape.io`), resuming from a partial table whose cache key
matches. ``OUT/curves.png`` overlays all checkpoints.

Under ``torchrun --nproc_per_node N awp landscape ...`` the (direction, alpha) points are split
across the N processes (:func:`landscape.evaluate.run_points`); rank 0 alone writes, and the
files are those one process would write.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from awp.errors import UsageError, UserError

DEFAULT_ALPHAS = "-1:1:21"


def parse_range(text: str, what: str = "--alphas") -> list[float]:
    """'start:stop:count' (linspace) or a comma list '-1,0,1' -> floats; anything else: one-line UsageError."""
    bad = UsageError(f"bad {what} {text!r}: use start:stop:count (e.g. -1:1:21) or a comma list (e.g. -0.5,0,0.5)")
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise bad
            start, stop, count = float(parts[0]), float(parts[1]), parts[2]
            if not count.strip().isdigit() or int(count) < 1:
                raise bad
            values = np.linspace(start, stop, int(count)).tolist()
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise bad from None
    if not values or not all(np.isfinite(values)):
        raise bad
    return [round(v, 12) for v in values]


def _number(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    from awp.config import parse_number

    try:
        return parse_number(text)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: a number or a fraction like 8/255") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``awp landscape``."""
    p = subparsers.add_parser(
        "landscape", help="adversarial weight loss landscape of checkpoints (curves, surfaces, flatness)",
        description="g(alpha) = rho(w + alpha d) along filter-normalized random directions, with PGD "
                    "re-run at every perturbed weight (Wu et al. 2020, Sec. 3).")
    # Let values such as "-1:1:21" or "-0.5,0,0.5" follow --alphas/--betas unquoted: argparse only
    # recognizes plain negative numbers as values, and this subcommand has no option that looks like one.
    p._negative_number_matcher = re.compile(r"^-\.?\d[\d.:,eE+-]*$")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--out", required=True, help="output folder (one subfolder per checkpoint, plus curves.png)")
    p.add_argument("--directions", type=int, default=3, help="random directions per checkpoint (default 3)")
    p.add_argument("--seed", type=int, default=0, help="directions use seeds S, S+1, ... for every checkpoint; "
                                                       "also the attack's seed (default 0)")
    p.add_argument("--alphas", default=DEFAULT_ALPHAS, help="start:stop:count or a comma list (default -1:1:21)")
    p.add_argument("--betas", help="second axis of --grid2d (default: the alphas)")
    p.add_argument("--grid2d", action="store_true", help="2-D surface along the first two directions")
    p.add_argument("--normalization", default="filter", choices=["filter", "layer", "none"])
    p.add_argument("--ignore", default="biasbn", choices=["biasbn", "none"],
                   help="biases and BN affine: d = 0 (biasbn) or d = w (none, Li et al.)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--samples", type=int, default=256, help="fixed seeded subset of the split (default 256)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the sample subset (default 0)")
    p.add_argument("--loss", default="adversarial", choices=["adversarial", "clean", "fixed"])
    p.add_argument("--eps", help="attack radius (default: the checkpoint's training eps); fractions like 8/255 work")
    p.add_argument("--step-size", help="attack step (default eps/4)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    p.add_argument("--radius", type=float, default=0.5, help="|alpha| of the sharpness scalar (default 0.5)")
    p.add_argument("--xi", type=float, default=0.0,
                   help="also compute worst-case and average-case sharpness (Stutz et al. 2021) within "
                        "||nu_l|| <= xi ||w_l|| per layer, e.g. 0.01 (default 0: off)")
    p.add_argument("--xi-steps", type=int, default=5, help="projected ascent steps of worst-case sharpness (default 5)")
    p.add_argument("--xi-samples", type=int, default=5, help="random draws of average-case sharpness (default 5)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="autocast precision of the attacks and forwards (default fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--data-dir")
    p.add_argument("--dataset", default="cifar10", help="data set of robustbench:NAME entries")
    p.add_argument("--threat", default="Linf", help="threat model of robustbench:NAME entries (Linf, L2)")
    p.add_argument("--model-dir", help="RobustBench model folder (default ./models)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_args(args: argparse.Namespace) -> tuple[list[float], list[float] | None]:
    alphas = parse_range(args.alphas)
    betas = parse_range(args.betas, "--betas") if args.betas else (alphas if args.grid2d else None)
    if args.directions < 1:
        raise UsageError(f"--directions must be >= 1, got {args.directions}")
    if args.grid2d and args.directions < 2:
        raise UsageError("--grid2d needs --directions >= 2 (it uses the first two)")
    if args.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {args.samples}")
    if args.steps < 0:
        raise UsageError(f"--steps must be >= 0, got {args.steps}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.xi <= 1:
        raise UsageError(f"--xi is a relative weight norm in [0, 1] (0: off), got {args.xi}")
    if args.xi_steps < 1 or args.xi_samples < 1:
        raise UsageError(f"--xi-steps and --xi-samples must be >= 1, got {args.xi_steps} and {args.xi_samples}")
    return alphas, betas


def _names(paths: list[Path]) -> list[str]:
    """Checkpoint stem, or run-folder_stem where stems collide (epoch_010.pt of two runs)."""
    stems = [p.stem.replace(":", "_") for p in paths]  # robustbench:NAME -> robustbench_NAME
    names = [f"{p.parent.name}_{stem}" if stems.count(stem) > 1 else stem for p, stem in zip(paths, stems)]
    if len(set(names)) != len(names):
        names = [f"{i:02d}_{n}" for i, n in enumerate(names)]
    return names


def _samples(meta: dict[str, Any], args: argparse.Namespace, path: Path):
    from awp.config import config_from_dict
    from awp.data import build_dataset

    if not isinstance(meta.get("config"), dict):
        raise UserError(f"{path} stores no training config; cannot rebuild its data set")
    config = config_from_dict(meta["config"])
    data = build_dataset(config.dataset, data_dir=args.data_dir or config.data_dir, download=False,
                         val_size=config.val_size, train_subset=config.train_subset,
                         split_seed=config.split_seed)
    images = getattr(data, args.split)
    if images is None or len(images) == 0:
        raise UsageError(f"{path}: the run has no {args.split!r} split (its val_size is 0); use --split train or test")
    n = min(args.samples, len(images))
    # A fixed subset, independent of the run seed, so every checkpoint of a data set sees the same images.
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.sample_seed))
    x, y = images.batch(order[:n].sort().values)
    return config, x, y


def _one(path: Path, folder: Path, args: argparse.Namespace, alphas, betas, runtime) -> tuple[Any, dict]:
    from awp.convert import load_any
    from awp.metrics import AttackSpec
    from landscape import io as lio
    from landscape.curve import weight_loss_curve
    from landscape.directions import random_direction
    from landscape.flatness import average_sharpness, curvature, sharpness, worst_case_sharpness
    from landscape.plot import plot_curves, plot_surface
    from landscape.surface import weight_loss_surface

    from awp import distributed

    model, meta = load_any(str(path), map_location=runtime.device, dataset=args.dataset,
                           threat=args.threat, model_dir=args.model_dir)
    model = runtime.prepare_model(model)
    forward = runtime.compiled(model)  # shares model's parameters; directions are taken on model
    main = distributed.is_main()
    digest = meta["sha256"]
    config, x, y = _samples(meta, args, path)
    eps = _number(args.eps, "--eps")
    eps = config.eps if eps is None else eps
    step = _number(args.step_size, "--step-size")
    attack = AttackSpec(eps=eps, step_size=eps / 4 if step is None else step, steps=args.steps,
                        norm=config.norm, seed=args.seed)
    seeds = [args.seed + i for i in range(2 if args.grid2d else args.directions)]
    settings = {"kind": "surface" if args.grid2d else "curve", "direction_seeds": seeds,
                "normalization": args.normalization, "ignore": args.ignore, "bn_mode": "eval",
                "alphas": alphas, "betas": betas, "loss": args.loss,
                "attack": {"name": attack.name, "eps": attack.eps, "step_size": attack.step_size,
                           "steps": attack.steps, "norm": attack.norm, "seed": attack.seed,
                           "random_start": "uniform"},
                "split": args.split, "samples": len(x), "sample_seed": args.sample_seed,
                "batch_size": args.batch_size, "device_type": runtime.device.type,
                "precision": runtime.precision,
                # Recorded only when set, so tables computed before these options keep their key.
                **({"channels_last": True} if runtime.channels_last else {})}
    key = lio.cache_key(digest, settings)
    done = lio.load_done(folder, key)
    rows = list(done)
    counter = {"computed": 0}

    def on_point(row: dict[str, Any]) -> None:
        rows.append(row)
        counter["computed"] += 1
        if main:
            lio.save_partial(folder, key, rows)

    directions = [random_direction(model, seed=s, normalization=args.normalization, ignore=args.ignore)
                  for s in seeds]
    common = dict(loss=args.loss, attack=attack, batch_size=args.batch_size, runtime=runtime,
                  on_point=on_point, progress=not args.quiet and main, sharded=True)
    if args.grid2d:
        have = {(r["alpha"], r["beta"]) for r in done}
        todo = [(a, b) for a in alphas for b in betas if (a, b) not in have]
        if todo:
            weight_loss_surface(forward, directions[0], directions[1], alphas, betas, (x, y), points=todo, **common)
        columns = ["alpha", "beta", "loss", "acc"]
        order = {(a, b): i for i, (a, b) in enumerate((a, b) for a in alphas for b in betas)}
        rows = sorted((r for r in rows if (r["alpha"], r["beta"]) in order), key=lambda r: order[(r["alpha"], r["beta"])])
    else:
        have = {(r["direction"], r["alpha"]) for r in done}
        todo = [(s, a) for s in seeds for a in alphas if (s, a) not in have]
        if todo:
            weight_loss_curve(forward, directions, alphas, (x, y), direction_ids=seeds, points=todo, **common)
        columns = ["direction", "alpha", "loss", "acc"]
        order = {(s, a): i for i, (s, a) in enumerate((s, a) for s in seeds for a in alphas)}
        rows = sorted((r for r in rows if (r["direction"], r["alpha"]) in order),
                      key=lambda r: order[(r["direction"], r["alpha"])])

    import pandas as pd

    df = pd.DataFrame(rows, columns=columns)
    flatness: dict[str, Any] = {}
    if not args.grid2d:
        radius = min(args.radius, max(alphas), -min(alphas))
        flatness = {"sharpness": sharpness(df, radius) if radius > 0 else None, "sharpness_radius": radius,
                    "curvature": curvature(df) if len(alphas) >= 3 else None}
    if args.xi > 0:  # model-based scalars: not cached (a few attacks), same samples and attack as the curve
        scalar = dict(batch_size=args.batch_size, runtime=runtime)
        flatness.update(
            xi=args.xi, xi_steps=args.xi_steps, xi_samples=args.xi_samples,
            worst_case_sharpness=worst_case_sharpness(forward, (x, y), args.xi, attack, steps=args.xi_steps, **scalar),
            average_sharpness=average_sharpness(forward, (x, y), args.xi, attack, samples=args.xi_samples,
                                                seed=args.seed, **scalar))
    info = {"checkpoint": str(path), "checkpoint_sha256": digest, "arch": meta.get("arch"),
            "dataset": meta.get("dataset"), "method": meta.get("method"), "awp_gamma": meta.get("awp_gamma"),
            "epoch": meta.get("epoch"), "metrics": meta.get("metrics"), "settings": settings,
            "cache_key": key, "points_total": len(rows), "points_computed": counter["computed"],
            "points_reused": len(rows) - counter["computed"], "flatness": flatness,
            "direction_semantics": "direction column = the direction's seed"}
    if not main:
        return df, info
    lio.save_result(folder, rows, columns, info)
    label = f"{path.stem} (epoch {meta.get('epoch')})"
    if args.grid2d:
        plot_surface(df, folder / lio.PNG, normalization=args.normalization, loss=args.loss, steps=args.steps,
                     title=label)
    else:
        plot_curves({label: df}, folder / lio.PNG, normalization=args.normalization, loss=args.loss,
                    steps=args.steps, title=label)
    return df, info


def run(args: argparse.Namespace) -> int:
    """Compute, save and plot the landscape of every checkpoint."""
    from awp import distributed
    from awp.runtime import resolve_runtime

    alphas, betas = _check_args(args)
    runtime = resolve_runtime(args.device, getattr(args, "precision", "fp32"),
                              getattr(args, "channels_last", False), getattr(args, "compile", False))
    paths = [Path(p) for p in args.checkpoints]
    for p in paths:  # fail before any work, with one line
        if str(p).startswith("robustbench:"):
            continue
        if p.is_dir():
            raise UserError(f"{p} is a folder, not a checkpoint file")
        if not p.is_file():
            raise UserError(f"checkpoint not found: {p}")
    with distributed.session(runtime.device):
        return _run(args, paths, alphas, betas, distributed.localize(runtime))


def _run(args: argparse.Namespace, paths: list[Path], alphas, betas, runtime) -> int:
    from awp import distributed
    from landscape.plot import plot_curves

    main = distributed.is_main()
    out = Path(args.out)
    curves = {}
    for path, name in zip(paths, _names(paths)):
        df, info = _one(path, out / name, args, alphas, betas, runtime)
        curves[name] = df
        if not args.quiet and main:
            flat = info["flatness"]
            extra = (f", sharpness@{flat['sharpness_radius']:g} = {flat['sharpness']:.4f}"
                     if flat.get("sharpness") is not None else "")
            used = info["settings"]
            print(f"{path}: {info['points_computed']} points computed, {info['points_reused']} reused{extra} "
                  f"({used['loss']} loss, {used['attack']['name']}, {used['samples']} {used['split']} images)",
                  file=sys.stderr)
    if main:
        if not args.grid2d:
            plot_curves(curves, out / "curves.png", normalization=args.normalization, loss=args.loss,
                        steps=args.steps)
        print(f"landscape saved in {out}")
    distributed.barrier()  # the files exist when any rank returns
    return 0
