"""The training package's subcommands: ``awp train``, ``awp eval``, ``awp pseudo-label``, ``awp presets``,
``awp import-checkpoint`` and ``awp export`` (other people's checkpoints, :mod:`awp.foreign`).

Run-level choices are flags (preset, output folder, seed, device, resume); hyperparameters come
from a preset plus typed ``key=value`` overrides (awp.config).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from awp.errors import UsageError, UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this package's subcommands."""
    for register in (_train_parser, _eval_parser, _pseudo_label_parser, _convert_parsers):
        register(subparsers)


def _train_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a model (AT, TRADES, MART, RST, each with or without AWP)",
                                  description="Train from a preset plus key=value overrides, e.g. "
                                              "`awp train --preset digits-at-awp epochs=20 --out runs/at-awp`.")
    train.add_argument("--preset", required=True, help="preset name (see `awp presets`)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="typed overrides of preset values")
    train.add_argument("--out", required=True, help="run folder (config, metrics.csv, checkpoints)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    train.add_argument("--seed", type=int, help="random seed (overrides the preset)")
    train.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    train.add_argument("--data-dir", help="folder with the CIFAR/SVHN files")
    train.add_argument("--download", action="store_true", help="download the data set if missing")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _eval_parser(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="evaluate a checkpoint: clean, FGSM, PGD-20/100, CW-inf, AutoAttack")
    ev.add_argument("checkpoint")
    ev.add_argument("--attacks", default="clean,fgsm,pgd20,cw",
                    help="comma-separated: clean (or natural), fgsm, pgd20, pgd100, cw, autoattack")
    ev.add_argument("--split", default="test", help="train, val or test (default test)")
    ev.add_argument("--samples", type=int, help="number of images (default: all)")
    ev.add_argument("--eps", help="attack radius (default: the data set's paper evaluation, 8/255 with step 2/255 "
                                  "on CIFAR and 1/255 on SVHN; digits: the training eps); fractions like 8/255 work")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--data-dir")
    ev.add_argument("--download", action="store_true")
    ev.add_argument("--out", help="JSON file for the results (default: next to the checkpoint)")
    ev.add_argument("--dataset", default="cifar10", help="data set of a robustbench:NAME entry")
    ev.add_argument("--threat", default="Linf", help="threat model of a robustbench:NAME entry (Linf, L2)")
    ev.add_argument("--model-dir", help="RobustBench model folder (default ./models)")
    _allow_nonfinite(ev)


def _pseudo_label_parser(subparsers: argparse._SubParsersAction) -> None:
    pl = subparsers.add_parser("pseudo-label", help="label an unlabeled pool with a standard model (for RST)")
    pl.add_argument("checkpoint", help="a standard-trained checkpoint")
    pl.add_argument("--source", default="pool",
                    help="'pool' (the training images the checkpoint's run did not use) or an .npz/.pickle file")
    pl.add_argument("--out", required=True, help=".npz to write (images, labels)")
    pl.add_argument("--device", default="auto")
    pl.add_argument("--data-dir")
    _allow_nonfinite(pl)
    pr = subparsers.add_parser("presets", help="list the training presets, or show one's recipe card",
                               description="Without NAME: one line per preset. With NAME: its resolved recipe "
                                           "(data, model, attack, BN sequence, AWP, iterations, lr of every epoch, "
                                           "evaluation), with any key=value overrides applied.")
    pr.add_argument("name", nargs="?", metavar="NAME", help="preset whose recipe card to print")
    pr.add_argument("overrides", nargs="*", metavar="key=value", help="typed overrides of preset values")
    pr.add_argument("--json", action="store_true", help="print the card as one JSON object")


def _convert_parsers(subparsers: argparse._SubParsersAction) -> None:
    from awp.data import list_datasets
    from awp.foreign import EXPORT_FORMATS, FORMATS
    from awp.models import list_models

    im = subparsers.add_parser(
        "import-checkpoint", help="convert an official AWP / TRADES / MART / RST checkpoint into ours",
        description="Read a published checkpoint safely (weights_only), strip module. prefixes and TRADES' "
                    "unused sub_block1, put the repository's input normalization into the model, load strictly "
                    "and write our checkpoint with its provenance. TRADES-AWP / MART-AWP / RST-AWP files use "
                    "--format trades / mart / rst.")
    im.add_argument("source", metavar="SRC", help="the published .pt / .pth file")
    im.add_argument("--format", required=True, help="the published layout: " + ", ".join(FORMATS.names()))
    im.add_argument("--arch", required=True, help="the architecture: " + ", ".join(list_models()))
    im.add_argument("--dataset", required=True, help="the data set: " + ", ".join(list_datasets()))
    im.add_argument("--out", required=True, help="checkpoint to write")
    im.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                    help="inputs normalized with the data set's mean/std before the network "
                         "(default: as the format's repository did: official-awp yes, others no)")
    im.add_argument("--threat", default="Linf",
                    help="threat model stored for eval/landscape: Linf 8/255 or L2 0.5 (default Linf)")
    im.add_argument("--method", help="training method, recorded as is (e.g. trades-awp)")
    im.add_argument("--awp-gamma", type=float, help="AWP gamma of the run, recorded as is")
    _allow_nonfinite(im)

    ex = subparsers.add_parser(
        "export", help="export a checkpoint as a state dict that RobustBench's architecture loads strictly",
        description="Write our weights as a bare state dict for RobustBench (WideResNet / PreActResNet keys, "
                    "mu/sigma when the model normalizes inside); with --model-name, fit and verify against "
                    "that registered RobustBench model (needs the robustbench extra).")
    ex.add_argument("checkpoint", metavar="CKPT")
    ex.add_argument("--format", default="robustbench", help="the export format: " + ", ".join(EXPORT_FORMATS.names()))
    ex.add_argument("--out", required=True, help="file to write, e.g. models/cifar10/Linf/NAME.pt")
    ex.add_argument("--model-name", help="RobustBench model whose architecture must load the file")
    ex.add_argument("--dataset", help="RobustBench data set (default: the checkpoint's)")
    ex.add_argument("--threat", default="Linf", help="RobustBench threat model (default Linf)")
    _allow_nonfinite(ex)


def _allow_nonfinite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="load weights holding NaN/inf anyway (refused by default); every output then says so")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _warn_nonfinite(source: str, names: list[str] | None) -> None:
    if names:
        from awp.safety import nonfinite_warning

        _stderr(nonfinite_warning(source, names))


