"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: the models' intra-op threads (ModelConfig.threads)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="intra-op threads of the models (default: every core this process "
                             "may use, or $CLIPSAM_THREADS)")
