"""A folder job: which images to segment, where each result goes, and segmenting one image.

Both engines (local and Ray) expand the inputs with :func:`collect_inputs` and segment and write
each file with the same steps (:func:`process_image`; the local engine reads ahead and writes
behind in background threads), so they write identical outputs. A folder holding the slices
of one DICOM series is one input, a volume. Per image ``<name>``: ``<name>_mask.png``
(``<name>_mask.nii.gz`` for NIfTI input, same affine, and for volumes), ``<name>_overlay.png``
and the record ``<name>.json``; with several prompts each mask and overlay carries the prompt's
slug (``<name>_<slug>_mask.png``); a job with ``dicom_seg`` also writes ``<name>_seg.dcm``, one
DICOM SEG with a segment per prompt. A job for every trained concept (``all_concepts``, "what is
in this image?") records every concept and writes the masks and overlays of those found, each
with its concept's slug. A volume's target also gets ``<name>_slices.png`` when found, a grid of
the slices that hold it with its outline, and its record the target's volume (voxels, and mL
when the file gives the voxel size). The record is written last, so an image counts as done
when its record lists the job's prompts (or every concept) and every output exists; it is
skipped when that record was also made with the job's settings (the key of
:mod:`clipsam.pipelines.provenance`: method, configuration, model file hashes, clipsam version)
and redone otherwise.
"""

from __future__ import annotations

import glob
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsam.api import Segmenter, SegmentResult, found_line
from clipsam.errors import ClipsamError, InputError
from clipsam.io.overlap import BackgroundWriter, prefetch
from clipsam.io.progress import SliceBar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".nii.gz")
_OUTPUT_TAIL = re.compile(r"_(mask|overlay|seg|slices)$")


@dataclass(frozen=True)
class InputImage:
    """One file (or DICOM series folder) to segment and the output name stem (relative to the
    output folder)."""

    path: Path
    stem: str


@dataclass(frozen=True)
class SegmentJob:
    """What a folder run does to every image; ``settings`` is the run's settings key
    (:attr:`clipsam.pipelines.provenance.RunIdentity.key`). ``uncertainty``: also write each
    result's ``uncertainty`` map (``method="weak"``) as ``<tag>_uncertainty.tif`` (float32; a
    volume's as ``.nii.gz``). ``all_concepts``: look for every trained and adapted concept of
    the text model instead of ``prompts`` (then empty)."""

    prompts: tuple[str, ...]
    out_dir: Path
    settings: str
    overwrite: bool = False
    dicom_seg: bool = False
    uncertainty: bool = False
    all_concepts: bool = False


@dataclass(frozen=True)
class Outcome:
    """How one image went: ``status`` is ``done``, ``redone`` (its earlier result was made with
    other settings), ``skipped`` (done before with the same settings) or ``failed``. ``notes``
    are lines for the user: a prompt that reached no trained concept, what an ``all_concepts``
    job found."""

    path: str
    status: str
    error: str = ""
    found: tuple[bool, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class Summary:
    """Counts of a finished job and the one-line error of each failed image."""

    done: int = 0
    redone: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.notes.extend(n for n in outcome.notes if n not in self.notes)
        if outcome.status == "failed":
            self.failed.append((outcome.path, outcome.error))
        elif outcome.status == "skipped":
            self.skipped += 1
        elif outcome.status == "redone":
            self.redone += 1
        else:
            self.done += 1

    def lines(self) -> list[str]:
        lines = [f"error: {path}: {error}" for path, error in self.failed] + self.notes
        lines.append(f"{self.done} segmented; {self.skipped} done with the same settings, "
                     f"skipped; {self.redone} made with other settings, redone; "
                     f"{len(self.failed)} failed in {self.seconds:.1f} s")
        return lines


def is_image_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(IMAGE_SUFFIXES) and not _OUTPUT_TAIL.search(name_stem(path))


def name_stem(path: Path) -> str:
    """The file name without its image suffix (``scan.nii.gz`` -> ``scan``)."""
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def collect_inputs(inputs: Sequence[str], out_dir: Path | None = None) -> list[InputImage]:
    """Expand files, folders (searched recursively) and glob patterns into images to segment.

    Files inside a folder input keep their sub-folder under the output folder; a folder that
    holds the slices of one DICOM series is one input named after the folder
    (:func:`clipsam.io.dicom.series_slices`). Anything inside ``out_dir`` is ignored. Raises
    :class:`InputError` when an input matches nothing or two inputs would write to the same
    output name.
    """
    out_root = out_dir.resolve() if out_dir is not None else None
    found: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pairs = folder_inputs(path)
        elif path.is_file():
            pairs = [(path, Path(name_stem(path)))]
        else:
            matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))]
            pairs = [(p, Path(name_stem(p))) for p in matches if p.is_file()]
        if out_root is not None:
            pairs = [(p, s) for p, s in pairs if out_root not in p.resolve().parents]
        if not pairs:
            raise InputError(f"no image found at {item}")
        for file, stem in pairs:
            key = stem.as_posix()
            if key in found and found[key].resolve() != file.resolve():
                raise InputError(f"{found[key]} and {file} would both write {key}_*: "
                                 "rename one or run them separately")
            found[key] = file
    return [InputImage(path, stem) for stem, path in found.items()]


