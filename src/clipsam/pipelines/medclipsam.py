"""MedCLIP-SAM (Koleilat et al., MICCAI 2024) and MedCLIP-SAMv2: text saliency -> coarse mask ->
box prompts -> SAM.

The saliency of the text over the image comes from the text model itself when it grounds text on
the segmenter's embedding (the built-in model: no extra image pass), or from gradients through a
CLIP-family backend: gScoreCAM in v1, the M2IB information bottleneck in v2. The raw float map is
turned into a coarse mask (dense CRF, k-means, Otsu or a calibrated threshold), whose components
become box prompts for the segmenter.
"""

from __future__ import annotations

import numpy as np

from clipsam.config import MedClipSamConfig
from clipsam.models.image_text import DenseGrounding, ImageTextModel, SaliencyCapable
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import SegmentationResult
from clipsam.pipelines.common import embed_once, not_found, segment_boxes
from clipsam.pipelines.prompts import count_targets, prompt_ensemble, validate_prompt
from clipsam.pipelines.timing import StageTimer
from clipsam.postprocess.boxes import boxes_from_mask, expand_boxes
from clipsam.postprocess.coarse_mask import coarse_mask

GRADIENT_SALIENCY = {"v1": "gscorecam", "v2": "m2ib"}
# The built-in model's map is a calibrated probability; gradient maps are relative.
COARSE_FOR_NATIVE, COARSE_FOR_GRADIENT = "threshold", "crf"


class MedClipSamPipeline:
    """Saliency -> coarse mask -> boxes -> segmenter, for any image-text model."""

    name = "medclipsam"

    def __init__(
        self,
        segmenter: PromptableSegmenter,
        text_model: ImageTextModel,
        config: MedClipSamConfig | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.text_model = text_model
        self.config = config or MedClipSamConfig()
        self.saliency_method = self._saliency_method()

    def _saliency_method(self) -> str:
        wanted = self.config.saliency
        if wanted == "auto":
            if isinstance(self.text_model, DenseGrounding):
                return "native"
            wanted = GRADIENT_SALIENCY.get(self.config.version, "")
            if not wanted:
                raise ValueError(f"unknown MedCLIP-SAM version {self.config.version!r}; "
                                 "use 'v1' or 'v2'")
        if wanted == "native" and not isinstance(self.text_model, DenseGrounding):
            raise ValueError(f"text model {self.text_model.name} has no native saliency map; "
                             "choose gscorecam, gradcam or m2ib")
        if wanted != "native" and not isinstance(self.text_model, SaliencyCapable):
            raise ValueError(f"text model {self.text_model.name} cannot compute {wanted} "
                             "saliency (no gradient access)")
        return wanted

    def _coarse_method(self) -> str:
        if self.config.coarse != "auto":
            return self.config.coarse
        return COARSE_FOR_NATIVE if self.saliency_method == "native" else COARSE_FOR_GRADIENT

    def _saliency(self, image: np.ndarray, embedding: ImageEmbedding, prompt: str) -> np.ndarray:
        """The raw float saliency map at the original image size."""
        if self.saliency_method == "native":
            grid_map = self.text_model.similarity_map(embedding, prompt)
            return embedding.geometry.grid_to_original(grid_map)
        from clipsam.saliency import compute_saliency

        texts = prompt_ensemble(prompt, self.config.use_prompt_library)
        return compute_saliency(self.text_model, image, texts, method=self.saliency_method)

    def run(
        self,
        image: np.ndarray,
        prompt: str,
        embedding: ImageEmbedding | None = None,
        keep_intermediates: bool = False,
    ) -> SegmentationResult:
        prompt = validate_prompt(prompt)
        timer = StageTimer()
        embedding = embed_once(self.segmenter, image, embedding, timer)
        targets = count_targets(prompt)
        views: dict = {}
        if self.saliency_method == "native":
            with timer("presence"):
                present = self.text_model.is_present(embedding, prompt)
            if not present:
                return not_found(image.shape, prompt, self.name, timer, views)
        with timer("saliency"):
            saliency = self._saliency(image, embedding, prompt)
        keep = targets if self.config.keep == "auto" else _parse_keep(self.config.keep)
        with timer("coarse_mask"):
            coarse = coarse_mask(saliency, image, method=self._coarse_method(), keep=keep)
            boxes = boxes_from_mask(coarse, self.config.boxes)
            if self.config.box_margin:
                boxes = expand_boxes(boxes, coarse.shape, fraction=self.config.box_margin)
        if keep_intermediates:
            views = {"saliency": saliency, "coarse_mask": coarse, "boxes": boxes}
        if len(boxes) == 0:
            return not_found(image.shape, prompt, self.name, timer, views)
        mask, scores = segment_boxes(self.segmenter, embedding, boxes, timer,
                                     keep=targets if self.config.cleanup else None)
        return SegmentationResult(
            mask=mask, found=bool(mask.any()), boxes=boxes, scores=scores, prompt=prompt,
            method=self.name, timings=timer.total(), intermediates=views,
        )


def _parse_keep(keep: str) -> str | int:
    return int(keep) if keep.isdigit() else keep
