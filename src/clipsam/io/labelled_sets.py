"""Labelled image sets on disk: ``images/<id>.<ext>``, ``masks/<id>.<ext>``, optional ``meta.csv``.

``meta.csv`` has an ``id`` column, one row per image. A ``subject`` column (or ``patient``,
``patient_id``, ``subject_id``, ``case``) groups the images of one person; without one, each
image is its own subject. ``pixel_spacing_mm`` (isotropic, mm per pixel) is optional.
:func:`read_meta` is the one reader of ``meta.csv``; :func:`write_meta_subset` writes a subset
of one.
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from clipsam.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SUBJECT_COLUMNS = ("subject", "patient", "patient_id", "subject_id", "case")
META_NAME = "meta.csv"


@dataclass(frozen=True)
class ImageMeta:
    """What ``meta.csv`` says about one image: its subject and pixel spacing (mm), if given."""

    subject: str | None = None
    spacing: tuple[float, float] | None = None


def read_meta(set_dir: Path) -> dict[str, ImageMeta]:
    """``meta.csv`` of a set folder by image id, in file order; {} when there is none."""
    path = Path(set_dir) / META_NAME
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise InputError(f"{path} has no 'id' column")
        return {row["id"]: ImageMeta(_subject(row), _spacing(row, path)) for row in reader}


def write_meta_subset(set_dir: Path, ids: Collection[str], folder: Path) -> None:
    """``folder``/meta.csv with the rows of ``set_dir``'s ``meta.csv`` whose id is in ``ids``,
    its columns unchanged; nothing when the set has no ``meta.csv``."""
    path = Path(set_dir) / META_NAME
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows, fields = [row for row in reader if row["id"] in ids], reader.fieldnames
    with (Path(folder) / META_NAME).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _subject(row: dict[str, str]) -> str | None:
    return next((row[c] for c in SUBJECT_COLUMNS if row.get(c)), None)


def _spacing(row: dict[str, str], path: Path) -> tuple[float, float] | None:
    value = (row.get("pixel_spacing_mm") or "").strip()
    try:
        spacing = float(value) if value else None
    except ValueError:
        raise InputError(f"{path}: pixel_spacing_mm of {row['id']} is not a number: "
                         f"{value!r}") from None
    return (spacing, spacing) if spacing and spacing > 0 else None


@dataclass(frozen=True)
class Sample:
    """One labelled image of a set; ``subject`` groups images of one person (the image id when
    the set has no subject column)."""

    set_name: str
    image_id: str
    subject: str
    image_path: Path
    mask_path: Path


def list_samples(set_dir: Path) -> list[Sample]:
    """Every 2-D raster image of a set folder that has a mask, sorted by file name."""
    set_dir = Path(set_dir)
    images, masks = set_dir / "images", set_dir / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise InputError(f"{set_dir} needs images/ and masks/ folders")
    meta = read_meta(set_dir)
    mask_files = {p.stem: p for p in masks.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    samples = [Sample(set_dir.name, p.stem, _subject_of(meta, p.stem), p, mask_files[p.stem])
               for p in sorted(images.iterdir())
               if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in mask_files]
    if not samples:
        raise InputError(f"{set_dir} has no image with a matching mask")
    return samples


def _subject_of(meta: dict[str, ImageMeta], image_id: str) -> str:
    entry = meta.get(image_id)
    return entry.subject if entry is not None and entry.subject else image_id
