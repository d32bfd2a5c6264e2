"""The ``clipsam`` command: global flags, then one subcommand per ``clipsam/apps/cmd_<name>.py``.

A subcommand module exposes ``add_parser(subparsers) -> ArgumentParser`` (which calls
``parser.set_defaults(func=run)``) and ``run(args) -> int``; it is registered by adding its name to
:data:`COMMANDS`. Modules should import heavy libraries inside ``run`` so ``clipsam --help`` stays
fast.

One error policy for every command, kept here and nowhere else: a command that cannot run (an
unusable argument, a missing file, model or extra) ends with the one line ``clipsam: error:
...`` on stderr and exit code 2, never a traceback. Usage errors come from the parsers
(:class:`CommandParser`); a :class:`~clipsam.errors.ClipsamError` or an :class:`OSError` (a file
that cannot be read or written) escaping ``run`` is printed by :func:`main` (its traceback is
logged at debug level, ``-vv``). Exit code 1 is a finished batch in which some images failed
(``segment``, ``eval``: each failure is listed); 130 an interrupted run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module
from typing import NoReturn

from clipsam.errors import ClipsamError

COMMANDS = (
    "eval",
    "segment",
    "serve",
    "models",
    "finetune",
    "adapt",
    "weak-train",
)


class CommandParser(argparse.ArgumentParser):
    """The parser of ``clipsam`` and of each command (subparsers inherit the class): a usage
    error is one line, ``clipsam: error: <command>: <message>``, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("clipsam").strip()
        self.exit(2, f"clipsam: error: {command + ': ' if command else ''}{message} "
                     f"(see {self.prog} --help)\n")


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more log output (repeat for debug)")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="only errors and results: no progress bars or info messages")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="clipsam",
        description="Text-prompted medical image segmentation: SaLIP and MedCLIP-SAM "
                    "cascades, offline on a laptop CPU.")
    _add_verbosity(parser, default=0)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        sub = import_module(f"clipsam.apps.cmd_{name.replace('-', '_')}").add_parser(subparsers)
        _add_verbosity(sub, default=argparse.SUPPRESS)
    return parser


def configure_logging(verbose: int, quiet: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(verbose - quiet, 2)), logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``clipsam`` with ``argv`` (default: the command line); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ClipsamError as exc:
        return _refuse(str(exc))
    except OSError as exc:
        return _refuse(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
                       else f"{exc.__class__.__name__}: {exc}")
    except KeyboardInterrupt:
        print("clipsam: interrupted", file=sys.stderr)
        return 130


def _refuse(message: str) -> int:
    """Report a command that cannot run: one line, exit code 2 (the traceback at debug level)."""
    logging.getLogger("clipsam").debug("the error's traceback", exc_info=True)
    print(f"clipsam: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
