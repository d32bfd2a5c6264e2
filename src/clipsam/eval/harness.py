"""Run a method over an evaluation set, writing per-image scores and a summary, resumably.

``OUT_DIR/per_image.csv`` has one row per image (id, dice, iou, hd95, nsd, found, gt_empty,
seconds, wall_seconds, error; a missing value is an empty cell) and is rewritten atomically after
every image, so a killed run loses at most the image in progress and a rerun skips every id
already scored (failed ids are tried again). ``OUT_DIR/run.json`` records what the rows are of:
method, set, prompt, NSD tolerance and the method's settings (resolved configuration, model file
hashes, clipsam version; :mod:`clipsam.pipelines.provenance`), so a rerun made any other way is
refused, naming what differs, instead of mixed in (``overwrite`` starts over).
``OUT_DIR/summary.json`` is written at the end.

Summary statistics are over images with a non-empty reference that did not fail; failed images
are counted (``n_failed``) and listed with their errors, never silently left out; images with an
empty reference are reported apart (with "not found" accuracy for methods that can say so).
``seconds`` is the method's own time on one image (reading and scoring excluded). Images are
read ahead and scored and written behind in background threads while the method runs
(:mod:`clipsam.io.overlap`); an image's ``wall_seconds`` is the time from the previous row
being written (the run's start for the first) to its own, so they add up to the run's wall
time. ``seconds_per_image`` and ``wall_seconds_per_image`` average them over every image that
did not fail.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipsam.errors import ClipsamError, InputError
from clipsam.eval.dataset import Case, EvalDataset, LoadedCase, load_case
from clipsam.eval.methods import Method
from clipsam.eval.metrics import DEFAULT_NSD_TOLERANCE_MM, score_mask
from clipsam.io.atomic import write_text_atomic
from clipsam.io.image import segmenter_input
from clipsam.io.overlap import BackgroundWriter, prefetch
from clipsam.io.overlay import write_overlay_png
from clipsam.io.progress import progress_bar
from clipsam.io.read import one_line
from clipsam.io.record import to_jsonable, write_record_json
from clipsam.io.views import write_views
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.provenance import differences

LOG = logging.getLogger(__name__)
TABLE = "per_image.csv"


class CsvRow:
    """A dataclass row of a results table: floats (an empty cell is NaN), optional bools
    (``true``/``false``/empty), ints and strings, in the order of its fields."""

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def to_csv(self) -> dict[str, str]:
        cells = {}
        for name in self.fields():
            value = getattr(self, name)
            if isinstance(value, float):
                cells[name] = "" if math.isnan(value) else f"{value:.6g}"
            elif isinstance(value, bool):
                cells[name] = str(value).lower()
            else:
                cells[name] = "" if value is None else str(value)
        return cells

    @classmethod
    def from_csv(cls, cells: dict[str, str]) -> Any:
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            text = cells.get(spec.name) or ""
            kind = str(spec.type)
            if kind == "float":
                values[spec.name] = float(text) if text else math.nan
            elif kind == "int":
                values[spec.name] = int(text) if text else 0
            elif kind.startswith("bool"):
                values[spec.name] = None if not text else text.lower() == "true"
            else:
                values[spec.name] = text
        return cls(**values)


@dataclass(frozen=True)
class ImageRow(CsvRow):
    """One line of per_image.csv; NaN means missing."""

    id: str
    dice: float = math.nan
    iou: float = math.nan
    hd95: float = math.nan
    nsd: float = math.nan
    found: bool | None = None
    gt_empty: bool | None = None
    seconds: float = math.nan
    wall_seconds: float = math.nan
    error: str = ""


def evaluate(
    dataset: EvalDataset,
    method: Method,
    out_dir: str | Path,
    prompt: str = "",
    limit: int | None = None,
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    progress: bool = True,
    save_intermediates: bool = False,
    overwrite: bool = False,
    subset: str = "all",
    seen_by_text_model: int | None = None,
) -> dict[str, Any]:
    """Score ``method`` on the first ``limit`` cases of ``dataset`` (all by default).

    With ``save_intermediates`` each image also gets ``out_dir/intermediates/<id>/`` with an
    overlay (mask outline and box prompts) and pictures of the method's intermediate views.
    ``overwrite`` drops the rows of an earlier run in ``out_dir`` instead of resuming it.
    ``subset`` (which part of the set ``dataset`` is) and ``seen_by_text_model`` (how many of
    the images' subjects the text model was trained or calibrated on; None when it cannot be
    known) go into the summary. Returns the summary also written to ``out_dir/summary.json``.
    """
    out_dir = Path(out_dir)
    if method.needs_prompt and not prompt.strip():
        raise InputError(f"method {method.name} needs a text prompt (--prompt)")
    cases = dataset.cases[:limit] if limit is not None else dataset.cases
    run = {"method": method.name, "dataset": str(dataset.root.resolve()),
           "prompt": prompt, "nsd_tolerance_mm": tolerance_mm,
           "settings": method.provenance.identity.fields() if method.provenance else None}
    rows = {} if overwrite else resume_rows(out_dir, run)
    write_record_json(out_dir / "run.json", run)
    todo = [case for case in cases if case.id not in rows or rows[case.id].error]
    if len(todo) < len(cases):
        LOG.info("resuming: %d of %d images already scored", len(cases) - len(todo), len(cases))
    order = {case.id: index for index, case in enumerate(dataset.cases)}
    table = out_dir / TABLE
    record = row_recorder(table, rows, order)

    bar = progress_bar(prefetch(todo, load_case), len(todo), f"{method.name} on {dataset.name}",
                       enabled=progress)
    with BackgroundWriter() as writer:
        for case, loaded in bar:
            views_dir = out_dir / "intermediates" / case.id if save_intermediates else None
            outcome = run_case(case, loaded, method, prompt)
            if isinstance(outcome, ImageRow):
                writer.submit(record, outcome)
            else:
                writer.submit(lambda *a: record(score_case(*a)), case, loaded, *outcome,
                              tolerance_mm, views_dir)
    if todo:  # the last image's wall time, measured after its row was written
        write_rows(table, sorted(rows.values(), key=lambda r: order.get(r.id, len(order))))
    scope = [rows[case.id] for case in cases]
    summary = summarise(scope, method, dataset, prompt, tolerance_mm, subset,
                        seen_by_text_model)
    write_record_json(out_dir / "summary.json", summary)
    return summary


def run_case(case: Case, loaded: LoadedCase | Exception, method: Method,
             prompt: str) -> tuple[PipelineResult, float] | ImageRow:
    """The method's result on a read case and its own time; a failure (reading included)
    becomes the row's error."""
    try:
        if isinstance(loaded, Exception):
            raise loaded
        pixels = segmenter_input(loaded.image)
        start = time.perf_counter()
        result = method.segment(pixels, loaded.mask, prompt)
        return result, time.perf_counter() - start
    except Exception as exc:
        return failed_row(case, exc)


