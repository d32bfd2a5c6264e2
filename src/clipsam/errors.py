"""Errors that clipsam reports to users as one clear line, and the check for optional extras."""

from __future__ import annotations

import importlib.util

EXTRA_MODULES = {"ray": "ray", "dicom": "highdicom", "napari": "napari"}
"""Each optional extra of ``pyproject.toml`` (``pip install 'clipsam[<extra>]'``) and the module
whose presence says it is installed."""


class ClipsamError(Exception):
    """Base class: the message is a single line that names the problem."""


class InputError(ClipsamError):
    """An input file or array cannot be used (unreadable, empty, wrong size, bad prompt)."""


class WeightsError(ClipsamError):
    """Model weights are missing or do not match the expected format."""


class MissingExtraError(ClipsamError):
    """A feature needs an optional package that is not installed."""


def require(extra: str, feature: str) -> None:
    """Check, before anything starts, that optional ``extra`` is installed for ``feature``.

    Raises :class:`MissingExtraError` whose one line names the extra and the two commands that
    install it (pip, or ``scripts/setup.sh --with``); the CLI prints it and exits with 2.
    """
    module = EXTRA_MODULES[extra]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed installation
        found = False
    if not found:
        raise MissingExtraError(
            f"{feature} needs the optional package {module}, which is not installed: "
            f"pip install 'clipsam[{extra}]' (or bash scripts/setup.sh --with {extra})")
