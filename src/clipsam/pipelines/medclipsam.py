"""MedCLIP-SAM (Koleilat et al., MICCAI 2024) and MedCLIP-SAMv2: text saliency -> coarse mask ->
box prompts -> SAM.

The saliency of the text over the image comes from the text model itself when it grounds text on
the segmenter's embedding (the built-in model: no extra image pass), or from gradients through a
CLIP-family backend: gScoreCAM in v1, the M2IB information bottleneck in v2. The raw float map is
turned into a coarse mask (dense CRF, k-means, Otsu or a calibrated threshold), whose components
become box prompts for the segmenter (one rule, :mod:`clipsam.postprocess.map_boxes`).

A grounding model with calibrated mask sources may answer a concept from its map instead of (or
together with) the segmenter: for targets a box cannot describe (a triangle against the image
edge, thin bones), the map at full resolution is the better mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsam.config import MedClipSamConfig
from clipsam.models.image_text import DenseGrounding, ImageTextModel, SaliencyCapable
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
from clipsam.pipelines.prompts import prompt_ensemble, validate_prompt
from clipsam.pipelines.timing import StageTimer
from clipsam.postprocess.boxes import expand_boxes, masks_to_boxes
from clipsam.postprocess.coarse_mask import CoarseMaskConfig, coarse_mask
from clipsam.postprocess.map_boxes import map_boxes

if TYPE_CHECKING:
    from clipsam.models.sam.adapter_runtime import PromptedDecoder

GRADIENT_SALIENCY = {"v1": "gscorecam", "v2": "m2ib"}
FLIPS = {"hflip": np.fliplr, "vflip": np.flipud}
"""Test-time flips of an image (H, W[, 3]) or a map (H, W); each is its own inverse."""
MASK_SOURCES = ("auto", "segmenter", "map", "union", "decoder")
# The built-in model's map is a calibrated probability; gradient maps are relative.
COARSE_FOR_NATIVE, COARSE_FOR_GRADIENT = "threshold", "crf"


@dataclass(frozen=True)
class MapPrompts:
    """What the map gives the decoder: (H, W) float ``saliency``, (H, W) bool ``coarse`` mask
    and the map's ``targets``, (N, 4) xyxy ``boxes`` in original pixels, the ``level`` the map
    was cut at (None for relative maps), the box ``margin`` and the concept's mask ``source``."""

    saliency: np.ndarray
    coarse: np.ndarray
    targets: np.ndarray
    boxes: np.ndarray
    level: float | None
    margin: float
    source: str