def score_case(case: Case, loaded: LoadedCase, result: PipelineResult, seconds: float,
               tolerance_mm: float, views_dir: Path | None = None) -> ImageRow:
    """Score a result against the case's reference; with ``views_dir`` the overlay and the
    intermediate views are written there. A failure becomes the row's error."""
    try:
        scores = score_mask(result.mask, loaded.mask, loaded.spacing, tolerance_mm)
        if views_dir is not None:
            pixels = segmenter_input(loaded.image)
            write_overlay_png(views_dir / "overlay.png", pixels, result.mask, result.boxes)
            write_views(views_dir, result.intermediates, result.mask.shape)
    except Exception as exc:
        return failed_row(case, exc)
    return ImageRow(id=case.id, dice=scores.dice, iou=scores.iou, hd95=scores.hd95,
                    nsd=scores.nsd, found=bool(result.found), gt_empty=not loaded.mask.any(),
                    seconds=seconds)


def failed_row(case: Case, exc: Exception, row: type = ImageRow) -> Any:
    """A bad image must not stop the run; the row (an ``row``) says what happened, in one
    line."""
    if isinstance(exc, ClipsamError):
        return row(id=case.id, error=one_line(exc))
    LOG.debug("%s failed", case.id, exc_info=exc)
    return row(id=case.id, error=f"{exc.__class__.__name__}: {one_line(exc)}")


