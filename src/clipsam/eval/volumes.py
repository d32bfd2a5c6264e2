"""Score a method on a set of volumes, one row per volume, resumably: the volume counterpart of
:mod:`clipsam.eval.harness`, whose run check, resume and table writing it shares.

``OUT_DIR/per_volume.csv`` has one row per volume: 3-D ``dice``, ``iou``, ``hd95`` and ``nsd``
(:mod:`clipsam.eval.metrics` with the voxel spacing), the reference's and the prediction's
volume and the absolute difference (``volume_error``) in ``volume_unit``, the number of
``slices``, of slices holding the target in the reference (``slices_ref``), in the prediction
(``slices_pred``) and in both (``slices_hit``), slice-detection ``slice_precision`` and
``slice_recall``, ``found``, ``gt_empty``, the method's own ``seconds`` (reading and scoring
excluded) and the part spent in the encoder (``encode_seconds``), ``wall_seconds`` and
``error``. ``OUT_DIR/records/<id>.json`` keeps each volume's decisions (runs of slices,
propagated slices...) and timings; ``run.json`` and ``summary.json`` as for 2-D images.

Spacing: the file's voxel size (NIfTI header, DICOM series geometry): distances in mm, volumes
in mL. With ``voxel_units`` (a set whose files carry no real spacing, as ``lgg_volumes``, whose
source gives none though the files say 1 mm) or a file without one: distances in voxel steps,
volumes in voxels.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipsam.errors import InputError
from clipsam.eval.dataset import Case, EvalDataset
from clipsam.eval.harness import CsvRow, failed_row, resume_rows, row_recorder, write_rows
from clipsam.eval.methods import Method
from clipsam.eval.metrics import DEFAULT_NSD_TOLERANCE_MM, score_mask, slice_detection
from clipsam.io.image import MedicalImage
from clipsam.io.overlap import BackgroundWriter, prefetch
from clipsam.io.overlay import write_slice_grid_png
from clipsam.io.progress import SliceBar, progress_bar
from clipsam.io.read import read_image
from clipsam.io.record import to_jsonable, write_record_json
from clipsam.pipelines.volume import VolumeOutcome

TABLE = "per_volume.csv"


@dataclass(frozen=True)
class VolumeRow(CsvRow):
    """One line of per_volume.csv; NaN means missing."""

    id: str
    dice: float = math.nan
    iou: float = math.nan
    hd95: float = math.nan
    nsd: float = math.nan
    volume_ref: float = math.nan
    volume_pred: float = math.nan
    volume_error: float = math.nan
    volume_unit: str = ""
    slices: int = 0
    slices_ref: int = 0
    slices_pred: int = 0
    slices_hit: int = 0
    slice_precision: float = math.nan
    slice_recall: float = math.nan
    found: bool | None = None
    gt_empty: bool | None = None
    seconds: float = math.nan
    encode_seconds: float = math.nan
    wall_seconds: float = math.nan
    error: str = ""


@dataclass(frozen=True)
class LoadedVolume:
    """A case's volume and its (Z, H, W) bool reference."""

    case: Case
    image: MedicalImage
    mask: np.ndarray


def load_volume(case: Case) -> LoadedVolume:
    """Read a case's volume and its reference (a NIfTI mask on the same voxels)."""
    image = read_image(case.image_path)
    if not image.is_volume:
        raise InputError(f"{case.image_path} is a 2-D image; this set holds volumes")
    if not case.mask_path.is_file():
        raise InputError(f"{case.image_path} has no mask: {case.mask_path} is missing")
    reference = read_image(case.mask_path)
    mask = np.asarray(reference.pixels) > 0
    if mask.shape != image.pixels.shape:
        raise InputError(f"mask {case.mask_path} is {' x '.join(map(str, mask.shape))} (slices "
                         f"x rows x columns) but volume {case.image_path} is "
                         f"{' x '.join(map(str, image.pixels.shape))}")
    return LoadedVolume(case=case, image=image, mask=mask)