def run(args: argparse.Namespace) -> int:
    """Run one of this package's subcommands."""
    return {"train": _train, "eval": _eval, "pseudo-label": _pseudo_label, "presets": _presets,
            "import-checkpoint": _import_checkpoint, "export": _export}[args.command](args)


def _train(args: argparse.Namespace) -> int:
    from awp.config import load_preset, parse_overrides
    from awp.train import fit

    overrides = parse_overrides(args.overrides)
    overrides.update({key: getattr(args, key) for key in ("seed", "device", "data_dir")
                      if getattr(args, key) is not None})  # typed values, checked like the preset's
    if args.download:
        overrides["download"] = True
    config = load_preset(args.preset, overrides)
    _, run = fit(config, args.out, resume=args.resume, progress=not args.quiet,
                 log=lambda message: print(message, file=sys.stderr))
    from awp import distributed

    if distributed.is_main():  # under torchrun every rank runs this; one line is enough
        print(f"run saved in {run}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from awp.config import parse_number
    from awp.evaluate import evaluate_checkpoint, format_table

    try:
        eps = None if args.eps is None else parse_number(args.eps)
    except ValueError:
        raise UsageError(f"--eps {args.eps!r} is not a number (or a fraction like 8/255)") from None
    from awp.io import atomic_write_json, check_output_file, nonfinite_paths

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if args.out:
        out = Path(args.out)
    elif args.checkpoint.startswith("robustbench:"):
        out = Path(args.checkpoint.replace(":", "_") + ".eval.json")
    else:
        out = Path(args.checkpoint).with_suffix(".eval.json")
    check_output_file(out, "--out")
    result = evaluate_checkpoint(args.checkpoint, attacks=attacks, split=args.split, samples=args.samples,
                                 eps=eps, batch_size=args.batch_size, seed=args.seed, device=args.device,
                                 data_dir=args.data_dir, download=args.download, dataset=args.dataset,
                                 threat=args.threat, model_dir=args.model_dir, allow_nonfinite=args.allow_nonfinite)
    _warn_nonfinite(args.checkpoint, result.get("nonfinite_weights"))
    atomic_write_json(out, result)
    print(format_table(result))
    print(f"written to {out}")
    bad = nonfinite_paths(result)
    if bad:
        first = next(iter(bad))
        raise UserError(f"{len(bad)} result(s) of {args.checkpoint} are not finite ({first} is {bad[first]}); "
                        f"written to {out} as null")
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from awp.loaded import pseudo_label_checkpoint
    from awp.runtime import resolve_device

    count, agreement = pseudo_label_checkpoint(args.checkpoint, args.out, source=args.source,
                                               device=resolve_device(args.device), data_dir=args.data_dir,
                                               allow_nonfinite=args.allow_nonfinite, log=_stderr)
    note = f"; agreement with the true labels {agreement:.3f}" if agreement is not None else ""
    print(f"wrote {count} pseudo-labeled images to {args.out}{note}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from awp.config import PRESETS, parse_overrides

    if args.name is None:
        if args.overrides or args.json:
            raise UsageError("awp presets: key=value overrides and --json need a preset NAME")
        for name, description in PRESETS.describe().items():
            print(f"{name:24s} {description}")
        return 0
    from awp.recipe import card_json, format_card, recipe_card

    card = recipe_card(args.name, parse_overrides(args.overrides))
    print(card_json(card) if args.json else format_card(card))
    return 0


def _import_checkpoint(args: argparse.Namespace) -> int:
    from awp.foreign import import_checkpoint

    out = import_checkpoint(args.source, format=args.format, arch=args.arch, dataset=args.dataset, out=args.out,
                            normalize=args.normalize, threat=args.threat, method=args.method,
                            awp_gamma=args.awp_gamma, allow_nonfinite=args.allow_nonfinite, log=_stderr)
    print(f"imported {args.source} ({args.format}) as {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from awp.foreign import export_checkpoint

    out = export_checkpoint(args.checkpoint, format=args.format, out=args.out, model_name=args.model_name,
                            dataset=args.dataset, threat=args.threat, allow_nonfinite=args.allow_nonfinite,
                            log=_stderr)
    print(f"exported {args.checkpoint} as {out} (provenance in {out.name}.provenance.json)")
    return 0
