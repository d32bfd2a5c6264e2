"""Steps shared by the text-prompted cascades: encoding once, decoding boxes, empty results."""

from __future__ import annotations

import numpy as np

from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import SegmentationResult
from clipsam.pipelines.timing import StageTimer
from clipsam.postprocess.components import fill_holes, keep_largest


def embed_once(
    segmenter: PromptableSegmenter,
    image: np.ndarray,
    embedding: ImageEmbedding | None,
    timer: StageTimer,
) -> ImageEmbedding:
    """The caller's embedding when given (it must be of this image), else one encoder pass."""
    if embedding is not None:
        if embedding.geometry.original_size != tuple(np.shape(image)[:2]):
            raise ValueError("the embedding given was computed for an image of another size")
        return embedding
    with timer("encode"):
        return segmenter.encode(image)


def segment_boxes(
    segmenter: PromptableSegmenter,
    embedding: ImageEmbedding,
    boxes: np.ndarray,
    timer: StageTimer,
    keep: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode all boxes in one batch; the union of their masks (optionally only the ``keep``
    largest components, holes filled) and the per-box quality scores."""
    with timer("decode"):
        prediction = segmenter.predict(embedding, boxes=boxes)
        mask = prediction.masks.any(axis=0)
        if keep is not None and mask.any():
            mask = fill_holes(keep_largest(mask, keep))
    return mask, prediction.scores


def not_found(
    image_shape: tuple[int, ...], prompt: str, method: str, timer: StageTimer,
    intermediates: dict | None = None,
) -> SegmentationResult:
    """The result for a target judged absent: an empty mask, no boxes, ``found=False``."""
    return SegmentationResult(
        mask=np.zeros(image_shape[:2], bool), found=False, boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32), prompt=prompt, method=method, timings=timer.total(),
        intermediates=intermediates or {},
    )
