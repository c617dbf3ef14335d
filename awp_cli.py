"""The `awp` console command: the only place that sees all three packages, and it only dispatches.

Each package owns its subcommands in its own ``cli.py`` (``add_parser(subparsers)`` / ``run(args)``).
Expected failures (:class:`awp.errors.UserError`) print one line on stderr and exit non-zero
(2 for bad usage); ``--debug`` shows the traceback instead. SIGTERM (what batch schedulers send
before SIGKILL) ends the command like Ctrl-C: temporary files are removed, finished files stay,
and ``--resume`` continues (exit status 143).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from awp.version import __version__
from awp.errors import UsageError, UserError, one_line

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


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and temp-file cleanup run."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
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
        print(f"awp: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except _Terminated:
        print("awp: terminated (SIGTERM); finished files are kept, --resume continues", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("awp: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
