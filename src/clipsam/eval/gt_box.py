"""GT-SAM, the upper bound both papers report: the segmenter prompted with ground-truth boxes.

An evaluation oracle, not a pipeline: it reads the reference mask. One box is drawn around each
connected component (8-connectivity) of the reference, all boxes are decoded in one batch and
the masks are united. Components smaller than ``min_component_fraction`` of the image are
specks (annotation noise) and get no box, unless every component is that small, in which case
the largest still gets one (:func:`clipsam.postprocess.boxes.component_boxes`). Boxes follow
clipsam's one convention (exclusive far corner), without jitter. An empty reference gives no
box: the result is empty and ``found`` is False, for the caller to report apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from clipsam.errors import InputError
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import PipelineResult
from clipsam.postprocess.boxes import component_boxes

DEFAULT_MIN_COMPONENT_FRACTION = 1e-4


@dataclass(frozen=True)
class GtBoxOracle:
    """Segment ``image`` from boxes around the components of its reference mask."""

    segmenter: PromptableSegmenter
    min_component_fraction: float = DEFAULT_MIN_COMPONENT_FRACTION
    name: str = "gt-box"

    def run(
        self,
        image: np.ndarray,
        reference: np.ndarray,
        embedding: ImageEmbedding | None = None,
        keep_intermediates: bool = False,
    ) -> PipelineResult:
        """The union of the masks decoded from every ground-truth box (one batch)."""
        if np.shape(reference) != np.shape(image)[:2]:
            raise InputError(f"reference mask shape {np.shape(reference)} does not match the "
                             f"image shape {np.shape(image)[:2]}")
        timings: dict[str, float] = {}
        boxes = component_boxes(reference, min_fraction=self.min_component_fraction)
        if len(boxes) == 0:
            return PipelineResult(
                mask=np.zeros(np.shape(reference), bool), found=False, boxes=boxes,
                scores=np.zeros(0, np.float32), prompt="", method=self.name, timings=timings)
        start = time.perf_counter()
        if embedding is None:
            embedding = self.segmenter.encode(image)
            timings["encode"] = time.perf_counter() - start
        start = time.perf_counter()
        prediction = self.segmenter.predict(embedding, boxes=boxes)
        timings["decode"] = time.perf_counter() - start
        intermediates = {"box_masks": prediction.masks} if keep_intermediates else {}
        return PipelineResult(
            mask=np.asarray(prediction.masks, bool).any(axis=0), found=True, boxes=boxes,
            scores=np.asarray(prediction.scores, np.float32), prompt="", method=self.name,
            timings=timings, intermediates=intermediates)
