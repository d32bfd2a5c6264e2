"""Baselines that read no text: un-prompted SAM and a whole-image box.

``unprompted`` (the papers' "un-prompted SAM" baseline) segments everything and returns ONE
proposal by a fixed, label-free rule: among the proposals that pass SaLIP's area filter, the one
with the highest predicted IoU times stability score; ties go to the larger mask.
``whole-box`` gives the segmenter a single box around the entire image.
"""

from __future__ import annotations

import numpy as np

from clipsam.config import SalipConfig
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.common import embed_once, not_found, segment_boxes
from clipsam.pipelines.timing import StageTimer
from clipsam.proposals.area import area_filter
from clipsam.proposals.generate import default_config, generate_proposals


class UnpromptedPipeline:
    """Segment everything, keep the single best-quality proposal; the prompt is ignored."""

    name = "unprompted"

    def __init__(self, segmenter: PromptableSegmenter, config: SalipConfig | None = None) -> None:
        self.segmenter = segmenter
        self.config = config or SalipConfig()
        self.proposal_config = self.config.proposals or default_config(segmenter)

    def run(
        self,
        image: np.ndarray,
        prompt: str = "",
        embedding: ImageEmbedding | None = None,
        keep_intermediates: bool = False,
    ) -> PipelineResult:
        timer = StageTimer()
        embedding = embed_once(self.segmenter, image, embedding, timer)
        with timer("proposals"):
            proposals = area_filter(
                generate_proposals(self.segmenter, embedding, self.proposal_config),
                self.config.max_area_fraction, self.config.min_area_fraction)
        if len(proposals) == 0:
            return not_found(image.shape, prompt, self.name, timer)
        quality = proposals.scores * proposals.stability
        best = int(np.lexsort((-proposals.areas, -quality))[0])
        views = {"proposals": proposals, "chosen": np.array([best])} if keep_intermediates else {}
        return PipelineResult(
            mask=proposals.masks[best], found=True, boxes=proposals.boxes[best:best + 1],
            scores=quality[best:best + 1], prompt=prompt, method=self.name,
            timings=timer.total(), intermediates=views,
        )


class WholeImageBoxPipeline:
    """One box around the whole image: what the segmenter does with no localisation at all."""

    name = "whole-box"

    def __init__(self, segmenter: PromptableSegmenter) -> None:
        self.segmenter = segmenter

    def run(
        self,
        image: np.ndarray,
        prompt: str = "",
        embedding: ImageEmbedding | None = None,
        keep_intermediates: bool = False,
    ) -> PipelineResult:
        timer = StageTimer()
        embedding = embed_once(self.segmenter, image, embedding, timer)
        height, width = np.shape(image)[:2]
        boxes = np.array([[0, 0, width, height]], np.float32)
        mask, prediction = segment_boxes(self.segmenter, embedding, boxes, timer)
        return PipelineResult(
            mask=mask, found=bool(mask.any()), boxes=boxes,
            scores=np.asarray(prediction.scores, np.float32), prompt=prompt,
            method=self.name, timings=timer.total(),
        )