def row_recorder(table: Path, rows: dict[str, Any], order: dict[str, int],
                 row_type: type = ImageRow) -> Callable[[Any], None]:
    """A function that stores a finished row in ``rows``, rewrites ``table`` and then sets the
    row's ``wall_seconds`` (time since the previous row was written, or since now for the
    first). Call it in one thread, one row at a time, in order."""
    last_written = time.perf_counter()

    def record(row: Any) -> None:
        nonlocal last_written
        rows[row.id] = row
        write_rows(table, sorted(rows.values(), key=lambda r: order.get(r.id, len(order))),
                   row_type)
        now = time.perf_counter()
        rows[row.id] = dataclasses.replace(row, wall_seconds=now - last_written)
        last_written = now

    return record


def summarise(rows: list[ImageRow], method: Method, dataset: EvalDataset, prompt: str,
              tolerance_mm: float, subset: str = "all",
              seen_by_text_model: int | None = None) -> dict[str, Any]:
    """The summary.json content for ``rows`` (see the module notes for what counts where).

    Text methods also get ``seen_by_text_model`` (None: not known for this text model)."""
    done = [row for row in rows if not row.error]
    scored = [row for row in done if not row.gt_empty]
    empty = [row for row in done if row.gt_empty]
    failed = [row for row in rows if row.error]

    def mean(name: str, subset: list[ImageRow] = scored) -> float | None:
        values = [getattr(row, name) for row in subset if not math.isnan(getattr(row, name))]
        return float(np.mean(values)) if values else None

    dice_values = [row.dice for row in scored]
    not_found = [row for row in empty if row.found is False]
    seen = {"seen_by_text_model": seen_by_text_model} if method.needs_prompt else {}
    return to_jsonable({
        "method": method.name,
        "dataset": dataset.name,
        "data_dir": str(dataset.root.resolve()),
        "subset": subset,
        **seen,
        "prompt": prompt,
        "n": len(scored),
        "n_images": len(rows),
        "dice_mean": mean("dice"),
        "dice_median": float(np.median(dice_values)) if dice_values else None,
        "iou_mean": mean("iou"),
        "hd95_mean": mean("hd95"),
        "n_hd95": sum(not math.isnan(row.hd95) for row in scored),
        "nsd_mean": mean("nsd"),
        "nsd_tolerance_mm": tolerance_mm,
        "seconds_per_image": mean("seconds", done),
        "wall_seconds_per_image": mean("wall_seconds", done),
        "n_not_found_with_target": sum(row.found is False for row in scored),
        "gt_empty": {
            "n": len(empty),
            "not_found_accuracy": (len(not_found) / len(empty)
                                   if method.reports_absence and empty else None),
        },
        "n_failed": len(failed),
        "failed": [{"id": row.id, "error": row.error} for row in failed],
        "provenance": method.provenance.record() if method.provenance else None,
    })


def resume_rows(out_dir: Path, run: dict[str, Any], table: str = TABLE,
                row: type = ImageRow) -> dict[str, Any]:
    """Rows (of type ``row``) already in ``out_dir/table`` for the same run; refuse a directory
    of another run, naming what differs."""
    previous = out_dir / "run.json"
    if previous.is_file():
        try:
            before = json.loads(previous.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot resume from {previous}: {one_line(exc)}") from exc
        changed = [f"{key}: {before.get(key)!r} -> {run[key]!r}" for key in run
                   if key != "settings" and before.get(key) != to_jsonable(run[key])]
        changed += differences(before.get("settings") or {}, run["settings"] or {})
        if changed:
            more = f"; and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise InputError(f"{out_dir} holds results of another run ({'; '.join(changed[:3])}"
                             f"{more}); use --overwrite to start over, or another --out")
    path = out_dir / table
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {cells["id"]: row.from_csv(cells) for cells in csv.DictReader(handle)}


def write_rows(path: Path, rows: list[CsvRow], row: type = ImageRow) -> None:
    """Write ``rows`` (of type ``row``) as a CSV table, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=row.fields(), lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.to_csv() for r in rows)
    write_text_atomic(path, buffer.getvalue())
