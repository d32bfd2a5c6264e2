"""Overlap reading and writing with the model: a folder run reads the next images in one
background thread and writes finished ones in another while the main thread runs the encoder,
so the cores stay on the model. Order and outputs are those of a serial run."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(items: Iterable[T], load: Callable[[T], R],
             depth: int = 2) -> Iterator[tuple[T, R | Exception]]:
    """``(item, load(item))`` in order, with up to ``depth`` loads running ahead in one
    background thread; an exception raised by ``load`` is yielded in place of its result."""
    def guarded(item: T) -> R | Exception:
        try:
            return load(item)
        except Exception as exc:  # handed to the consumer, which reports it per item
            return exc

    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipsam-read") as pool:
        ahead: deque[tuple[T, Future]] = deque()
        for item in source:
            ahead.append((item, pool.submit(guarded, item)))
            if len(ahead) > depth:
                first, future = ahead.popleft()
                yield first, future.result()
        while ahead:
            first, future = ahead.popleft()
            yield first, future.result()


class BackgroundWriter:
    """Runs submitted jobs one at a time, in order, in a background thread; ``submit`` waits
    while ``depth`` jobs are pending, so finished results do not pile up in memory. Use as a
    context manager: leaving it waits for every job. An exception raised by a job is raised
    again by the next ``submit`` that waits for it, or on leaving."""

    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clipsam-write")
        self._pending: deque[Future] = deque()

    def submit(self, job: Callable[..., R], *args: object) -> Future:
        while len(self._pending) >= self.depth:
            self._pending.popleft().result()
        future = self._pool.submit(job, *args)
        self._pending.append(future)
        return future

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._pool.shutdown(wait=True)
        pending, self._pending = self._pending, deque()
        if exc_type is None:
            for future in pending:
                future.result()
