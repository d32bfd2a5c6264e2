"""The progress bar of folder runs: images done, images per second (never seconds per image),
time left; on stderr, and off when stderr is not a terminal or ``enabled`` is False."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
              "[{elapsed}<{remaining}, {rate_noinv_fmt}]")


def progress_bar(items: Iterable[T], total: int, desc: str,
                 enabled: bool = True) -> Iterator[T]:
    """``items`` with a bar of ``total`` images labelled ``desc``."""
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit="image", bar_format=BAR_FORMAT,
                    disable=None if enabled else True, file=sys.stderr)


class SliceBar:
    """A second, transient bar for the slices of one volume (``update(done, total)``); nothing
    when ``enabled`` is False or stderr is not a terminal."""

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self.desc, self.enabled = desc, enabled
        self.bar = None

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit="slice", leave=False,
                            bar_format=BAR_FORMAT, disable=None if self.enabled else True,
                            file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