class MedClipSamPipeline:
    """Saliency -> coarse mask -> boxes -> segmenter, for any image-text model."""

    name = "medclipsam"

    def __init__(
        self,
        segmenter: PromptableSegmenter,
        text_model: ImageTextModel,
        config: MedClipSamConfig | None = None,
        presence: str = "recall",
    ) -> None:
        self.segmenter = segmenter
        self.text_model = text_model
        self.config = config or MedClipSamConfig()
        self.saliency_method = self._saliency_method()
        unknown = sorted(set(self.config.tta) - set(FLIPS))
        if unknown:
            raise ValueError(f"unknown test-time flip {unknown[0]!r}; use {', '.join(FLIPS)}")
        if self.config.tta and self.saliency_method != "native":
            raise ValueError("test-time flips (tta) average the text model's native map; "
                             f"{self.saliency_method} saliency has none")
        check_presence_point(text_model, presence)
        self.presence = presence

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

    def _averaged_over_flips(self, saliency: np.ndarray, image: np.ndarray,
                             prompt: str) -> np.ndarray:
        """The (H, W) native map averaged with those of the configured flips of the image
        (each encoded once, its map flipped back)."""
        maps = [saliency]
        for name in self.config.tta:
            flip = FLIPS[name]
            flipped = self.segmenter.encode(np.ascontiguousarray(flip(image)))
            grid_map = self.text_model.similarity_map(flipped, prompt)
            maps.append(flip(flipped.geometry.grid_to_original(grid_map)))
        return np.mean(maps, axis=0)

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

    def _mask_source(self, prompt: str) -> str:
        if self.config.mask_source not in MASK_SOURCES:
            raise ValueError(f"unknown mask source {self.config.mask_source!r}; use one of "
                             f"{', '.join(MASK_SOURCES)}")
        if self.config.mask_source != "auto":
            return self.config.mask_source
        calibrated = (self._calibrated("mask_source_for", prompt)
                      if isinstance(self.text_model, DenseGrounding) else None)
        return "segmenter" if calibrated is None else calibrated

    def _calibrated(self, lookup: str, prompt: str) -> Any:
        """The text model's calibrated setting for the prompt's concept (its method ``lookup``,
        e.g. ``map_level_for``), or None when it has none or calibrates nothing."""
        method = getattr(self.text_model, lookup, None)
        return method(prompt) if method is not None else None

    def _map_level(self, prompt: str) -> float:
        """Where a calibrated map is cut: the config's level, else the grounding model's
        calibrated one for the concept, else the default."""
        if self.config.map_level is not None:
            if not 0 < self.config.map_level < 1:
                raise ValueError(f"map_level must lie between 0 and 1, got "
                                 f"{self.config.map_level}")
            return self.config.map_level
        calibrated = self._calibrated("map_level_for", prompt)
        return CoarseMaskConfig.level if calibrated is None else calibrated

    def _box_margin(self, prompt: str) -> float:
        """How much each box prompt grows per side: the config's margin, else the grounding
        model's calibrated one for the concept, else 0."""
        if self.config.box_margin is not None:
            if not 0 <= self.config.box_margin < 1:
                raise ValueError(f"box_margin must lie in [0, 1), got {self.config.box_margin}")
            return self.config.box_margin
        calibrated = self._calibrated("box_margin_for", prompt)
        return 0.0 if calibrated is None else calibrated

    def _coarse(self, saliency: np.ndarray, image: np.ndarray,
                prompt: str) -> tuple[np.ndarray, float | None]:
        """The coarse mask and, for calibrated maps, the level used (else None): ``level``,
        or half the peak when the map never reaches ``level``."""
        method = self._coarse_method()
        level = self._map_level(prompt)
        if method == "threshold" and 0 < float(saliency.max()) < level:
            level = 0.5 * float(saliency.max())
        config = CoarseMaskConfig(method=method, keep="all", level=level)
        return (coarse_mask(saliency, image, config=config),
                level if method == "threshold" else None)

    def map_prompts(self, image: np.ndarray, embedding: ImageEmbedding, text: str,
                    timer: StageTimer | None = None) -> MapPrompts:
        """The saliency of ``text`` (the concept the prompt reaches), its coarse mask, the
        map's targets and the box prompts cut from them (grown by the concept's margin), with
        the concept's mask source; one rule for the pipeline and for training on its boxes."""
        timer = timer or StageTimer()
        with timer("saliency"):
            saliency = self._saliency(image, embedding, text)
        if self.config.tta:
            with timer("tta"):
                saliency = self._averaged_over_flips(saliency, image, text)
        with timer("coarse_mask"):
            coarse, level = self._coarse(saliency, image, text)
            if coarse.shape != saliency.shape:
                from skimage.transform import resize

                saliency = resize(saliency, coarse.shape, order=1, anti_aliasing=False)
            targets, boxes = map_boxes(coarse, saliency, self.config.box_rule)
        source = self._mask_source(text)
        margin = self._box_margin(text) if source != "map" else 0.0
        if margin:
            boxes = expand_boxes(boxes, coarse.shape, fraction=margin)
        return MapPrompts(saliency, coarse, targets, boxes, level, margin, source)

    def _decoder(self, source: str, embedding: ImageEmbedding, text: str,
                 timer: StageTimer) -> PromptableSegmenter | PromptedDecoder:
        """What decodes the box prompts: the segmenter, or for the ``decoder`` source the
        grounding model's decoder adapter bound to the concept's map and text vector."""
        if source != "decoder":
            return self.segmenter
        folder = getattr(self.text_model, "source_dir", None)
        if not isinstance(self.text_model, DenseGrounding) or folder is None:
            raise ValueError(f"mask source 'decoder' needs a grounding model folder with a "
                             f"decoder adapter; {self.text_model.name} has none")
        from clipsam.models.sam.adapter_runtime import PromptedDecoder, adapted_decoder

        with timer("decode"):
            decoder = adapted_decoder(folder)
            logits = self.text_model.logit_map(embedding, text)
            vector = self.text_model.text_vector(text)
        return PromptedDecoder(decoder, logits, vector)

    def box_decoder(self, prompt: str) -> BoxDecoder | None:
        """How box prompts from another slice of a volume are decoded for ``prompt``: as the
        segmenter decodes this pipeline's own boxes; None when the concept's mask comes from the
        map alone."""
        if self._mask_source(prompt) == "map":
            return None
        return box_decoder(self.segmenter, self.config.cleanup)

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
        views: dict = {}
        text, reached = prompt, {}  # what is grounded: the concept the prompt reaches
        if self.saliency_method == "native":
            with timer("presence"):
                text, present, reached = ground_prompt(self.text_model, embedding, prompt,
                                                       self.presence)
            if not present:
                return replace(not_found(image.shape, prompt, self.name, timer, views),
                               decisions=reached)
        prompts = self.map_prompts(image, embedding, text, timer)
        source, boxes, targets = prompts.source, prompts.boxes, prompts.targets
        decisions = {**reached, "mask_source": source, "coarse_level": prompts.level,
                     "box_margin": prompts.margin}
        if self.config.mask_prompt:  # recorded: only the segmenter's own decoder takes masks
            decisions["mask_prompt"] = source in ("segmenter", "union")
        if keep_intermediates:
            views = {"saliency": prompts.saliency, "coarse_mask": prompts.coarse,
                     "map_mask": targets, "boxes": boxes, **decisions}
        if len(boxes) == 0:
            return replace(not_found(image.shape, prompt, self.name, timer, views),
                           decisions=decisions)
        if source == "map":
            return PipelineResult(
                mask=targets, found=True, boxes=boxes, scores=np.ones(len(boxes), np.float32),
                prompt=prompt, method=self.name, timings=timer.total(), intermediates=views,
                decisions=decisions)
        decoder = self._decoder(source, embedding, text, timer)
        # the adapter learned the union of its boxes' raw masks: no per-box largest component
        cleanup = self.config.cleanup and source != "decoder"
        mask, prediction = segment_boxes(decoder, embedding, boxes, timer, cleanup)
        if self.config.refine and mask.any():
            tight = masks_to_boxes(prediction.masks)
            tight = tight[(tight[:, 2] > tight[:, 0]) & (tight[:, 3] > tight[:, 1])]
            if len(tight):
                boxes = tight
                mask, prediction = segment_boxes(decoder, embedding, boxes, timer, cleanup)
        if decisions.get("mask_prompt") and mask.any():
            mask, prediction = segment_boxes(decoder, embedding, boxes, timer, cleanup,
                                             first=prediction)
        scores = np.asarray(prediction.scores, np.float32)
        if source == "union":
            mask = mask | targets
        return PipelineResult(
            mask=mask, found=bool(mask.any()), boxes=boxes, scores=scores, prompt=prompt,
            method=self.name, timings=timer.total(), intermediates=views, decisions=decisions,
        )
