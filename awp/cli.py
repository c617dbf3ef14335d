"""The training package's subcommands: ``awp train``, ``awp eval``, ``awp pseudo-label``, ``awp presets``.

Run-level choices are flags (preset, output folder, seed, device, resume); hyperparameters come
from a preset plus typed ``key=value`` overrides (awp.config).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from awp.errors import UsageError

COMMANDS = ("train", "eval", "pseudo-label", "presets")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this package's subcommands."""
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

    ev = subparsers.add_parser("eval", help="evaluate a checkpoint: natural, FGSM, PGD-20/100, CW-inf, AutoAttack")
    ev.add_argument("checkpoint")
    ev.add_argument("--attacks", default="natural,fgsm,pgd20,cw",
                    help="comma-separated: natural, fgsm, pgd20, pgd100, cw, autoattack")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--samples", type=int, help="number of images (default: all)")
    ev.add_argument("--eps", help="attack radius (default: the checkpoint's training eps); fractions like 8/255 work")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--data-dir")
    ev.add_argument("--download", action="store_true")
    ev.add_argument("--out", help="JSON file for the results (default: next to the checkpoint)")

    pl = subparsers.add_parser("pseudo-label", help="label an unlabeled pool with a standard model (for RST)")
    pl.add_argument("checkpoint", help="a standard-trained checkpoint")
    pl.add_argument("--source", default="pool",
                    help="'pool' (the training images the checkpoint's run did not use) or an .npz/.pickle file")
    pl.add_argument("--out", required=True, help=".npz to write (images, labels)")
    pl.add_argument("--device", default="auto")
    pl.add_argument("--data-dir")

    subparsers.add_parser("presets", help="list the training presets")


def run(args: argparse.Namespace) -> int:
    """Run one of this package's subcommands."""
    return {"train": _train, "eval": _eval, "pseudo-label": _pseudo_label, "presets": _presets}[args.command](args)


def _train(args: argparse.Namespace) -> int:
    from awp.config import load_preset, parse_overrides
    from awp.train import fit

    overrides = parse_overrides(args.overrides)
    for flag, key in (("seed", "seed"), ("device", "device"), ("data_dir", "data_dir")):
        if getattr(args, flag) is not None:
            overrides[key] = str(getattr(args, flag))
    if args.download:
        overrides["download"] = "true"
    config = load_preset(args.preset, overrides)
    _, run = fit(config, args.out, resume=args.resume, progress=not args.quiet,
                 log=lambda message: print(message, file=sys.stderr))
    print(f"run saved in {run}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from awp.config import _parse_float
    from awp.evaluate import evaluate_checkpoint, format_table

    try:
        eps = None if args.eps is None else _parse_float(args.eps)
    except ValueError:
        raise UsageError(f"--eps {args.eps!r} is not a number") from None
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    result = evaluate_checkpoint(args.checkpoint, attacks=attacks, split=args.split, samples=args.samples,
                                 eps=eps, batch_size=args.batch_size, seed=args.seed, device=args.device,
                                 data_dir=args.data_dir, download=args.download)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".eval.json")
    from awp.io import atomic_write_json

    atomic_write_json(out, result)
    print(format_table(result))
    print(f"written to {out}")
    return 0


def _pseudo_label(args: argparse.Namespace) -> int:
    from awp.checkpoint import load_checkpoint
    from awp.config import config_from_dict
    from awp.data import build_dataset, load_unlabeled, pseudo_label, save_unlabeled_npz
    from awp.runtime import resolve_device

    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, map_location=device)
    if args.source == "pool":
        config = config_from_dict(meta["config"])
        data = build_dataset(config.dataset, data_dir=args.data_dir or config.data_dir,
                             val_size=config.val_size, train_subset=config.train_subset,
                             split_seed=config.split_seed)
        if data.pool is None or len(data.pool) == 0:
            raise UsageError("the checkpoint's run used the whole training set: no pool left to pseudo-label; "
                             "pass --source FILE")
        pool = data.pool
    else:
        pool = load_unlabeled(args.source)
    labeled = pseudo_label(model, pool, device=device)
    save_unlabeled_npz(args.out, labeled)
    agreement = (labeled.labels == pool.labels).float().mean().item() if args.source == "pool" else None
    note = f"; agreement with the true labels {agreement:.3f}" if agreement is not None else ""
    print(f"wrote {len(labeled)} pseudo-labeled images to {args.out}{note}")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from importlib import resources

    from awp.config import list_presets

    for name in list_presets():
        text = (resources.files("awp") / "presets" / f"{name}.toml").read_text()
        first = next((line[1:].strip() for line in text.splitlines() if line.startswith("#")), "")
        print(f"{name:24s} {first}")
    return 0


