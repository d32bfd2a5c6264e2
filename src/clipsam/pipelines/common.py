"""Steps shared by the text-prompted cascades: encoding once, decoding boxes, empty results."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from clipsam.models.segmenter import ImageEmbedding, MaskPrediction, PromptableSegmenter
from clipsam.pipelines.base import PipelineResult
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
    cleanup: bool = True,
) -> tuple[np.ndarray, MaskPrediction]:
    """Decode all boxes in one batch; the union of their masks and the prediction.

    With ``cleanup`` each box's mask keeps only its largest component, holes filled, before
    the union (one target per box: specks elsewhere in a box are dropped, several boxes still
    give several targets).
    """
    with timer("decode"):
        prediction = segmenter.predict(embedding, boxes=boxes)
        masks = np.asarray(prediction.masks, bool)
        if cleanup and len(masks):
            masks = np.stack([fill_holes(keep_largest(m, 1)) if m.any() else m for m in masks])
        mask = masks.any(axis=0) if len(masks) else np.zeros(embedding.geometry.original_size,
                                                               bool)
    return mask, prediction


def not_found(
    image_shape: tuple[int, ...], prompt: str, method: str, timer: StageTimer,
    intermediates: dict | None = None,
) -> PipelineResult:
    """The result for a target judged absent: an empty mask, no boxes, ``found=False``."""
    return PipelineResult(
        mask=np.zeros(image_shape[:2], bool), found=False, boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32), prompt=prompt, method=method, timings=timer.total(),
        intermediates=intermediates or {},
    )


def grounding_presence(text_model: object, embedding: ImageEmbedding,
                       prompt: str) -> tuple[float, float] | None:
    """The text model's presence score for the prompt on an image and the prompt's "not found"
    threshold, when the model gives both (the built-in grounding model); else None."""
    score = getattr(text_model, "presence_score", None)
    threshold = getattr(text_model, "threshold_for", None)
    if score is None or threshold is None:
        return None
    return float(score(embedding, prompt)), float(threshold(prompt))


BoxDecoder = Callable[[ImageEmbedding, np.ndarray, StageTimer], tuple[np.ndarray, np.ndarray]]
"""(embedding, (K, 4) boxes, timer) -> the (H, W) bool mask and (K,) scores."""


def box_decoder(segmenter: PromptableSegmenter, cleanup: bool) -> BoxDecoder:
    """Decode box prompts given from outside (a volume's propagated boxes) as the cascades
    decode their own: ``(embedding, boxes, timer) -> (mask, scores)``."""

    def decode(embedding: ImageEmbedding, boxes: np.ndarray,
               timer: StageTimer) -> tuple[np.ndarray, np.ndarray]:
        mask, prediction = segment_boxes(segmenter, embedding, boxes, timer, cleanup)
        return mask, np.asarray(prediction.scores, np.float32)

    return decode
