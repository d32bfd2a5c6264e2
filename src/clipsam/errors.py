"""Errors that clipsam reports to users as one clear line."""


class ClipsamError(Exception):
    """Base class: the message is a single line that names the problem."""


class InputError(ClipsamError):
    """An input file or array cannot be used (unreadable, empty, wrong size, bad prompt)."""


class WeightsError(ClipsamError):
    """Model weights are missing or do not match the expected format."""
