"""The ``clipsam`` command: global flags, then one subcommand per ``clipsam/apps/cmd_<name>.py``.

A subcommand module exposes ``add_parser(subparsers) -> ArgumentParser`` (which calls
``parser.set_defaults(func=run)``) and ``run(args) -> int``; it is registered by adding its name to
:data:`COMMANDS`. Modules should import heavy libraries inside ``run`` so ``clipsam --help`` stays
fast. A :class:`~clipsam.errors.ClipsamError` escaping ``run`` is printed as one line, exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import import_module

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


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more log output (repeat for debug)")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="only errors and results: no progress bars or info messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        print(f"clipsam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clipsam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