def folder_inputs(root: Path) -> list[tuple[Path, Path]]:
    """(input, output stem) of every image under ``root``: each folder of DICOM series slices
    once, as the folder, and every other image file on its own."""
    from clipsam.io.dicom import DICOM_SUFFIXES, series_slices

    files = [p for p in sorted(root.rglob("*")) if p.is_file() and is_image_file(p)]
    pairs = []
    in_series: set[Path] = set()
    for folder in sorted({p.parent for p in files if p.name.lower().endswith(DICOM_SUFFIXES)}):
        slices = series_slices(folder)
        if slices is not None:
            in_series.update(slices)
            pairs.append((folder, Path(root.name) if folder == root else folder.relative_to(root)))
    pairs += [(p, p.relative_to(root).parent / name_stem(p)) for p in files
              if p not in in_series]
    return sorted(pairs)


def select_part(items: Sequence[InputImage], num_parts: int, part_id: int) -> list[InputImage]:
    """Every ``num_parts``-th image from ``part_id`` on (to split a job across machines)."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise InputError(f"--part-id must be in 0..{num_parts - 1} and --num-parts at least 1, "
                         f"got part {part_id} of {num_parts}")
    return list(items[part_id::num_parts])


def prompt_slug(prompt: str) -> str:
    """A file-name-safe form of a prompt: ``"Left & right lungs"`` -> ``left-right-lungs``."""
    return re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "prompt"


def output_paths(item: InputImage, job: SegmentJob, volume: bool,
                 prompts: Sequence[str] | None = None) -> dict[str, dict[str, Path]]:
    """Mask and overlay path per prompt (the job's, or ``prompts``: the concepts an
    ``all_concepts`` job found); under ``"record"`` the record path (``"json"``) and, for a
    ``dicom_seg`` job, the DICOM SEG path (``"seg"``)."""
    prompts = job.prompts if prompts is None else prompts
    base = job.out_dir / item.stem
    mask_suffix = "_mask.nii.gz" if volume else "_mask.png"
    paths: dict[str, dict[str, Path]] = {"record": {"json": base.with_name(base.name + ".json")}}
    if job.dicom_seg:
        paths["record"]["seg"] = base.with_name(base.name + "_seg.dcm")
    for prompt in prompts:
        alone = len(prompts) == 1 and not job.all_concepts
        tag = base.name if alone else f"{base.name}_{prompt_slug(prompt)}"
        paths[prompt] = {"mask": base.with_name(tag + mask_suffix),
                         "overlay": base.with_name(tag + "_overlay.png")}
        if volume:
            paths[prompt]["slices"] = base.with_name(tag + "_slices.png")
        if job.uncertainty:
            map_suffix = "_uncertainty.nii.gz" if volume else "_uncertainty.tif"
            paths[prompt]["uncertainty"] = base.with_name(tag + map_suffix)
    return paths


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def has_volume_mask(path: Path) -> bool:
    """Whether the input's masks are NIfTI: NIfTI input and DICOM series folders."""
    return is_nifti(path) or path.is_dir()


def earlier_settings(item: InputImage, job: SegmentJob) -> str | None:
    """The settings key of this image's earlier result, if a previous run wrote its record for
    the same prompts (an ``all_concepts`` job: for every concept) and every output (masks,
    DICOM SEG); else None (a record without a key gives "")."""
    volume = has_volume_mask(item.path)
    record_path = output_paths(item, job, volume)["record"]["json"]
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        results = record["results"]
        recorded = [r.get("prompt") for r in results]
        found = [r["prompt"] for r in results if r.get("found")]
        all_concepts = record.get("all_concepts", False)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if all_concepts != job.all_concepts or not results:
        return None
    if not job.all_concepts and recorded != list(job.prompts):
        return None
    paths = output_paths(item, job, volume, found if job.all_concepts else None)
    # the slices grid is written only for a target found
    outputs = [paths[p][kind] for p in paths if p != "record" for kind in ("mask", "uncertainty")
               if kind in paths[p]]
    if "seg" in paths["record"]:
        outputs.append(paths["record"]["seg"])
    if not all(path.exists() for path in outputs):
        return None
    return str((results[0].get("provenance") or {}).get("settings") or "")


