"""Training arrays for the grounding heads: cached features, soft targets, caption pools.

Each image contributes its cached (256, 64, 64) float16 features (memory-mapped), the fraction
of each grid cell inside its mask, the cells holding image content, and the index of its
concept. Every concept has a pool of target captions and a pool of background captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.io.masks import read_mask
from clipsam.models.grounding.grid import mask_to_grid, valid_mask
from clipsam.models.segmenter import Geometry, ImageEmbedding
from clipsam.train.captions import Concept, background_captions, target_captions
from clipsam.train.regions import Sample, cache_paths, load_geometry


@dataclass(frozen=True)
class RegionData:
    """Arrays for N images of C concepts."""

    features: list[np.ndarray]  # N x (C_f, h, w) float16, memory-mapped
    targets: np.ndarray  # (N, h, w) float32 mask fraction per cell
    valid: np.ndarray  # (N, h, w) bool image content (not padding)
    concept_index: np.ndarray  # (N,) int
    concepts: tuple[Concept, ...]
    samples: tuple[Sample, ...]
    geometries: tuple[Geometry, ...]

    def __len__(self) -> int:
        return len(self.features)

    def embedding(self, i: int) -> ImageEmbedding:
        """Image ``i`` as a float32 embedding, as a pipeline would pass it."""
        features = np.asarray(self.features[i], np.float32)[None]
        return ImageEmbedding(features, self.geometries[i], "cached")

    def has_target(self) -> np.ndarray:
        return self.targets.reshape(len(self), -1).max(axis=1) > 0

    def caption_pools(self) -> list[tuple[list[str], list[str]]]:
        """Per concept: (target captions, background captions)."""
        return [(target_captions(c), background_captions(c)) for c in self.concepts]


def build_region_data(
    samples: Sequence[Sample],
    cache_dir: Path,
    concepts: dict[str, Concept],
    captions: Sequence[str] | None = None,
) -> RegionData:
    """Read cached features and masks for ``samples``; ``concepts`` maps set name -> concept.

    With ``captions`` (one per sample, from a caption table) each whole image is the region
    and each distinct caption is its own concept.
    """
    if captions is not None:
        keys = list(captions)
        concepts = {c: Concept(target=c, phrases=(c,)) for c in set(keys)}
    else:
        keys = [s.set_name for s in samples]
    names = sorted(set(keys))
    order = {name: i for i, name in enumerate(names)}
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
    return RegionData(features, np.stack(targets), np.stack(valid), np.asarray(index),
                      tuple(concepts[n] for n in names), tuple(samples), tuple(geometries))
