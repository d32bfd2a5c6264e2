"""Which images a grounding model has seen, by content, so that ``clipsam eval --subset test``
can refuse them whatever folder or name they come under.

Training (:mod:`clipsam.train.fit`) records in the model's metadata the SHA-256 of every image
file it trained or calibrated on, as ``metadata["image_sha256"] = {set: [digest, ...]}``;
adaptation (:mod:`clipsam.train.adapt`) adds the files it learned from. A model that records
none may have seen any image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from clipsam.models.weights import sha256_of

SEEN_KEY = "image_sha256"


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
