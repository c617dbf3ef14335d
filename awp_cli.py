"""The `awp` console command: the only place that sees all three packages, and it only dispatches.

Each package owns its subcommands in its own ``cli.py`` (``add_parser(subparsers)`` / ``run(args)``).
Expected failures (:class:`awp.errors.UserError`) print one line on stderr and exit non-zero
(2 for bad usage); ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from awp import __version__
from awp.errors import UsageError, UserError

PACKAGES = ("awp.cli", "landscape.cli", "analysis.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _modules():
    modules = []
    for name in PACKAGES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = _Parser(prog="awp", description="Adversarial weight perturbation toolkit "
                     "(Wu, Xia, Wang, NeurIPS 2020): train, eval, landscape, correlate, figures, demo.")
    parser.add_argument("--version", action="version", version=f"awp {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    owners = {}
    for module in _modules():
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        owners.update({name: module for name in set(subparsers.choices) - before})
    return parser, owners


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        parser, owners = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(owners[args.command].run(args) or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"awp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("awp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
