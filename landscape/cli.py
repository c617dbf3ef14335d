"""``awp landscape``: adversarial weight loss curves of checkpoints (Wu, Xia, Wang 2020, Sec. 3, Fig. 1).

A thin shell over :func:`landscape.compute.compute_landscape`: the flags become a
:class:`~landscape.compute.LandscapeConfig`, and every checkpoint's result goes to ``OUT/<name>/``
(cached, resumable, sharded under ``torchrun``). ``OUT/curves.png`` overlays all checkpoints.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from awp.errors import UsageError, UserError

if TYPE_CHECKING:
    from landscape.compute import LandscapeConfig
    from landscape.measure_run import MeasureConfig

DEFAULT_ALPHAS = "-1:1:21"


def _number(text: str | None, what: str) -> float | None:
    if text is None:
        return None
    from awp.config import parse_number

    try:
        return parse_number(text)
    except ValueError:
        raise UsageError(f"bad {what} {text!r}: a number or a fraction like 8/255") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``awp landscape`` and ``awp measures``."""
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
    p.add_argument("--loss", default="adversarial", choices=["adversarial", "clean", "fixed"])
    p.add_argument("--radius", type=float, default=0.5, help="|alpha| of the sharpness scalar (default 0.5)")
    p.add_argument("--xi", type=float, default=0.0,
                   help="also compute worst-case and average-case sharpness (Stutz et al. 2021) within "
                        "||nu_l|| <= xi ||w_l|| per layer, e.g. 0.01 (default 0: off)")
    p.add_argument("--xi-steps", type=int, default=5, help="projected ascent steps of worst-case sharpness (default 5)")
    p.add_argument("--xi-samples", type=int, default=5, help="random draws of average-case sharpness (default 5)")
    _sample_and_run_flags(p)

    m = subparsers.add_parser(
        "measures", help="flatness and baseline measures of checkpoints (one measures.json each)",
        description="Measures that may predict the robust generalization gap (landscape.measures: sharpness, "
                    "Stutz et al. flatness, AWP sharpness, Hessian eigenvalue/trace, PAC-Bayes flatness, "
                    "Kim et al. baselines) on a fixed seeded subset, cached and resumable.")
    m.add_argument("checkpoints", nargs="+", metavar="CKPT")
    m.add_argument("--out", required=True, help="output folder (one subfolder with measures.json per checkpoint)")
    m.add_argument("--measures", default="all", help="'all' or a comma list of names (see landscape.measures)")
    m.add_argument("--seed", type=int, default=0, help="the attack's seed (default 0)")
    m.add_argument("--clean", action="store_true", help="the clean loss instead of the adversarial one")
    m.add_argument("--set", action="append", default=[], metavar="MEASURE.KEY=VALUE",
                   help="a measure's setting, e.g. pac_bayes_sharpness.draws=3 (repeatable)")
    _sample_and_run_flags(m)


