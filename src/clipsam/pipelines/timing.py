"""Per-stage wall-clock timings for pipeline records, and stopping work between stages.

Every stage start is a checkpoint: inside :func:`stoppable`, once its event is set, the next
stage (or any :func:`checkpoint` call) raises :class:`Stopped` instead of starting. The server
uses this to stop a request that ran out of time instead of letting it hold the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from clipsam.errors import ClipsamError

_STOP: ContextVar[threading.Event | None] = ContextVar("clipsam_stop", default=None)


class Stopped(ClipsamError):
    """The work was stopped from outside before it finished."""


@contextmanager
def stoppable(event: threading.Event) -> Iterator[None]:
    """Run the block so that setting ``event`` stops it at its next checkpoint."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def checkpoint() -> None:
    """Raise :class:`Stopped` if the surrounding :func:`stoppable` block was told to stop."""
    event = _STOP.get()
    if event is not None and event.is_set():
        raise Stopped("stopped before finishing (the time limit ran out)")


class StageTimer:
    """Accumulates seconds per named stage: ``with timer("encode"): ...``; each stage start is a
    :func:`checkpoint`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        checkpoint()
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed

    def total(self) -> dict[str, float]:
        """The stages plus their sum under ``"total"``."""
        return {**self.seconds, "total": sum(self.seconds.values())}
