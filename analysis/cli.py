"""``awp correlate`` and ``awp figures``: the analysis subcommands (Wu et al. 2020, Fig. 1; the
flatness-gap correlation of Stutz et al. 2021) over any set of run folders and landscapes.

``add_parser`` registers them, and ``awp demo`` too when :mod:`analysis.demo` is present (it
owns its own parser through ``add_demo_parser``); ``run`` dispatches on ``args.command``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from awp.errors import UsageError, UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``correlate`` and ``figures`` (and ``demo`` when analysis.demo exists)."""
    p = subparsers.add_parser(
        "correlate", help="correlate flatness with the robust generalization gap across checkpoints",
        description="Pearson, Spearman and Kendall correlations (scipy p-values, percentile bootstrap "
                    "intervals) between a landscape scalar and the gap (train minus test robust accuracy).")
    _common(p)
    p.add_argument("--x", default="sharpness", help="catalog column on the x side (default sharpness)")
    p.add_argument("--y", default="gap", help="catalog column on the y side (default gap)")
    p.add_argument("--by", default=None, help="correlate within groups of this column, e.g. run or label")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--out", help="also write the table to this CSV file")
    p.add_argument("--measures", nargs="+", metavar="DIR",
                   help="folders of measures.json files (`awp measures`): rank every measure against the gap "
                        "instead (Kendall/Spearman/Pearson with bootstrap intervals, granulated Kendall tau), "
                        "writing measure_ranking.csv and fig_measures.png")
    p.add_argument("--ranking-dir", help="where measure_ranking.csv and fig_measures.png go (default: the first "
                                         "--measures folder)")

    p = subparsers.add_parser(
        "figures", help="regenerate the paper's figures from run folders and landscapes",
        description="Draws the figures that the given runs allow (PNG + PDF + the CSV each was drawn "
                    "from) and correlation.csv; figures whose runs are absent are skipped with a note.")
    _common(p)
    p.add_argument("--out", required=True, help="output folder")
    try:
        demo = importlib.import_module("analysis.demo")
    except ModuleNotFoundError as exc:
        if exc.name != "analysis.demo":
            raise
    else:
        demo.add_demo_parser(subparsers)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", required=True, nargs="+", metavar="DIR",
                   help="run folders or folders of runs (searched at any depth)")
    p.add_argument("--landscapes", nargs="+", metavar="DIR",
                   help="folders searched for landscape.json files (default: the runs folders)")
    p.add_argument("--recompute", action="store_true", help="recompute train/test metrics from the weights")
    p.add_argument("--device", default="cpu", help="device for recomputed metrics (default cpu)")


def run(args: argparse.Namespace) -> int:
    """Run ``correlate`` / ``figures`` (``demo`` is delegated to analysis.demo)."""
    if args.command == "demo":
        return int(importlib.import_module("analysis.demo").run(args) or 0)
    from analysis.catalog import collect_runs, unique_checkpoints
    from awp.io import check_output_file, check_output_folder

    if args.out:  # before the catalog, which may recompute metrics
        (check_output_folder if args.command == "figures" else check_output_file)(args.out, "--out")
    if getattr(args, "measures", None):
        check_output_folder(args.ranking_dir or args.measures[0], "--ranking-dir")
    runs = args.runs[0] if len(args.runs) == 1 else args.runs
    catalog = collect_runs(runs, args.landscapes or args.runs, recompute=args.recompute, device=args.device,
                           measures=getattr(args, "measures", None))
    if args.command == "correlate" and args.measures:
        return _rank(catalog, args)
    if args.command == "correlate":
        from analysis.correlation import correlate

        if args.x == "sharpness" and catalog["sharpness"].isna().all():
            raise UserError(f"no landscape found for any checkpoint of {' '.join(args.runs)}; "
                            f"run `awp landscape` on them "
                            f"and pass --landscapes")
        table = correlate(unique_checkpoints(catalog), args.x, args.y, groupby=args.by,
                          n_boot=args.n_boot, ci=args.ci, seed=args.seed)
        if args.out:
            from awp.io import atomic_write_text

            atomic_write_text(args.out, table.to_csv(index=False))
        import pandas as pd

        def values(column: str) -> str:
            found = catalog[column].dropna().unique().tolist() if column in catalog else []
            return "; ".join(map(str, found)) or "unknown"

        print(f"gap: train - test robust accuracy under {values('attack')}; landscapes: "
              f"{values('landscape_attack')} on {values('landscape_samples')} {values('landscape_split')} images")
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
            print(table.to_string(index=False))
        return 0
    if args.command == "figures":
        from analysis.figures import make_figures

        made = make_figures(catalog, args.out, landscapes=args.landscapes or args.runs)
        for line in made.notes:
            print(line)
        print(f"{len(made)} files written to {args.out}")
        return 0
    raise UsageError(f"unknown analysis command {args.command!r}")  # pragma: no cover


def _rank(catalog, args: argparse.Namespace) -> int:
    """``awp correlate --measures DIR``: every measure ranked against the gap, table and figure."""
    from pathlib import Path

    import pandas as pd

    from analysis.ranking import rank_catalog, write_ranking

    ranking = rank_catalog(catalog, args.y, n_boot=args.n_boot, ci=args.ci, seed=args.seed)
    paths = write_ranking(ranking, Path(args.ranking_dir or args.measures[0]))
    with pd.option_context("display.width", 200, "display.max_columns", 12, "display.precision", 3):
        print(ranking[["measure", "n", "kendall", "kendall_lo", "kendall_hi", "spearman", "pearson",
                       "granulated_tau"]].to_string(index=False))
    print(f"written: {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `awp` command")
