"""Command-line options shared by several commands."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_presence(parser: argparse.ArgumentParser) -> None:
    """``--presence recall|balanced|precision``: the "not found" operating point
    (RunConfig.presence)."""
    from clipsam.config import PRESENCE_POINTS

    parser.add_argument("--presence", choices=PRESENCE_POINTS, default="recall",
                        help="operating point of 'not found', calibrated per trained target on "
                             "held-out subjects: recall (default) keeps 95%% of present "
                             "targets; balanced maximises balanced accuracy; precision answers "
                             "'not found' on at least 90%% of images without the target")


def add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: the models' intra-op threads (ModelConfig.threads)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="intra-op threads of the models (default: every core this process "
                             "may use, or $CLIPSAM_THREADS)")
