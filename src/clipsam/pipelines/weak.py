"""``method="weak"`` and ``"weak-box"``: segment with a network trained on the cascade's
pseudo-masks.

The model folder comes from ``clipsam weak-train``. The image is resized to the network's
input, the ensemble's mean probability is resized back to the original size and thresholded at
0.5; an empty result means "not found". ``weak`` answers with that mask. ``weak-box`` prompts
the segmenter with boxes around it, as the cascade does with its map (the one map -> boxes
rule, :func:`clipsam.postprocess.map_boxes.map_boxes`); the image is encoded only when the
network found something. The network was trained for one prompt: it ignores the prompt it is
given (an empty one is fine, a different one raises a warning). A ``head`` network reads the
segmenter's embedding, so the image is always encoded for it, once, for both stages.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from clipsam.config import MapBoxRule
from clipsam.errors import InputError
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.models.weak_net import WeakModel
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.common import BoxDecoder, box_decoder, embed_once, segment_boxes
from clipsam.pipelines.timing import StageTimer
from clipsam.postprocess.map_boxes import map_boxes

THRESHOLD = 0.5


class WeakPipeline:
    """A trained weak-supervision model folder as a :class:`~clipsam.pipelines.base.Pipeline`;
    with ``decode`` (default: when a ``segmenter`` is given) the network's mask becomes box
    prompts for it (``weak-box``). A ``head`` model needs the segmenter in either case.

    With ``keep_intermediates`` the result carries the ensemble's ``probability``, its
    ``uncertainty`` (predictive entropy in bits) and ``member_std``, all (H, W) float32, and
    (``weak-box``) the network's own mask as ``coarse_mask`` (so a ``weak-box`` run can be the
    teacher of the next network: self-training).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu",
                 segmenter: PromptableSegmenter | None = None,
                 box_rule: MapBoxRule | None = None, decode: bool | None = None) -> None:
        self.model = WeakModel(model_dir, device)
        self.trained_prompt = self.model.config.prompt
        self.segmenter = segmenter
        self.box_rule = box_rule or MapBoxRule()
        self.decode = segmenter is not None if decode is None else decode
        if segmenter is None and (self.decode or self.model.reads_embedding):
            raise InputError(f"the weak model in {self.model.model_dir} "
                             + ("prompts" if self.decode else "reads the embedding of")
                             + " the segmenter: give one")
        self.name = "weak-box" if self.decode else "weak"

    def box_decoder(self, prompt: str) -> BoxDecoder | None:
        """``weak-box``: box prompts from another slice of a volume are decoded as the network's
        own boxes; ``weak`` decodes none (None)."""
        return box_decoder(self.segmenter, cleanup=True) if self.decode else None

    def run(
        self,
        image: np.ndarray,
        prompt: str,
        embedding: ImageEmbedding | None = None,
        keep_intermediates: bool = False,
    ) -> PipelineResult:
        if prompt.strip() and prompt.strip().lower() != self.trained_prompt.strip().lower():
            warnings.warn(f"the weak model in {self.model.model_dir} was trained for "
                          f"{self.trained_prompt!r}, not {prompt!r}", stacklevel=2)
        timer = StageTimer()
        if self.model.reads_embedding:
            embedding = embed_once(self.segmenter, image, embedding, timer)
        with timer("network"):
            prediction = self.model.predict(np.asarray(image), embedding)
            network_mask = prediction.probability > THRESHOLD
            _, boxes = map_boxes(network_mask, prediction.probability, self.box_rule)
        intermediates = ({"probability": prediction.probability,
                          "uncertainty": prediction.uncertainty,
                          "member_std": prediction.member_std} if keep_intermediates else {})
        mask, scores = network_mask, np.zeros(0, np.float32)
        if self.decode and len(boxes):
            embedding = embed_once(self.segmenter, image, embedding, timer)
            mask, decoded = segment_boxes(self.segmenter, embedding, boxes, timer)
            scores = np.asarray(decoded.scores, np.float32)
            if keep_intermediates:  # the map's own mask, as MedCLIP-SAM's coarse mask
                intermediates["coarse_mask"] = network_mask
        elif len(boxes):
            scores = np.array([prediction.probability[network_mask].mean()], np.float32)
        return PipelineResult(
            mask=mask, found=bool(mask.any()), scores=scores, prompt=prompt, method=self.name,
            boxes=np.asarray(boxes, np.float32).reshape(-1, 4), timings=timer.total(),
            intermediates=intermediates)
