"""SaLIP (Aleem et al., "Test-Time Adaptation with SaLIP", CVPRW 2024): segment everything ->
area filter -> retrieve the proposals that best match the text -> box prompts -> SAM again.

The image is encoded once; proposals, retrieval (for the built-in model, which reads the same
embedding) and the final decode all reuse it. With the built-in model a proposal's score is its
agreement with the text's map (whole targets score highest) and every proposal close to the
best that is not a part of one already kept is retrieved (no count from the prompt's words).
CLIP-family backends score crops of the proposals instead, all in one batch, against the
average embedding of the prompt ensemble, and keep the top k (the paper's retrieval).
"""

from __future__ import annotations

import numpy as np

from clipsam.config import SalipConfig
from clipsam.models.image_text import DenseGrounding, ImageTextModel
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.common import embed_once, not_found, segment_boxes
from clipsam.pipelines.crops import crop_proposal
from clipsam.pipelines.prompts import count_targets, prompt_ensemble, validate_prompt
from clipsam.pipelines.timing import StageTimer
from clipsam.proposals.area import area_filter
from clipsam.proposals.generate import default_config, generate_proposals
from clipsam.proposals.result import Proposals


def select_regions(scores: np.ndarray, masks: np.ndarray, top_k: int | None = None,
                   min_share: float = 0.5, max_overlap: float = 0.5) -> np.ndarray:
    """Indices of the regions kept, best first: every region scoring at least ``min_share`` of
    the best whose area is not already ``max_overlap`` covered by those kept before it (so
    several separate targets are kept, and parts of one target are not); at most ``top_k``."""
    order = np.argsort(-scores, kind="stable")
    if not len(order) or scores[order[0]] <= 0:
        return order[:0]
    kept: list[int] = []
    covered = np.zeros(masks.shape[1:], bool)
    for i in order:
        if scores[i] < min_share * scores[order[0]] or (top_k and len(kept) >= top_k):
            break
        area = masks[i].sum()
        if area and (masks[i] & covered).sum() <= max_overlap * area:
            kept.append(int(i))
            covered |= masks[i]
    return np.asarray(kept, int)


class SalipPipeline:
    """Proposal retrieval by text, for any image-text model."""

    name = "salip"

    def __init__(
        self,
        segmenter: PromptableSegmenter,
        text_model: ImageTextModel,
        config: SalipConfig | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.text_model = text_model
        self.config = config or SalipConfig()
        self.proposal_config = self.config.proposals or default_config(segmenter)

    def score(
        self, image: np.ndarray, embedding: ImageEmbedding, proposals: Proposals, texts: list[str]
    ) -> np.ndarray:
        """(N,) similarity of each proposal to the prompt ensemble."""
        if isinstance(self.text_model, DenseGrounding):
            return self.text_model.region_scores(embedding, proposals.masks, texts)
        crops = [crop_proposal(image, mask, box, self.config.crop, self.config.enlarge)
                 for mask, box in zip(proposals.masks, proposals.boxes, strict=True)]
        crop_vectors = self.text_model.encode_images(crops)
        text_vector = self.text_model.encode_text(texts).mean(axis=0)
        text_vector /= max(float(np.linalg.norm(text_vector)), 1e-12)
        return crop_vectors @ text_vector

    def run(
        self,
        image: np.ndarray,
        prompt: str,
        embedding: ImageEmbedding | None = None,
        keep_intermediates: bool = False,
    ) -> PipelineResult:
        prompt = validate_prompt(prompt)
        timer = StageTimer()
        embedding = embed_once(self.segmenter, image, embedding, timer)
        if isinstance(self.text_model, DenseGrounding):
            with timer("presence"):
                present = self.text_model.is_present(embedding, prompt)
            if not present:
                return not_found(image.shape, prompt, self.name, timer)
        with timer("proposals"):
            proposals = area_filter(
                generate_proposals(self.segmenter, embedding, self.proposal_config),
                self.config.max_area_fraction, self.config.min_area_fraction)
        if len(proposals) == 0:
            return not_found(image.shape, prompt, self.name, timer)
        texts = prompt_ensemble(prompt, self.config.use_prompt_library)
        with timer("retrieval"):
            scores = np.asarray(self.score(image, embedding, proposals, texts), np.float32)
        if isinstance(self.text_model, DenseGrounding):
            chosen = select_regions(scores, proposals.masks, self.config.top_k)
        else:
            k = self.config.top_k or count_targets(prompt)
            chosen = np.argsort(-scores, kind="stable")[:k]
        boxes = proposals.boxes[chosen]
        mask, _ = segment_boxes(self.segmenter, embedding, boxes, timer)
        views = ({"proposals": proposals, "proposal_scores": scores, "chosen": chosen,
                  "boxes": boxes} if keep_intermediates else {})
        return PipelineResult(
            mask=mask, found=bool(mask.any()), boxes=boxes, scores=scores[chosen],
            prompt=prompt, method=self.name, timings=timer.total(), intermediates=views,
        )
