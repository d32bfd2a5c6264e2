"""Region training data: segmentation sets, subject-level splits and cached image embeddings.

A set folder holds ``images/<id>.png``, ``masks/<id>.png`` (0 / 255) and optionally
``meta.csv`` (a ``subject`` or ``patient`` column groups images of one person). Images are
encoded once by the segmenter and cached as float16 ``<cache>/<set>/<id>.npy`` with the
geometry in ``<id>.json``; training reads masks as soft targets on the embedding grid.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic, write_text_atomic
from clipsam.models.segmenter import Geometry, ImageEmbedding, PromptableSegmenter

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUBJECT_COLUMNS = ("subject", "patient", "patient_id", "subject_id", "case")


@dataclass(frozen=True)
class Sample:
    """One labelled image of a set; ``subject`` groups images of one person."""

    set_name: str
    image_id: str
    subject: str
    image_path: Path
    mask_path: Path


def list_samples(set_dir: Path) -> list[Sample]:
    """Every image of a set folder that has a mask, sorted by id."""
    set_dir = Path(set_dir)
    images, masks = set_dir / "images", set_dir / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise InputError(f"{set_dir} needs images/ and masks/ folders")
    subjects: dict[str, str] = {}
    meta = set_dir / "meta.csv"
    if meta.is_file():
        with meta.open(newline="") as handle:
            for row in csv.DictReader(handle):
                column = next((c for c in SUBJECT_COLUMNS if row.get(c)), None)
                if "id" in row and column:
                    subjects[row["id"]] = row[column]
    mask_files = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    samples = [Sample(set_dir.name, p.stem, subjects.get(p.stem, p.stem), p, mask_files[p.stem])
               for p in sorted(images.iterdir())
               if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in mask_files]
    if not samples:
        raise InputError(f"{set_dir} has no image with a matching mask")
    return samples


def split_of(sample: Sample, test_fraction: float = 0.2) -> str:
    """``"test"`` or ``"train"`` from a hash of the set and subject: stable across runs."""
    digest = hashlib.sha256(f"{sample.set_name}/{sample.subject}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def write_split(samples: Iterable[Sample], path: Path, test_fraction: float = 0.2) -> Path:
    """Write ``{set: {"train": [ids], "test": [ids]}}`` as JSON."""
    split: dict[str, dict[str, list[str]]] = {}
    for s in samples:
        split.setdefault(s.set_name, {"train": [], "test": []})[split_of(s, test_fraction)].append(
            s.image_id)
    return write_text_atomic(path, json.dumps(split, indent=1, sort_keys=True))


def read_split(path: Path) -> dict[str, dict[str, list[str]]]:
    return json.loads(Path(path).read_text())


def select(samples: Sequence[Sample], split: dict, part: str) -> list[Sample]:
    """The samples listed under ``part`` ("train" / "test") of a split file."""
    wanted = {(name, i) for name, parts in split.items() for i in parts.get(part, [])}
    return [s for s in samples if (s.set_name, s.image_id) in wanted]


def cache_paths(cache_dir: Path, sample: Sample) -> tuple[Path, Path]:
    folder = Path(cache_dir) / sample.set_name
    return folder / f"{sample.image_id}.npy", folder / f"{sample.image_id}.json"


def save_embedding(cache_dir: Path, sample: Sample, embedding: ImageEmbedding) -> None:
    """Store one embedding as float16 features plus its geometry (both written atomically)."""
    features_path, geometry_path = cache_paths(cache_dir, sample)
    g = embedding.geometry
    write_text_atomic(geometry_path, json.dumps({
        "original_size": list(g.original_size), "resized_size": list(g.resized_size),
        "input_size": g.input_size, "model_name": embedding.model_name}))
    features = np.asarray(embedding.features[0], dtype=np.float16)
    write_atomic(features_path, lambda p: np.save(p, features))


def is_cached(cache_dir: Path, sample: Sample) -> bool:
    return all(p.is_file() for p in cache_paths(cache_dir, sample))


def load_geometry(cache_dir: Path, sample: Sample) -> Geometry:
    """The geometry stored beside a cached embedding."""
    _, geometry_path = cache_paths(cache_dir, sample)
    if not geometry_path.is_file():
        raise InputError(f"no cached embedding for {sample.set_name}/{sample.image_id}: "
                         f"run scripts/cache_embeddings.py")
    meta = json.loads(geometry_path.read_text())
    return Geometry(tuple(meta["original_size"]), tuple(meta["resized_size"]),
                    int(meta["input_size"]))


def load_embedding(cache_dir: Path, sample: Sample) -> ImageEmbedding:
    """A cached embedding as float32 (1, C, h, w) features with its geometry."""
    geometry = load_geometry(cache_dir, sample)
    features_path, geometry_path = cache_paths(cache_dir, sample)
    model_name = json.loads(geometry_path.read_text()).get("model_name", "")
    return ImageEmbedding(np.load(features_path).astype(np.float32)[None], geometry, model_name)


def encode_missing(samples: Sequence[Sample], cache_dir: Path, segmenter: PromptableSegmenter,
                   progress: bool = True) -> int:
    """Encode and cache every sample not cached yet; returns how many were encoded."""
    from tqdm import tqdm

    from clipsam.io.image import segmenter_input
    from clipsam.io.read import read_image

    todo = [s for s in samples if not is_cached(cache_dir, s)]
    for sample in tqdm(todo, desc="encoding images", disable=not progress or not todo):
        image = segmenter_input(read_image(sample.image_path))
        save_embedding(cache_dir, sample, segmenter.encode(image))
    return len(todo)


def caption_samples(table: Path, separator: str = ",") -> list[tuple[Sample, str]]:
    """Rows of an open_clip-style caption table (``filepath``, ``title``) as whole-image
    samples with their captions; relative paths are read from the table's folder."""
    table = Path(table)
    rows = []
    with table.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter=separator):
            if not row.get("filepath") or not row.get("title"):
                raise InputError(f"{table} needs 'filepath' and 'title' columns in every row")
            path = Path(row["filepath"])
            path = path if path.is_absolute() else table.parent / path
            key = hashlib.sha256(str(path).encode()).hexdigest()[:10]
            sample = Sample(f"captions-{table.stem}", f"{path.stem}-{key}", str(path), path, path)
            rows.append((sample, row["title"].strip()))
    if not rows:
        raise InputError(f"{table} has no rows")
    return rows
