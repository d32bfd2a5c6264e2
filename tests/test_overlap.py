"""Reading ahead and writing behind: order kept, errors handed back, memory bounded."""

import threading
import time

import pytest

from clipsam.io.overlap import BackgroundWriter, prefetch


def test_prefetch_keeps_order_loads_ahead_and_hands_back_errors():
    loaded_by = []

    def load(i):
        loaded_by.append(threading.current_thread().name)
        if i == 2:
            raise ValueError("bad image 2")
        return i * 10

    out = list(prefetch(range(5), load, depth=2))
    assert [i for i, _ in out] == [0, 1, 2, 3, 4]
    assert [r for i, r in out if i != 2] == [0, 10, 30, 40]
    assert isinstance(out[2][1], ValueError) and "bad image 2" in str(out[2][1])
    assert all(name.startswith("clipsam-read") for name in loaded_by)


def test_prefetch_runs_at_most_depth_loads_ahead():
    started = []
    source = prefetch(range(10), lambda i: started.append(i) or i, depth=2)
    next(source)
    time.sleep(0.05)
    assert max(started) <= 3  # the item handed out, and at most depth + 1 submitted
    source.close()


def test_writer_runs_jobs_in_order_and_raises_a_failed_job():
    done = []
    with BackgroundWriter(depth=2) as writer:
        futures = [writer.submit(lambda i: done.append(i) or i, i) for i in range(6)]
    assert done == list(range(6)) and [f.result() for f in futures] == list(range(6))

    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), BackgroundWriter() as writer:
        writer.submit(fail)
