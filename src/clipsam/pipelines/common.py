"""Steps shared by the text-prompted cascades: encoding once, grounding the prompt, decoding
boxes, empty results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from clipsam.errors import InputError
from clipsam.models.image_text import DenseGrounding
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


def check_presence_point(text_model: object, point: str) -> None:
    """Refuse a "not found" operating point other than ``recall`` for a text model that does
    not calibrate them (it would change nothing), or one the model lacks."""
    require = getattr(text_model, "require_point", None)
    if require is not None:
        require(point)
    elif point != "recall":
        raise InputError(f"the text model {getattr(text_model, 'name', text_model)!r} has no "
                         f"presence operating points; '{point}' needs the built-in grounding "
                         "model or one from clipsam finetune: use --presence recall")


def ground_prompt(
    text_model: DenseGrounding, embedding: ImageEmbedding, prompt: str, point: str = "recall"
) -> tuple[str, bool, dict[str, Any]]:
    """(text to ground, whether its target is present, what the result records about it).

    A model that maps prompts to its trained concepts (``reach``, the built-in model) grounds
    the concept the prompt reaches on this image, so the concept's calibration follows, and
    records the concept, its similarity, the candidates of an ambiguous prompt, the presence
    score and the threshold of the "not found" operating ``point``; any other dense model
    grounds the prompt as given (``recall`` only, :func:`check_presence_point`).
    """
    reach = getattr(text_model, "reach", None)
    if reach is None:
        check_presence_point(text_model, point)
        return prompt, bool(text_model.is_present(embedding, prompt)), {}
    match = reach(embedding, prompt, point)
    return match.text, bool(match.present), match.decisions()


def segment_boxes(
    segmenter: PromptableSegmenter,
    embedding: ImageEmbedding,
    boxes: np.ndarray,
    timer: StageTimer,
    cleanup: bool = True,
    first: MaskPrediction | None = None,
) -> tuple[np.ndarray, MaskPrediction]:
    """Decode all boxes in one batch; the union of their masks and the prediction.

    With ``cleanup`` each box's mask keeps only its largest component, holes filled, before
    the union (one target per box: specks elsewhere in a box are dropped, several boxes still
    give several targets). With ``first``, the prediction of a first round for the same boxes,
    each box is decoded again with its first mask as a dense prompt (the segmenter's
    ``refine``: SAM-family segmenters only).
    """
    with timer("decode"):
        prediction = (segmenter.predict(embedding, boxes=boxes) if first is None else
                      segmenter.refine(embedding, boxes, first.low_res_logits))
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