def volume_row(case: Case, prediction: np.ndarray, reference: np.ndarray,
               spacing: tuple[float, float, float] | None, tolerance_mm: float,
               found: bool, seconds: float, encode_seconds: float) -> VolumeRow:
    """The row of one volume: ``spacing`` (slice, row, col) in mm, None for voxel units."""
    scores = score_mask(prediction, reference, spacing, tolerance_mm)
    unit_volume = math.prod(spacing) / 1000.0 if spacing is not None else 1.0
    ref_volume = float(reference.sum()) * unit_volume
    pred_volume = float(prediction.sum()) * unit_volume
    slices = slice_detection(prediction, reference)
    return VolumeRow(
        id=case.id, dice=scores.dice, iou=scores.iou, hd95=scores.hd95, nsd=scores.nsd,
        volume_ref=ref_volume, volume_pred=pred_volume,
        volume_error=abs(pred_volume - ref_volume),
        volume_unit="mL" if spacing is not None else "voxels", slices=len(reference),
        slices_ref=slices.ref, slices_pred=slices.pred, slices_hit=slices.hit,
        slice_precision=slices.precision, slice_recall=slices.recall,
        found=bool(found), gt_empty=not reference.any(), seconds=seconds,
        encode_seconds=encode_seconds)


def evaluate_volumes(
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
    voxel_units: bool = False,
) -> dict[str, Any]:
    """Score ``method`` on the first ``limit`` volumes of ``dataset`` (all by default); see the
    module notes. ``save_intermediates`` also writes ``intermediates/<id>/slices.png``, a grid
    of the predicted slices with the mask outlined. Returns the summary written to
    ``out_dir/summary.json``."""
    out_dir = Path(out_dir)
    if method.segment_volume is None:
        raise InputError(f"method {method.name} cannot segment volumes")
    if method.needs_prompt and not prompt.strip():
        raise InputError(f"method {method.name} needs a text prompt (--prompt)")
    cases = dataset.cases[:limit] if limit is not None else dataset.cases
    run = {"method": method.name, "dataset": str(dataset.root.resolve()), "kind": "volumes",
           "prompt": prompt, "nsd_tolerance_mm": tolerance_mm, "voxel_units": voxel_units,
           "settings": method.provenance.identity.fields() if method.provenance else None}
    rows = {} if overwrite else resume_rows(out_dir, run, TABLE, VolumeRow)
    write_record_json(out_dir / "run.json", run)
    todo = [case for case in cases if case.id not in rows or rows[case.id].error]
    order = {case.id: index for index, case in enumerate(dataset.cases)}
    table = out_dir / TABLE
    record = row_recorder(table, rows, order, VolumeRow)

    def score(case: Case, loaded: LoadedVolume, outcome: VolumeOutcome,
              seconds: float) -> VolumeRow:  # in the writer thread
        try:
            spacing = None if voxel_units else loaded.image.voxel_spacing
            row = volume_row(case, outcome.mask, loaded.mask, spacing, tolerance_mm,
                             outcome.found, seconds, outcome.timings.get("encode", math.nan))
            write_record_json(out_dir / "records" / f"{case.id}.json", {
                "id": case.id, "found": outcome.found, "decisions": outcome.decisions,
                "timings": outcome.timings})
            if save_intermediates:
                write_slice_grid_png(out_dir / "intermediates" / case.id / "slices.png",
                                     loaded.image, outcome.mask)
        except Exception as exc:
            return failed_row(case, exc, VolumeRow)
        return row

    bar = progress_bar(prefetch(todo, load_volume), len(todo),
                       f"{method.name} on {dataset.name}", enabled=progress)
    with BackgroundWriter() as writer:
        for case, loaded in bar:
            slices = SliceBar(case.id, enabled=progress)
            try:
                if isinstance(loaded, Exception):
                    raise loaded
                start = time.perf_counter()
                outcome = method.segment_volume(
                    loaded.image, loaded.mask, prompt,
                    functools.partial(slices.update, total=loaded.image.num_slices))
                seconds = time.perf_counter() - start
            except Exception as exc:
                writer.submit(record, failed_row(case, exc, VolumeRow))
                continue
            writer.submit(lambda *a: record(score(*a)), case, loaded, outcome, seconds)
    if todo:  # the last volume's wall time, measured after its row was written
        write_rows(table, sorted(rows.values(), key=lambda r: order.get(r.id, len(order))),
                   VolumeRow)
    summary = summarise_volumes([rows[case.id] for case in cases], method, dataset, prompt,
                                tolerance_mm, subset, seen_by_text_model, voxel_units)
    write_record_json(out_dir / "summary.json", summary)
    return summary


