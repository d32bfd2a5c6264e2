"""Training arrays for the grounding heads: cached features, soft targets, caption pools.

Each image contributes its cached (256, 64, 64) float16 features (memory-mapped), the fraction
of each grid cell inside its mask, the cells holding image content, the index of its concept,
the concepts whose targets may be visible in it unlabelled (never trained or calibrated as
absent there) and those whose targets it certainly shows unlabelled (present, with no mask:
every chest X-ray shows the lungs, the heart and the clavicles). Every concept has a pool of
target captions and a pool of background captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.io.labelled_sets import Sample
from clipsam.io.masks import read_mask
from clipsam.models.grounding.grid import mask_to_grid, valid_mask
from clipsam.models.segmenter import Geometry, ImageEmbedding
from clipsam.train.captions import Concept, background_captions, target_captions
from clipsam.train.embedding_cache import cache_paths, cached_model_name, load_geometry


@dataclass(frozen=True)
class RegionData:
    """Arrays for N images of C concepts."""

    features: list[np.ndarray]  # N x (C_f, h, w) float16, memory-mapped
    targets: np.ndarray  # (N, h, w) float32 mask fraction per cell
    valid: np.ndarray  # (N, h, w) bool image content (not padding)
    concept_index: np.ndarray  # (N,) int
    unknown: np.ndarray  # (N, C) bool: concept c may be visible in image n but is not labelled
    shown: np.ndarray  # (N, C) bool: concept c is certainly visible in image n, not labelled
    concepts: tuple[Concept, ...]
    samples: tuple[Sample, ...]
    geometries: tuple[Geometry, ...]
    model_name: str = ""  # the segmenter that made the cached features

    def __len__(self) -> int:
        return len(self.features)

    def embedding(self, i: int) -> ImageEmbedding:
        """Image ``i`` as a float32 embedding, as a pipeline would pass it."""
        features = np.asarray(self.features[i], np.float32)[None]
        return ImageEmbedding(features, self.geometries[i], self.model_name)

    def has_target(self) -> np.ndarray:
        return self.targets.reshape(len(self), -1).max(axis=1) > 0

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) bool "target present" per image and concept (its own labelled target, and
        the targets it certainly shows), and (N, C) bool "known": False where a concept may be
        visible but is not labelled (neither present nor a negative)."""
        present = self.shown.copy()
        present[np.arange(len(self)), self.concept_index] = self.has_target()
        return present, ~self.unknown

    def unmapped(self) -> np.ndarray:
        """(N, C) bool: no map target for concept c in image n (may show it, or shows it
        without a mask), so the dense terms leave that channel out."""
        return self.unknown | self.shown

    def caption_pools(self) -> list[tuple[list[str], list[str]]]:
        """Per concept: (target captions, background captions)."""
        return [(target_captions(c), background_captions(c)) for c in self.concepts]


def build_region_data(
    samples: Sequence[Sample],
    cache_dir: Path,
    concepts: dict[str, Concept],
    captions: Sequence[str] | None = None,
) -> RegionData:
    """Read cached features and masks for ``samples``; ``concepts`` maps set name -> concept
    (every entry is a concept channel, in sorted order, so two parts of one data set built with
    the same ``concepts`` share channel indices).

    With ``captions`` (one per sample, from a caption table) each whole image is the region
    and each distinct caption is its own concept.
    """
    if captions is not None:
        keys = list(captions)
        concepts = {c: Concept(target=c, phrases=(c,)) for c in set(keys)}
    else:
        keys = [s.set_name for s in samples]
        missing = set(keys) - set(concepts)
        if missing:
            raise KeyError(f"no concept for set(s) {sorted(missing)}")
    # every concept given is a channel, in a fixed order, whether or not it has images here
    names = sorted(concepts)
    order = {name: i for i, name in enumerate(names)}
    unknown = np.zeros((len(samples), len(names)), bool)
    shown = np.zeros_like(unknown)
    for row, key in enumerate(keys):
        for flags, others in ((unknown, concepts[key].may_show),
                              (shown, concepts[key].always_shows)):
            for other in others:
                if other in order and other != key:
                    flags[row, order[other]] = True
    features, targets, valid, index, geometries = [], [], [], [], []
    for sample, key in zip(samples, keys, strict=True):
        features_path, _ = cache_paths(cache_dir, sample)
        array = np.load(features_path, mmap_mode="r")
        geometry = load_geometry(cache_dir, sample)
        grid = array.shape[-1]
        features.append(array)
        valid.append(valid_mask(geometry, grid))
        targets.append(valid[-1].astype(np.float32) if captions is not None
                       else mask_to_grid(read_mask(sample.mask_path), geometry, grid))
        index.append(order[key])
        geometries.append(geometry)
    names_made_by = {cached_model_name(cache_dir, s) for s in samples}
    if len(names_made_by) > 1:
        raise ValueError(f"the cached embeddings were made by several models: "
                         f"{sorted(names_made_by)}")
    return RegionData(features, np.stack(targets), np.stack(valid), np.asarray(index), unknown,
                      shown, tuple(concepts[n] for n in names), tuple(samples), tuple(geometries),
                      names_made_by.pop() if names_made_by else "")
