"""An evaluation set on disk: ``images/<id>.png``, ``masks/<id>.png`` and ``meta.csv``.

``meta.csv`` (optional, read by :func:`clipsam.io.labelled_sets.read_meta`) lists the ids and
may give each image's pixel spacing and subject. Without it the ids are the image file stems.
Images may be in any format :func:`clipsam.io.read.read_image` reads; masks are non-zero where
the target is. A set of volumes holds ``images/<id>.nii.gz`` (or ``images/<id>/``, the slices of
one DICOM series) and ``masks/<id>.nii.gz`` on the same voxels (:func:`is_volume_set`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.errors import InputError
from clipsam.io.image import MedicalImage
from clipsam.io.labelled_sets import META_NAME, ImageMeta, Sample, read_meta
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.io.splits import split_of

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One image of a set, its reference mask file, and its pixel spacing (mm) when known."""

    id: str
    image_path: Path
    mask_path: Path
    spacing: tuple[float, float] | None = None


@dataclass(frozen=True)
class LoadedCase:
    case: Case
    image: MedicalImage
    mask: np.ndarray

    @property
    def spacing(self) -> tuple[float, float] | None:
        """meta.csv's spacing, else the image file's own."""
        return self.case.spacing or self.image.spacing


@dataclass(frozen=True)
class EvalDataset:
    root: Path
    cases: tuple[Case, ...]

    @property
    def name(self) -> str:
        return self.root.name

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)


def open_dataset(root: str | os.PathLike[str]) -> EvalDataset:
    """List the cases of the set at ``root``, sorted by id."""
    root = Path(root)
    images, masks = root / "images", root / "masks"
    for folder in (images, masks):
        if not folder.is_dir():
            raise InputError(f"{root} is not an evaluation set: {folder} is missing "
                             "(expected images/, masks/ and optionally meta.csv)")
    files, mask_files = _files_by_id(images), _files_by_id(masks)
    meta = read_meta(root)
    cases = []
    for case_id in sorted(meta or files):
        if case_id not in files:
            raise InputError(f"{root / META_NAME} lists {case_id} but {images} has no image "
                             "with that name")
        mask_path = mask_files.get(case_id, masks / files[case_id].name)
        cases.append(Case(case_id, files[case_id], mask_path,
                          meta.get(case_id, ImageMeta()).spacing))
    if not cases:
        raise InputError(f"{root} has no images in {images}")
    return EvalDataset(root=root, cases=tuple(cases))


def _files_by_id(folder: Path) -> dict[str, Path]:
    """Visible files keyed by name without extension (``.nii.gz`` counts as one), and folders
    of DICOM files (a series) keyed by name."""
    files = {}
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        if path.is_file():
            name = path.name
            files[name[:-7] if name.lower().endswith(".nii.gz") else path.stem] = path
        elif path.is_dir() and any(p.suffix.lower() in (".dcm", ".dicom")
                                   for p in path.iterdir()):
            files[path.name] = path
    return files


def is_volume(path: Path) -> bool:
    """Whether an image file (or folder) is a volume: a DICOM series folder, or a NIfTI file
    with more than one slice (read from its header alone)."""
    if path.is_dir():
        return True
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return False
    import nibabel as nib

    try:
        shape = nib.load(path).shape
    except Exception as exc:  # a broken file is reported when its case is scored
        LOG.debug("cannot read the header of %s: %s", path, exc)
        return False
    return len(shape) >= 3 and shape[2] > 1


def is_volume_set(dataset: EvalDataset) -> bool:
    """Whether the set holds volumes (scored per volume in 3-D) rather than 2-D images; a set
    mixing both is refused."""
    kinds = {is_volume(case.image_path) for case in dataset.cases}
    if len(kinds) > 1:
        raise InputError(f"{dataset.root} mixes volumes and 2-D images: score them as separate "
                         "sets")
    return kinds == {True}


def load_case(case: Case) -> LoadedCase:
    """Read a case's image and reference mask, checking that their sizes agree."""
    image = read_image(case.image_path)
    if image.is_volume:
        raise InputError(f"{case.image_path} is a volume; evaluation sets hold 2-D images")
    if not case.mask_path.is_file():
        raise InputError(f"{case.image_path} has no mask: {case.mask_path} is missing")
    mask = read_mask(case.mask_path)
    if mask.shape != image.size:
        raise InputError(f"mask {case.mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                         f"{case.image_path} is {image.size[1]}x{image.size[0]}")
    return LoadedCase(case=case, image=image, mask=mask)


def subjects_of(dataset: EvalDataset) -> dict[str, str]:
    """Each case's subject: ``meta.csv``'s subject (or patient...) column, else its id."""
    meta = read_meta(dataset.root)
    return {case.id: meta.get(case.id, ImageMeta()).subject or case.id for case in dataset.cases}


def subject_subset(dataset: EvalDataset, part: str) -> EvalDataset:
    """The cases whose subject falls in ``part`` ("train" or "test") of the subject-hash split
    that the built-in grounding model was trained with (:func:`clipsam.io.splits.split_of`),
    so that ``test`` holds only subjects its training never saw."""
    subjects = subjects_of(dataset)
    return dataclasses.replace(dataset, cases=tuple(
        case for case in dataset.cases
        if split_of(Sample(dataset.name, case.id, subjects[case.id], case.image_path,
                           case.mask_path)) == part))
