"""Training arrays for the grounding heads: stored features, soft targets, caption pools.

Each image contributes its (256, 64, 64) float32 features, memory-mapped from the embedding
store (:mod:`clipsam.models.embedding_store`), the fraction of each grid cell inside its mask,
the cells holding image content, the index of its concept, the concepts whose targets may be
visible in it unlabelled (never trained or calibrated as absent there) and those whose targets
it certainly shows unlabelled (present, with no mask: every chest X-ray shows the lungs, the
heart and the clavicles). Every concept has a pool of target captions and a pool of background
captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipsam.io.labelled_sets import Sample
from clipsam.io.masks import read_mask
from clipsam.models.embedding_store import EmbeddingStore
from clipsam.models.grounding.grid import mask_to_grid, valid_mask
from clipsam.models.segmenter import Geometry, ImageEmbedding
from clipsam.train.captions import Concept, background_captions, target_captions


@dataclass(frozen=True)
class RegionData:
    """Arrays for N images of C concepts."""

    features: list[np.ndarray]  # N x (C_f, h, w) float32, memory-mapped
    targets: np.ndarray  # (N, h, w) float32 mask fraction per cell
    valid: np.ndarray  # (N, h, w) bool image content (not padding)
    concept_index: np.ndarray  # (N,) int
    unknown: np.ndarray  # (N, C) bool: concept c may be visible in image n but is not labelled
    shown: np.ndarray  # (N, C) bool: concept c is certainly visible in image n, not labelled
    concepts: tuple[Concept, ...]
    samples: tuple[Sample, ...]
    geometries: tuple[Geometry, ...]
    model_name: str = ""  # the segmenter that made the stored features

    def __len__(self) -> int:
        return len(self.features)

    def embedding(self, i: int) -> ImageEmbedding:
        """Image ``i`` as a float32 embedding, as a pipeline would pass it (read into memory)."""
        features = np.array(self.features[i], np.float32)[None]
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
    keys: Sequence[str],
    store: EmbeddingStore,
    concepts: dict[str, Concept],
    captions: Sequence[str] | None = None,
) -> RegionData:
    """Memory-map the stored features of ``samples`` (their ``keys`` in ``store``, from
    :func:`clipsam.models.embedding_store.store_images`) and read their masks; ``concepts``
    maps set name -> concept (every entry is a concept channel, in sorted order, so two parts of
    one data set built with the same ``concepts`` share channel indices).

    With ``captions`` (one per sample, from a caption table) each whole image is the region
    and each distinct caption is its own concept.
    """
    if captions is not None:
        concept_of = list(captions)
        concepts = {c: Concept(target=c, phrases=(c,)) for c in set(concept_of)}
    else:
        concept_of = [s.set_name for s in samples]
        missing = set(concept_of) - set(concepts)
        if missing:
            raise KeyError(f"no concept for set(s) {sorted(missing)}")
    # every concept given is a channel, in a fixed order, whether or not it has images here
    names = sorted(concepts)
    order = {name: i for i, name in enumerate(names)}
    unknown = np.zeros((len(samples), len(names)), bool)
    shown = np.zeros_like(unknown)
    for row, concept in enumerate(concept_of):
        for flags, others in ((unknown, concepts[concept].may_show),
                              (shown, concepts[concept].always_shows)):
            for other in others:
                if other in order and other != concept:
                    flags[row, order[other]] = True
    features, targets, valid, index, geometries, model_name = [], [], [], [], [], ""
    for sample, concept, key in zip(samples, concept_of, keys, strict=True):
        embedding = store.load(key, mmap=True)
        geometry, grid = embedding.geometry, embedding.features.shape[-1]
        features.append(embedding.features[0])
        valid.append(valid_mask(geometry, grid))
        targets.append(valid[-1].astype(np.float32) if captions is not None
                       else mask_to_grid(read_mask(sample.mask_path), geometry, grid))
        index.append(order[concept])
        geometries.append(geometry)
        model_name = embedding.model_name
    return RegionData(features, np.stack(targets), np.stack(valid), np.asarray(index), unknown,
                      shown, tuple(concepts[n] for n in names), tuple(samples), tuple(geometries),
                      model_name)
