"""SaLIP (Aleem et al., "Test-Time Adaptation with SaLIP", CVPRW 2024): segment everything ->
area filter -> retrieve the proposals that best match the text -> box prompts -> SAM again.

The image is encoded once; proposals, retrieval (for the built-in model, which reads the same
embedding) and the final decode all reuse it. With the built-in model a proposal's score is its
agreement with the prompt's map (the map the model was trained and calibrated to give for the
prompt itself; whole targets score highest), and the proposals whose union best matches the
map are retrieved (no count from the prompt's words); the map is computed first, so box prompts
off it, whose masks could not be retrieved, are never decoded. The retrieved boxes are decoded
again as they are: one proposal may hold several parts of the target (both lungs in one box),
so no box's mask is cut to its largest component.
CLIP-family backends score crops of the proposals instead, all in one batch, against the
average embedding of the prompt ensemble, and keep the top k (the paper's retrieval).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from clipsam.config import SalipConfig
from clipsam.models.grounding.grid import agreement, boxes_to_grid, mask_to_grid
from clipsam.models.image_text import DenseGrounding, ImageTextModel
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.common import (
    BoxDecoder,
    box_decoder,
    check_presence_point,
    embed_once,
    ground_prompt,
    not_found,
    segment_boxes,
)
from clipsam.pipelines.crops import crop_proposal
from clipsam.pipelines.prompts import count_targets, prompt_ensemble, validate_prompt
from clipsam.pipelines.timing import StageTimer
from clipsam.proposals.area import area_filter
from clipsam.proposals.generate import default_config, generate_proposals
from clipsam.proposals.result import Proposals


def select_regions(cover: np.ndarray, prob: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Indices of the proposals whose union best matches the text's map, in the order taken.

    ``cover`` is (N, h, w): the share of each grid cell inside each proposal; ``prob`` the (h, w)
    map. Proposals are tried from the best-matching one down and kept while adding them raises
    the soft Dice between the union and the map: two lungs are both kept, a part of a kept
    target or a region off the map is not (no count from the prompt's words). At most
    ``top_k``.
    """
    single = agreement(cover, prob)
    kept: list[int] = []
    union = np.zeros_like(prob)
    best = 0.0
    for i in np.argsort(-single, kind="stable"):
        if top_k and len(kept) >= top_k:
            break
        trial = np.maximum(union, cover[i])
        score = float(agreement(trial, prob))
        if score > best + 1e-3:
            kept.append(int(i))
            union, best = trial, score
    return np.asarray(kept, int)


