"""SaLIP (Aleem et al., "Test-Time Adaptation with SaLIP", CVPRW 2024): segment everything ->
area filter -> retrieve the proposals that best match the text -> box prompts -> SAM again.

The image is encoded once; proposals, retrieval (for the built-in model, which reads the same
embedding) and the final decode all reuse it. With the built-in model a proposal's score is its
agreement with the text's map (whole targets score highest), and the proposals whose union best
matches the map are retrieved (no count from the prompt's words).
CLIP-family backends score crops of the proposals instead, all in one batch, against the
average embedding of the prompt ensemble, and keep the top k (the paper's retrieval).
"""

from __future__ import annotations

import numpy as np

from clipsam.config import SalipConfig
from clipsam.models.grounding.grid import agreement, mask_to_grid
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
            prob = np.mean([self.text_model.similarity_map(embedding, t) for t in texts], axis=0)
            cover = np.stack([mask_to_grid(m, embedding.geometry, prob.shape[-1])
                              for m in proposals.masks])
            chosen = select_regions(cover, prob, self.config.top_k)
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