def check_settings(segmenter: Segmenter, job: SegmentJob) -> None:
    """Refuse models whose settings are not the job's: their records would never match."""
    made = segmenter.provenance["settings"]
    if made != job.settings:
        raise ClipsamError(f"the loaded models have settings {made}, the job {job.settings}: "
                           "build both from the same configuration")


def overlay_plane(image: Any, result: SegmentResult) -> tuple[Any, np.ndarray, np.ndarray]:
    """The 2-D image, mask and boxes an overlay shows (a volume's slice with most mask)."""
    if result.mask.ndim == 2:
        return image, result.mask, result.boxes
    index = int(result.mask.reshape(len(result.mask), -1).sum(axis=1).argmax())
    boxes = result.boxes[result.boxes[:, 0] == index, 1:]
    return image.slice(index), result.mask[index], boxes


def write_outputs(item: InputImage, job: SegmentJob, image: Any,
                  results: Sequence[SegmentResult]) -> None:
    """Write masks and overlays, then the record (atomically, with the I/O layer's writers). An
    ``all_concepts`` job records every concept and writes the outputs of those found."""
    from clipsam.io import write_mask_png, write_overlay_png, write_record_json

    volume = bool(image.is_volume) or has_volume_mask(item.path)
    written = [r for r in results if r.found or not job.all_concepts]
    paths = output_paths(item, job, volume, [r.prompt for r in written])
    entries = []
    for result in results:
        target = paths.get(result.prompt) if result.found or not job.all_concepts else None
        if target is None:  # a concept an all_concepts job did not find: recorded only
            entries.append(result.to_record())
            continue
        if volume:
            from clipsam.io import write_mask_nifti  # nibabel loads only for volumes

            write_mask_nifti(target["mask"], result.mask, image)
        else:
            write_mask_png(target["mask"], result.mask)
        plane, mask, boxes = overlay_plane(image, result)
        write_overlay_png(target["overlay"], plane, mask, boxes)
        files = {"mask_file": target["mask"].name, "overlay_file": target["overlay"].name}
        if volume:
            from clipsam.io.overlay import write_slice_grid_png

            grid = write_slice_grid_png(target["slices"], image, result.mask)
            files["slices_file"] = grid.name if grid is not None else None
            files["volume"] = target_volume(image, result.mask)
        if "uncertainty" in target:
            files["uncertainty_file"] = write_uncertainty(target["uncertainty"], result,
                                                          image, volume).name
        entries.append({**result.to_record(), **files})
    record: dict[str, Any] = {"input": str(item.path), "results": entries}
    if job.all_concepts:
        record["all_concepts"] = True
    if job.dicom_seg:
        from clipsam.apps.dicom_output import write_seg

        record["seg_file"] = write_seg(paths["record"]["seg"], image, written).name
    write_record_json(paths["record"]["json"], record)


def target_volume(image: Any, mask: np.ndarray) -> dict[str, Any]:
    """How big a volume's mask is: voxels, and mL with the voxel size (slice, row, col in mm)
    when the file gives it (None otherwise)."""
    voxels = int(np.count_nonzero(mask))
    spacing = image.voxel_spacing if image.is_volume else None
    return {"voxels": voxels,
            "ml": round(voxels * float(np.prod(spacing)) / 1000.0, 4) if spacing else None,
            "voxel_mm": list(spacing) if spacing else None}


def write_uncertainty(path: Path, result: SegmentResult, image: Any, volume: bool) -> Path:
    """The result's per-pixel uncertainty map (float32), beside its mask."""
    values = result.intermediates.get("uncertainty")
    if values is None:
        raise ClipsamError(f"method {result.method!r} gives no uncertainty map to write")
    if volume:
        from clipsam.io.nifti import write_volume_nifti

        return write_volume_nifti(path, np.asarray(values, np.float32), image)
    from clipsam.io.raster import write_map_tiff

    return write_map_tiff(path, values)