class SalipPipeline:
    """Proposal retrieval by text, for any image-text model."""

    name = "salip"

    def __init__(
        self,
        segmenter: PromptableSegmenter,
        text_model: ImageTextModel,
        config: SalipConfig | None = None,
        presence: str = "recall",
    ) -> None:
        self.segmenter = segmenter
        self.text_model = text_model
        self.config = config or SalipConfig()
        check_presence_point(text_model, presence)
        self.presence = presence
        self.proposal_config = self.config.proposals or default_config(segmenter)

    def crop_scores(self, image: np.ndarray, proposals: Proposals, texts: list[str]) -> np.ndarray:
        """(N,) cosine similarity of each proposal's crop to the prompt ensemble's mean text
        embedding (CLIP-family backends), all crops in one batch."""
        crops = [crop_proposal(image, mask, box, self.config.crop, self.config.enlarge)
                 for mask, box in zip(proposals.masks, proposals.boxes, strict=True)]
        crop_vectors = self.text_model.encode_images(crops)
        text_vector = self.text_model.encode_text(texts).mean(axis=0)
        text_vector /= max(float(np.linalg.norm(text_vector)), 1e-12)
        return crop_vectors @ text_vector

    def text_map(self, embedding: ImageEmbedding, prompt: str) -> np.ndarray:
        """(h, w) map of the prompt (dense grounding only). The descriptive sentences of the
        prompt library are not averaged in: they are what CLIP crops are scored against, while
        the built-in model's map is calibrated on the prompt (mean over the ensemble measured
        worse on training images, docs/BENCHMARKS.md "SaLIP rules")."""
        return self.text_model.similarity_map(embedding, prompt)

    def relevant_boxes(
        self, embedding: ImageEmbedding, prob: np.ndarray
    ) -> Callable[[np.ndarray], np.ndarray]:
        """(N, 4) boxes -> (N,) bool: the box holds at least ``min_map_share`` of the mass of
        the map's core (cells reaching half its peak). A mask decoded from a box lies in it, so
        a box off the core gives a proposal that :func:`select_regions` would hardly keep."""
        core = np.where(prob >= 0.5 * float(prob.max()), prob, 0.0)
        total = max(float(core.sum()), 1e-12)

        def relevant(boxes: np.ndarray) -> np.ndarray:
            cells = boxes_to_grid(boxes, embedding.geometry, prob.shape[-1])
            return (cells * core).sum(axis=(1, 2)) / total >= self.config.min_map_share

        return relevant

    def retrieve(
        self, image: np.ndarray, embedding: ImageEmbedding, proposals: Proposals, prompt: str,
        prob: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N,) float32 score of each proposal and the indices of those retrieved, in order.

        Dense grounding: a proposal's score is its agreement with the ensemble's map ``prob``
        (:meth:`text_map`), and the proposals whose union best matches the map are retrieved
        (:func:`select_regions`). Otherwise crop scores, top k.
        """
        if isinstance(self.text_model, DenseGrounding):
            prob = self.text_map(embedding, prompt) if prob is None else prob
            cover = np.stack([mask_to_grid(m, embedding.geometry, prob.shape[-1])
                              for m in proposals.masks])
            return (agreement(cover, prob).astype(np.float32),
                    select_regions(cover, prob, self.config.top_k))
        texts = prompt_ensemble(prompt, self.config.use_prompt_library)
        scores = np.asarray(self.crop_scores(image, proposals, texts), np.float32)
        k = self.config.top_k or count_targets(prompt)
        return scores, np.argsort(-scores, kind="stable")[:k]

    def box_decoder(self, prompt: str) -> BoxDecoder | None:
        """How box prompts from another slice of a volume are decoded: as the retrieved boxes
        are (whole masks, no cut to the largest component)."""
        return box_decoder(self.segmenter, cleanup=False)

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
        prob, relevant = None, None
        text, reached = prompt, {}  # what is grounded: the concept the prompt reaches
        if isinstance(self.text_model, DenseGrounding):
            with timer("presence"):
                text, present, reached = ground_prompt(self.text_model, embedding, prompt,
                                                       self.presence)
            if not present:
                return replace(not_found(image.shape, prompt, self.name, timer),
                               decisions=reached)
            with timer("retrieval"):
                prob = self.text_map(embedding, text)
            if self.config.min_map_share > 0:
                relevant = self.relevant_boxes(embedding, prob)
        with timer("proposals"):
            proposals = area_filter(
                generate_proposals(self.segmenter, embedding, self.proposal_config, relevant),
                self.config.max_area_fraction, self.config.min_area_fraction)
        if len(proposals) == 0:
            return replace(not_found(image.shape, prompt, self.name, timer), decisions=reached)
        with timer("retrieval"):
            scores, chosen = self.retrieve(image, embedding, proposals, text, prob)
        boxes = proposals.boxes[chosen]
        mask, _ = segment_boxes(self.segmenter, embedding, boxes, timer, cleanup=False)
        views = ({"proposals": proposals, "proposal_scores": scores, "chosen": chosen,
                  "boxes": boxes} if keep_intermediates else {})
        return PipelineResult(
            mask=mask, found=bool(mask.any()), boxes=boxes, scores=scores[chosen],
            prompt=prompt, method=self.name, timings=timer.total(), intermediates=views,
            decisions=reached,
        )
