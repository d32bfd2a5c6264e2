"""The subject-level split of labelled sets into train and test, and the calibration hold-out.

A subject's side is a stable hash of its subject id alone, not of its set: one patient in two
sets (JSRT heart and JSRT clavicles share the same X-rays and patient ids) is on the same side
in both. A set without subject ids is split by image (each image is its own subject).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from clipsam.io.labelled_sets import Sample


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1): the first 8 bytes of sha256(text) over 2**64."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split_of(sample: Sample, test_fraction: float = 0.2) -> str:
    """``"test"`` or ``"train"`` from a hash of the sample's subject: stable across runs and
    the same in every set holding that subject."""
    return "test" if _unit_hash(sample.subject) < test_fraction else "train"


def calibration_of(sample: Sample, fraction: float = 0.15) -> bool:
    """Whether the sample's subject is held out of gradient steps to calibrate "not found"
    (the same subject-only hash as :func:`split_of`, salted so the two are independent)."""
    return _unit_hash(f"calibration/{sample.subject}") < fraction


def held_out_subjects(subjects: Iterable[str], share: float, salt: str) -> set[str]:
    """``share`` of the distinct ``subjects`` (rounded; at least one, and never all, so none
    from fewer than two), chosen by the same stable hash salted with ``salt``."""
    distinct = sorted(set(subjects))
    if share <= 0 or len(distinct) < 2:
        return set()
    count = min(len(distinct) - 1, max(1, round(share * len(distinct))))
    return set(sorted(distinct, key=lambda s: _unit_hash(f"{salt}/{s}"))[:count])


def fold_of(sample: Sample, folds: int) -> int:
    """The cross-fitting fold (0 .. folds - 1) of the sample's subject: a third salted hash of
    the subject alone, so every image of a subject, in every set, is in one fold."""
    return min(int(_unit_hash(f"fold/{sample.subject}") * folds), folds - 1)