def summarise_volumes(rows: list[VolumeRow], method: Method, dataset: EvalDataset, prompt: str,
                      tolerance_mm: float, subset: str = "all",
                      seen_by_text_model: int | None = None,
                      voxel_units: bool = False) -> dict[str, Any]:
    """The summary.json content: means over the volumes with a target that did not fail
    (failures counted and listed), slice detection per volume and pooled over slices, times
    per volume and the method's time over its encoder's."""
    done = [row for row in rows if not row.error]
    scored = [row for row in done if not row.gt_empty]
    empty = [row for row in done if row.gt_empty]
    failed = [row for row in rows if row.error]

    def mean(name: str, subset: list[VolumeRow] = scored) -> float | None:
        values = [getattr(row, name) for row in subset if not math.isnan(getattr(row, name))]
        return float(np.mean(values)) if values else None

    def pooled(hits: str, total: str) -> float | None:
        count = sum(getattr(row, total) for row in done)
        return sum(getattr(row, hits) for row in done) / count if count else None

    encoded = [row for row in done if row.encode_seconds > 0]
    units = sorted({row.volume_unit for row in done})
    seen = {"seen_by_text_model": seen_by_text_model} if method.needs_prompt else {}
    return to_jsonable({
        "method": method.name,
        "dataset": dataset.name,
        "data_dir": str(dataset.root.resolve()),
        "kind": "volumes",
        "subset": subset,
        **seen,
        "prompt": prompt,
        "n": len(scored),
        "n_volumes": len(rows),
        "dice_mean": mean("dice"),
        "dice_median": float(np.median([row.dice for row in scored])) if scored else None,
        "iou_mean": mean("iou"),
        "hd95_mean": mean("hd95"),
        "n_hd95": sum(not math.isnan(row.hd95) for row in scored),
        "nsd_mean": mean("nsd"),
        "nsd_tolerance_mm": tolerance_mm,
        "voxel_units": voxel_units,
        "volume_unit": units[0] if len(units) == 1 else units,
        "volume_error_mean": mean("volume_error"),
        "slice_precision_mean": mean("slice_precision", done),
        "slice_recall_mean": mean("slice_recall", done),
        "slice_precision_pooled": pooled("slices_hit", "slices_pred"),
        "slice_recall_pooled": pooled("slices_hit", "slices_ref"),
        "seconds_per_volume": mean("seconds", done),
        "encode_seconds_per_volume": mean("encode_seconds", encoded),
        "seconds_over_encode": (sum(row.seconds for row in encoded)
                                / sum(row.encode_seconds for row in encoded)
                                if encoded else None),
        "wall_seconds_per_volume": mean("wall_seconds", done),
        "n_not_found_with_target": sum(row.found is False for row in scored),
        "gt_empty": {
            "n": len(empty),
            "not_found_accuracy": (sum(row.found is False for row in empty) / len(empty)
                                   if method.reports_absence and empty else None),
        },
        "n_failed": len(failed),
        "failed": [{"id": row.id, "error": row.error} for row in failed],
        "provenance": method.provenance.record() if method.provenance else None,
    })
