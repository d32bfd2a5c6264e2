"""The Ray engine: the same folder job as the local engine, spread over Ray Data actors.

File paths travel through the dataset; each actor loads the models once, reads the pixels itself
and writes the outputs with :func:`clipsam.apps.batch.process_image`, exactly as the local engine
does. A local Ray is started for the run unless Ray is already initialised or an address is given.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clipsam.api import Segmenter
from clipsam.apps.batch import (
    InputImage,
    Outcome,
    SegmentJob,
    Summary,
    check_settings,
    pending_status,
    process_image,
)
from clipsam.config import RunConfig
from clipsam.errors import ClipsamError, require


class SegmentActor:
    """A Ray Data worker: models loaded once in ``__init__``, one call per batch of paths."""

    def __init__(self, job: SegmentJob, make_segmenter: Callable[[], Segmenter]) -> None:
        self.job = job
        self.segmenter = make_segmenter()
        check_settings(self.segmenter, job)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        outcomes = [process_image(self.segmenter, InputImage(Path(str(path)), str(stem)),
                                  self.job)
                    for path, stem in zip(batch["path"], batch["stem"], strict=True)]
        return {"path": [o.path for o in outcomes], "status": [o.status for o in outcomes],
                "error": [o.error for o in outcomes],
                "notes": ["\n".join(o.notes) for o in outcomes]}


def run_ray(
    items: Sequence[InputImage],
    job: SegmentJob,
    config: RunConfig | Callable[[], Segmenter],
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = 1,
) -> Summary:
    """Segment ``items`` on Ray; ``config`` (or a picklable segmenter factory) says which models.

    ``workers`` is the number of actors (default: one per CPU Ray offers).
    """
    require("ray", "the Ray engine")
    import ray

    start = time.perf_counter()
    summary = Summary()
    todo = []
    for item in items:
        if pending_status(item, job) is None:
            summary.add(Outcome(str(item.path), "skipped"))
        else:
            todo.append(item)
    if todo:
        make_segmenter = (functools.partial(Segmenter, config)
                          if isinstance(config, RunConfig) else config)
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                     configure_logging=True)
        try:
            actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            rows = [{"path": str(item.path), "stem": item.stem} for item in todo]
            outcomes = ray.data.from_items(rows).map_batches(
                SegmentActor, fn_constructor_args=(job, make_segmenter),
                compute=ray.data.ActorPoolStrategy(size=min(actors, len(rows))),
                batch_size=batch_size, num_cpus=1)
            for row in outcomes.iter_rows():
                summary.add(Outcome(row["path"], row["status"], row["error"],
                                    notes=tuple(filter(None, row["notes"].split("\n")))))
        except ClipsamError:
            raise
        except Exception as exc:
            raise ClipsamError(f"the Ray run failed: {_last_line(exc)}") from exc
        finally:
            if started_here:
                ray.shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


def _last_line(exc: BaseException) -> str:
    """Ray wraps worker errors in long tracebacks; the last non-empty line names the cause."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else exc.__class__.__name__
