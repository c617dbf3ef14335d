"""``awp landscape`` and ``awp measures``: thin shells over :mod:`landscape.batch` (Wu, Xia, Wang
2020, Sec. 3, Fig. 1; the measures of :mod:`landscape.measures`).

The flags of each command are derived from its settings dataclass (:class:`LandscapeConfig`,
:class:`MeasureConfig`) by :func:`awp.settings.add_options`, one flag per field with the one typed
coercion of ``awp train``'s ``key=value`` (older flags such as ``--grid2d`` and ``--xi-samples``
are kept as aliases); only the run-level flags (device, data, loading, output) are declared here.
Every checkpoint's result goes to ``OUT/<name>/`` (cached, resumable, sharded under ``torchrun``);
``awp landscape`` also draws ``OUT/curves.png``, the overlay of all curves.
"""
from __future__ import annotations

import argparse
import re
import sys

from awp.errors import UsageError, UserError

HELP = {
    "directions": "random directions per checkpoint", "seed": "directions use seeds S, S+1, ... for every "
    "checkpoint; also the attack's seed", "alphas": "start:stop:count or a comma list", "betas": "second axis of "
    "--surface (default: the alphas)", "surface": "2-D surface along the first two directions (also --grid2d)",
    "normalization": "direction normalization", "ignore": "biases and BN affine: d = 0 (biasbn) or d = w (none, "
    "Li et al.); one of", "split": "the split", "samples": "images of the split (a fixed seeded subset)",
    "sample_seed": "seed of the sample subset", "loss": "the loss at every point (adversarial: PGD re-run there)",
    "eps": "attack radius (default: the data set's evaluation threat model, CIFAR/SVHN 8/255, "
    "digits the training eps); fractions like 8/255 work", "step_size": "attack step (default: that threat "
    "model's, 2/255 on CIFAR, 1/255 on SVHN, eps/4 otherwise)", "steps": "PGD steps", "radius": "|alpha| of the "
    "sharpness scalar", "xi": "also worst- and average-case sharpness (Stutz et al. 2021) within ||nu_l|| <= xi "
    "||w_l|| per layer, e.g. 0.01 (0: off)", "xi_steps": "projected ascent steps of worst-case sharpness",
    "xi_draws": "random perturbations of average-case sharpness (also --xi-samples)", "batch_size": "batch size",
    "precision": "autocast precision of the attacks and forwards", "channels_last":
    "channels_last memory format", "compile": "torch.compile the model", "measures": "'all' (the default) or a comma "
    "list of measure names (landscape.measures.MEASURES)", "clean": "the clean loss instead of the adversarial one",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``awp landscape`` and ``awp measures``."""
    from awp.settings import add_options
    from landscape.compute import LandscapeConfig
    from landscape.measure_run import MeasureConfig

    p = subparsers.add_parser(
        "landscape", help="adversarial weight loss landscape of checkpoints (curves, surfaces, flatness)",
        description="g(alpha) = rho(w + alpha d) along filter-normalized random directions, with PGD "
                    "re-run at every perturbed weight (Wu et al. 2020, Sec. 3).")
    # Let values such as "-1:1:21" or "-0.5,0,0.5" follow --alphas/--betas unquoted: argparse only
    # recognizes plain negative numbers as values, and this subcommand has no option that looks like one.
    p._negative_number_matcher = re.compile(r"^-\.?\d[\d.:,eE+-]*$")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--out", required=True, help="output folder (one subfolder per checkpoint, plus curves.png)")
    add_options(p, LandscapeConfig, aliases={"surface": ["--grid2d"], "xi_draws": ["--xi-samples"]}, helps=HELP,
                choices=_choices())
    _run_flags(p)

    m = subparsers.add_parser(
        "measures", help="flatness and baseline measures of checkpoints (one measures.json each)",
        description="Measures that may predict the robust generalization gap (landscape.measures: sharpness, "
                    "Stutz et al. flatness, AWP sharpness, Hessian eigenvalue/trace, PAC-Bayes flatness, "
                    "Kim et al. baselines) on a fixed seeded subset, cached and resumable.")
    m.add_argument("checkpoints", nargs="+", metavar="CKPT")
    m.add_argument("--out", required=True, help="output folder (one subfolder with measures.json per checkpoint)")
    add_options(m, MeasureConfig, skip=("settings",), helps={**HELP, "seed": "the attack's seed"}, choices=_choices())
    m.add_argument("--set", action="append", default=[], metavar="MEASURE.KEY=VALUE",
                   help="a measure's setting, e.g. pac_bayes_sharpness.draws=3 (repeatable; typed like key=value)")
    _run_flags(m)


def _choices() -> dict:
    from awp.data import SPLITS
    from awp.runtime import PRECISIONS
    from landscape.directions import IGNORES, NORMALIZATIONS
    from landscape.evaluate import LOSSES

    return {"normalization": NORMALIZATIONS, "ignore": IGNORES, "split": SPLITS, "loss": LOSSES,
            "precision": PRECISIONS}


def _run_flags(p: argparse.ArgumentParser) -> None:
    """The run-level flags both commands share: device, data, loading, progress."""
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--dataset", default="cifar10", help="data set of robustbench:NAME entries")
    p.add_argument("--threat", default="Linf", help="threat model of robustbench:NAME entries (Linf, L2)")
    p.add_argument("--model-dir", help="RobustBench model folder (default ./models)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="load weights holding NaN/inf anyway (refused by default); every output then says so")


def measure_settings(items: list[str]) -> dict[str, dict[str, str]]:
    """``--set`` items (``MEASURE.KEY=VALUE``) -> {measure: {key: text}}; the text is typed by
    :meth:`landscape.measures.Measure.overrides` like any ``key=value`` override."""
    settings: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        name, dot, setting = key.partition(".")
        if not sep or not dot or not name or not setting:
            raise UsageError(f"--set expects MEASURE.KEY=VALUE, got {item!r}")
        settings.setdefault(name.strip(), {})[setting.strip()] = value.strip()
    return settings


def run(args: argparse.Namespace) -> int:
    """``awp landscape`` or ``awp measures``: settings checked before any work, then the batch."""
    from awp import distributed
    from awp.runtime import resolve_device
    from awp.settings import from_options

    load = dict(device=args.device, data_dir=args.data_dir, dataset=args.dataset, threat=args.threat,
                model_dir=args.model_dir, allow_nonfinite=args.allow_nonfinite)
    say = (lambda message: print(message, file=sys.stderr)) if not args.quiet and distributed.is_main() else None
    with distributed.session(resolve_device(args.device)):
        if args.command == "measures":
            from landscape.batch import measure_checkpoints
            from landscape.measure_run import MeasureConfig

            config = from_options(args, MeasureConfig, settings=measure_settings(args.set))
            batch = measure_checkpoints(args.checkpoints, config, args.out, log=say, **load)
        else:
            from landscape.batch import compute_landscapes
            from landscape.compute import LandscapeConfig

            config = from_options(args, LandscapeConfig)
            batch = compute_landscapes(args.checkpoints, config, args.out, log=say,
                                       progress=not args.quiet and distributed.is_main(), **load)
        if distributed.is_main():
            print(f"{args.command} saved in {args.out}")
        distributed.barrier()  # the files exist when any rank returns
    if batch.problems:
        raise UserError(f"non-finite values, written as nan (CSV) / null (JSON) in {args.out}: {batch.problems[0]}"
                        + (f" (and {len(batch.problems) - 1} more)" if len(batch.problems) > 1 else ""))
    return 0