def _sample_and_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags ``awp landscape`` and ``awp measures`` share: samples, attack, device, loading."""
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--samples", type=int, default=256, help="fixed seeded subset of the split (default 256)")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the sample subset (default 0)")
    p.add_argument("--eps", help="attack radius (default: the data set's evaluation threat model, CIFAR/SVHN 8/255, "
                                 "digits the "
                        "training eps); fractions like 8/255 work")
    p.add_argument("--step-size", help="attack step (default: that threat model's, 2/255 on CIFAR, 1/255 on SVHN, "
                                          "eps/4 otherwise)")
    p.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
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
    p.add_argument("--allow-nonfinite", action="store_true",
                   help="load weights holding NaN/inf anyway (refused by default); every output then says so")


def config_from_args(args: argparse.Namespace) -> "LandscapeConfig":
    """The :class:`landscape.compute.LandscapeConfig` the flags describe (checked there)."""
    from landscape.compute import LandscapeConfig

    try:
        return _config(LandscapeConfig, args)
    except UsageError as exc:  # name the flag, not the field
        message = str(exc).replace("surface=True", "--grid2d")
        for field in ("directions", "samples", "steps", "batch_size", "xi", "xi_steps", "xi_samples", "eps",
                      "step_size", "alphas", "betas"):
            message = re.sub(rf"\b{field}\b", "--" + field.replace("_", "-"), message)
        raise UsageError(message) from None


def _config(LandscapeConfig, args: argparse.Namespace) -> "LandscapeConfig":
    from landscape.compute import parse_range

    return LandscapeConfig(
        directions=args.directions, seed=args.seed, alphas=tuple(parse_range(args.alphas)),
        betas=tuple(parse_range(args.betas, "--betas")) if args.betas else None, surface=args.grid2d,
        normalization=args.normalization, ignore=args.ignore, split=args.split, samples=args.samples,
        sample_seed=args.sample_seed, loss=args.loss, eps=_number(args.eps, "--eps"),
        step_size=_number(args.step_size, "--step-size"), steps=args.steps, radius=args.radius, xi=args.xi,
        xi_steps=args.xi_steps, xi_samples=args.xi_samples, batch_size=args.batch_size,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile)


def _names(paths: list[Path]) -> list[str]:
    """Checkpoint stem, or run-folder_stem where stems collide (epoch_010.pt of two runs)."""
    stems = [p.stem.replace(":", "_") for p in paths]  # robustbench:NAME -> robustbench_NAME
    names = [f"{p.parent.name}_{stem}" if stems.count(stem) > 1 else stem for p, stem in zip(paths, stems)]
    if len(set(names)) != len(names):
        names = [f"{i:02d}_{n}" for i, n in enumerate(names)]
    return names


def _check_paths(paths: list[Path], out: Path) -> None:
    from awp.io import check_output_folder

    for p in paths:  # fail before any work, with one line
        if str(p).startswith("robustbench:"):
            continue
        if p.is_dir():
            raise UserError(f"{p} is a folder, not a checkpoint file")
        if not p.is_file():
            raise UserError(f"checkpoint not found: {p}")
    for folder in [out] + [out / name for name in _names(paths)]:
        check_output_folder(folder, "--out")  # before the first point, not after the last


def _nonfinite_error(problems: list[str], out: Path) -> UserError:
    return UserError(f"non-finite values, written as nan (CSV) / null (JSON) in {out}: {problems[0]}"
                     + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def run(args: argparse.Namespace) -> int:
    """``awp landscape`` or ``awp measures``."""
    return _measures(args) if args.command == "measures" else _landscape(args)


def _landscape(args: argparse.Namespace) -> int:
    """Compute, save and plot the landscape of every checkpoint (:func:`landscape.compute_landscape`)."""
    from awp import distributed
    from awp.safety import nonfinite_warning
    from awp.runtime import resolve_device
    from landscape.compute import compute_landscape
    from landscape.io import nonfinite_results
    from landscape.plot import plot_curves

    config = config_from_args(args)
    paths = [Path(p) for p in args.checkpoints]
    out = Path(args.out)
    _check_paths(paths, out)
    main = distributed.is_main
    with distributed.session(resolve_device(args.device)):
        curves, problems = {}, []
        for path, name in zip(paths, _names(paths)):
            result = compute_landscape(path, config, out / name, device=args.device, data_dir=args.data_dir,
                                       progress=not args.quiet, dataset=args.dataset, threat=args.threat,
                                       model_dir=args.model_dir, allow_nonfinite=args.allow_nonfinite)
            curves[name] = result.table
            problems += [f"{path}: {p}" for p in nonfinite_results(result.table.to_dict("records"), result.info)]
            if result.info.get("nonfinite_weights") and main():
                print(nonfinite_warning(str(path), result.info["nonfinite_weights"]), file=sys.stderr)
            if not args.quiet and main():
                print(f"{path}: {_summary(result.info)}", file=sys.stderr)
        if main():
            if not config.surface:
                plot_curves(curves, out / "curves.png", normalization=config.normalization, loss=config.loss,
                            steps=config.steps)
            print(f"landscape saved in {out}")
        distributed.barrier()  # the files exist when any rank returns
    if problems:
        raise _nonfinite_error(problems, out)
    return 0


def _summary(info: dict) -> str:
    flat, used = info["flatness"], info["settings"]
    extra = (f", sharpness@{flat['sharpness_radius']:g} = {flat['sharpness']:.4f}"
             if flat.get("sharpness") is not None else "")
    return (f"{info['points_computed']} points computed, {info['points_reused']} reused{extra} "
            f"({used['loss']} loss, {used['attack']['name']}, {used['samples']} {used['split']} images)")


def measure_config_from_args(args: argparse.Namespace) -> "MeasureConfig":
    """The :class:`landscape.measure_run.MeasureConfig` the flags describe (checked there)."""
    from awp.config import parse_number
    from landscape.measure_run import MeasureConfig

    names = () if args.measures.strip() == "all" else tuple(n.strip() for n in args.measures.split(",") if n.strip())
    if not names and args.measures.strip() != "all":
        raise UsageError("--measures needs 'all' or at least one measure name")
    settings: dict[str, dict] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        name, dot, setting = key.partition(".")
        if not sep or not dot or not name or not setting:
            raise UsageError(f"--set expects MEASURE.KEY=VALUE, got {item!r}")
        try:
            number = parse_number(value)
            settings.setdefault(name, {})[setting] = int(number) if number.is_integer() and "." not in value else number
        except ValueError:
            settings.setdefault(name, {})[setting] = value
    return MeasureConfig(measures=names, split=args.split, samples=args.samples, sample_seed=args.sample_seed,
                         eps=_number(args.eps, "--eps"), step_size=_number(args.step_size, "--step-size"),
                         steps=args.steps, seed=args.seed, clean=args.clean, batch_size=args.batch_size,
                         precision=args.precision, channels_last=args.channels_last, compile=args.compile,
                         settings=settings)


def _measures(args: argparse.Namespace) -> int:
    """Compute and save the measures of every checkpoint (:func:`landscape.measure_run.compute_measures`)."""
    from awp import distributed
    from awp.safety import nonfinite_warning
    from awp.io import nonfinite_paths
    from awp.runtime import resolve_device
    from landscape.measure_run import compute_measures

    config = measure_config_from_args(args)
    paths = [Path(p) for p in args.checkpoints]
    out = Path(args.out)
    _check_paths(paths, out)
    say = (lambda message: print(message, file=sys.stderr)) if not args.quiet and distributed.is_main() else None
    problems = []
    with distributed.session(resolve_device(args.device)):
        for path, name in zip(paths, _names(paths)):
            result = compute_measures(path, config, out / name, device=args.device, data_dir=args.data_dir,
                                      log=say, dataset=args.dataset, threat=args.threat, model_dir=args.model_dir,
                                      allow_nonfinite=args.allow_nonfinite)
            problems += [f"{path}: {k} is {v}" for k, v in nonfinite_paths(result.values).items()]
            if result.info.get("nonfinite_weights") and distributed.is_main():
                print(nonfinite_warning(str(path), result.info["nonfinite_weights"]), file=sys.stderr)
            if say is not None:
                say(f"{path}: {result.info['measures_computed']} computed, {result.info['measures_reused']} reused "
                    f"-> {result.path}")
        if distributed.is_main():
            print(f"measures saved in {out}")
        distributed.barrier()
    if problems:
        raise _nonfinite_error(problems, out)
    return 0