def process_image(segmenter: Segmenter, item: InputImage, job: SegmentJob,
                  progress: Callable[[int, int], None] | None = None) -> Outcome:
    """Segment one file for every prompt and write its outputs; errors become a failed outcome.
    ``progress(done, total)`` follows the slices of a volume."""
    status = pending_status(item, job)
    if status is None:
        return Outcome(str(item.path), "skipped")
    return segment_and_write(segmenter, item, job, status, read_input(item), progress=progress)


def pending_status(item: InputImage, job: SegmentJob) -> str | None:
    """``done`` or ``redone`` (its earlier result was made with other settings) for an image to
    process; None when it is done with the job's settings (and the job does not overwrite)."""
    earlier = earlier_settings(item, job)
    if not job.overwrite and earlier == job.settings:
        return None
    return "redone" if earlier is not None and earlier != job.settings else "done"


def read_input(item: InputImage) -> Any:
    """The input's image, or the exception that reading it raised."""
    from clipsam.io import read_image

    try:
        return read_image(item.path)
    except Exception as exc:  # reported as the image's failure by segment_and_write
        return exc


def segment_and_write(segmenter: Segmenter, item: InputImage, job: SegmentJob, status: str,
                      image: Any, writer: BackgroundWriter | None = None,
                      progress: Callable[[int, int], None] | None = None) -> Outcome | Future:
    """Segment a read image (or report its reading error) and write its outputs: here, or as a
    job of ``writer`` (then the outcome is the job's future). ``progress(done, total)`` follows
    the slices of a volume."""
    try:
        if isinstance(image, Exception):
            raise image
        results = (segmenter.segment_all(image, found_only=False, progress=progress)
                   if job.all_concepts
                   else segmenter.segment(image, list(job.prompts), progress=progress))
    except Exception as exc:
        return failed_outcome(item, exc)
    if writer is not None:
        return writer.submit(write_and_report, item, job, image, results, status)
    return write_and_report(item, job, image, results, status)


def write_and_report(item: InputImage, job: SegmentJob, image: Any,
                     results: Sequence[SegmentResult], status: str) -> Outcome:
    try:
        write_outputs(item, job, image, results)
    except Exception as exc:
        return failed_outcome(item, exc)
    return Outcome(str(item.path), status, found=tuple(r.found for r in results),
                   notes=result_notes(item, job, results))


def result_notes(item: InputImage, job: SegmentJob,
                 results: Sequence[SegmentResult]) -> tuple[str, ...]:
    """Lines for the user: each prompt that reached no trained concept; for an
    ``all_concepts`` job, the concepts found in the image (presence scores)."""
    notes = [r.concept_note for r in results if r.concept_note]
    if job.all_concepts:
        notes.append(f"{item.path}: {found_line(results)}")
    return tuple(notes)


def failed_outcome(item: InputImage, exc: Exception) -> Outcome:
    """The one-line failure of an image; errors that are bugs, not bad input, propagate."""
    if isinstance(exc, ClipsamError):
        return Outcome(str(item.path), "failed", str(exc))
    if isinstance(exc, (OSError, ValueError, RuntimeError, MemoryError)):
        return Outcome(str(item.path), "failed", f"{exc.__class__.__name__}: {exc}")
    raise exc


def run_local(
    items: Sequence[InputImage],
    job: SegmentJob,
    make_segmenter: Callable[[], Segmenter],
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
) -> Summary:
    """Segment every image in this process, loading the models once (not at all when all done).

    The next images are read and the finished ones written in background threads while the
    models run (:mod:`clipsam.io.overlap`); outputs are those of :func:`process_image` on each
    image in turn. ``progress(images, total)`` wraps the iterable of images to process; with it,
    a volume's slices get a bar of their own."""
    start = time.perf_counter()
    summary = Summary()
    todo = []
    for item in items:
        status = pending_status(item, job)
        if status is None:
            summary.add(Outcome(str(item.path), "skipped"))
        else:
            todo.append((item, status))
    if todo:
        segmenter = make_segmenter()
        check_settings(segmenter, job)
        outcomes: list[Outcome | Future] = []
        with BackgroundWriter() as writer:
            images = prefetch(todo, lambda t: read_input(t[0]))
            for (item, status), image in progress(images, len(todo)) if progress else images:
                slices = SliceBar(item.stem, enabled=progress is not None)
                outcomes.append(segment_and_write(segmenter, item, job, status, image, writer,
                                                  slices.update))
        for outcome in outcomes:
            summary.add(outcome.result() if isinstance(outcome, Future) else outcome)
    summary.seconds = time.perf_counter() - start
    return summary
