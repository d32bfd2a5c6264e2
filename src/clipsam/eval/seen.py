"""Which images a grounding model has seen, so that ``clipsam eval --subset test`` can refuse
them whatever folder or name they come under.

2-D images are matched by content: training (:mod:`clipsam.train.fit`) records in the model's
metadata the SHA-256 of every image file it trained or calibrated on, as
``metadata["image_sha256"] = {set: [digest, ...]}``; adaptation (:mod:`clipsam.train.adapt`)
adds the files it learned from. A model that records none may have seen any image.

Volumes are matched by patient (:func:`count_seen_volumes`): a model trains on 2-D slices, so
no volume file's digest is ever recorded, yet a volume shows a patient whose slices it may have
learned from (``lgg_volumes`` holds the patients of the 2-D ``lgg_flair``). The model's
metadata lists its subjects per set, ``metadata["subjects"] = {set: {"train": [ids],
"calibration": [ids]}}``, and a volume whose subject is listed in any set counts as seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from clipsam.eval.dataset import EvalDataset, subjects_of
from clipsam.models.weights import sha256_of

SEEN_KEY = "image_sha256"
SUBJECTS_KEY = "subjects"


def image_digests(images: Iterable[tuple[str, Path]]) -> dict[str, list[str]]:
    """``{set: sorted distinct SHA-256 of its image files}`` of (set, image file) pairs, sets
    sorted."""
    out: dict[str, set[str]] = {}
    for name, path in images:
        out.setdefault(name, set()).add(sha256_of(Path(path)))
    return {name: sorted(digests) for name, digests in sorted(out.items())}


def add_seen(metadata: Mapping[str, Any], name: str, paths: Iterable[Path]) -> dict[str, Any]:
    """A copy of ``metadata`` that also records ``paths`` (under set ``name``) as seen; the same
    when it records nothing (its model may have seen any image, and still may)."""
    recorded = metadata.get(SEEN_KEY)
    if not isinstance(recorded, Mapping):
        return dict(metadata)
    merged = {k: list(v) for k, v in recorded.items()}
    for added in image_digests((name, p) for p in paths).values():
        merged[name] = sorted({*merged.get(name, []), *added})
    return {**metadata, SEEN_KEY: dict(sorted(merged.items()))}


def seen_digests(metadata: Mapping[str, Any]) -> frozenset[str] | None:
    """Every image digest a model's ``metadata`` records, over all sets; None when it records
    none."""
    recorded = metadata.get(SEEN_KEY)
    if not isinstance(recorded, Mapping):
        return None
    return frozenset(str(d) for digests in recorded.values() for d in digests)


def count_seen(paths: Iterable[Path], metadata: Mapping[str, Any]) -> int:
    """How many of the image files ``paths`` the model with ``metadata`` was trained or
    calibrated on (by content): all of them when it does not record which."""
    paths = list(paths)
    seen = seen_digests(metadata)
    if seen is None:
        return len(paths)
    return sum(sha256_of(Path(p)) in seen for p in paths)


def seen_subjects(metadata: Mapping[str, Any]) -> frozenset[str] | None:
    """Every subject a model's ``metadata`` lists as trained or calibrated on, over all its
    sets; None when it lists none (the model may have seen every subject)."""
    subjects = metadata.get(SUBJECTS_KEY)
    if not isinstance(subjects, Mapping):
        return None
    return frozenset(str(s) for parts in subjects.values() for part in ("train", "calibration")
                     for s in (parts or {}).get(part, []))


def count_seen_volumes(dataset: EvalDataset, metadata: Mapping[str, Any]) -> int:
    """How many of a set of volumes' cases show a subject (:func:`clipsam.eval.dataset.
    subjects_of`: meta.csv's subject column, else the case id) that the model with ``metadata``
    was trained or calibrated on in any of its sets: every case when it lists no subjects."""
    seen = seen_subjects(metadata)
    if seen is None:
        return len(dataset.cases)
    subjects = subjects_of(dataset)
    return sum(subjects[case.id] in seen for case in dataset.cases)
