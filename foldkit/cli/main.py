"""Parse the command line, run one command, and turn what happened into an exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from typing import NoReturn

from foldkit.cli.codes import (
    EXIT_BAD_INPUT,
    EXIT_CODES_EPILOG,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
)
from foldkit.cli.commands import COMMANDS
from foldkit.cli.feedback import fail, one_line_warnings, quiet_on_closed_pipe
from foldkit.cli.options import HelpFormatter
from foldkit.errors import FoldkitError

DESCRIPTION = (
    "foldkit folds BatchNorm into the convolutions before it, exports Darknet and PyTorch networks to "
    "lean ONNX graphs, proves the result against the original, benchmarks it honestly, quantizes it to "
    "int8 and deploys it."
)


class UsageError(Exception):
    """A command line argparse refuses; reported on one line with exit 2 like any bad input."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subcommand per module of :mod:`foldkit.cli.commands`."""
    from foldkit import __version__

    parser = _Parser(prog="foldkit", description=DESCRIPTION, epilog=EXIT_CODES_EPILOG,
                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"foldkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION,
                                    epilog=EXIT_CODES_EPILOG, formatter_class=HelpFormatter)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    with quiet_on_closed_pipe():
        try:
            args = build_parser().parse_args(argv)
        except UsageError as exc:
            print(f"{exc.prog}: error: {exc} (see {exc.prog} --help)", file=sys.stderr)
            return EXIT_BAD_INPUT
        in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main_thread else None
        try:
            with one_line_warnings(args.command):
                return _run(args)
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """The command's own exit code, or the code for what it raised."""
    try:
        return int(args.run(args))
    except FoldkitError as exc:
        return fail(args.command, f"error: {exc}", EXIT_BAD_INPUT)
    except OSError as exc:  # the environment: a full disk, a read-only folder, a vanished file
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(args.command, f"error: {where}{exc.strerror or exc}", EXIT_BAD_INPUT)
    except MemoryError:
        return fail(args.command, "error: out of memory", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail(args.command, "interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # a bug in foldkit: one line, the traceback only when asked for
        if os.environ.get("FOLDKIT_DEBUG") == "1":
            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return fail(args.command, f"internal error: {type(exc).__name__}: {detail} "
                                  "(set FOLDKIT_DEBUG=1 for the traceback)", EXIT_INTERNAL)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like an exception, so every staged output removes its temporary files."""
    raise SystemExit(128 + signum)
