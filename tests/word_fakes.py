"""A tiny grounding model with designed words, on a stand-in segmenter with real features: for
the words-to-concepts and "every trained target" tests of every surface.

:class:`TableEncoder` gives chosen sentence vectors to the words the tests use (others get
hash-seeded random ones, nearly orthogonal to all): "breast tumours" lies near "breast tumour",
"tumours" as near to "breast tumour" as to "brain tumour" (ambiguous), "liver" at 0.45 from
"lungs" (below the cut: untrained).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from clipsam.api import Segmenter
from clipsam.config import RunConfig
from clipsam.models.grounding import GroundingHeads, GroundingModel, HeadsConfig, PresenceRule
from clipsam.models.grounding.words import WordRule
from clipsam.models.segmenter import ImageEmbedding
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from conftest import BoxFillingSegmenter

DIM = 24
HEADS = HeadsConfig(feature_dim=16, text_dim=DIM, hidden_dim=8, embed_dim=8, dilations=(1, 2))
CONCEPTS = ("brain tumour", "breast tumour", "lungs")
THRESHOLDS = {"breast tumour": 0.25, "brain tumour": 0.4, "lungs": 0.6}


def _unit(*parts: tuple[int, float]) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    for axis, weight in parts:
        v[axis] = weight
    return v / np.linalg.norm(v)


WORDS = {
    "breast tumour": _unit((0, 1)),
    "brain tumour": _unit((1, 1)),
    "lungs": _unit((2, 1)),
    "breast mass": _unit((0, 0.9), (6, 0.44)),
    "glioma": _unit((1, 0.9), (7, 0.44)),
    "lung fields": _unit((2, 0.9), (8, 0.44)),
    "breast tumours": _unit((0, 0.95), (3, 0.31)),  # 0.95 from "breast tumour"
    "tumours": _unit((0, 1), (1, 1), (4, 0.6)),  # 0.65 from both tumours: ambiguous
    "liver": _unit((5, 1), (2, 0.5)),  # 0.45 from "lungs": below the cut
}


class TableEncoder:
    """Designed sentence vectors for :data:`WORDS`, hash-seeded random ones for other texts;
    counts the texts it encodes."""

    dim = DIM

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts.extend(texts)
        out = []
        for text in texts:
            if text in WORDS:
                out.append(WORDS[text])
                continue
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=DIM)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32).reshape(len(texts), DIM)


def word_model(thresholds: dict[str, float] | None = None, seed: int = 0,
               points: dict[str, dict[str, float]] | None = None) -> GroundingModel:
    """Tiny random heads; three concepts with phrases, calibrated thresholds, lungs answered
    from the map, a box margin for brain tumour; a model-wide threshold of 0.99. With
    ``points`` (per concept: its balanced and precision thresholds) the model has every
    operating point (model-wide: 0.995 and 0.999)."""
    torch.manual_seed(seed)
    rule = PresenceRule(2, 0.99, 0.995, 0.999) if points else PresenceRule(2, 0.99)
    return GroundingModel(
        GroundingHeads(HEADS), rule, concept_points=points,
        concept_thresholds=thresholds or THRESHOLDS,
        text_encoder=TableEncoder(),
        concept_phrases={"breast tumour": ["breast tumour", "breast mass"],
                         "brain tumour": ["brain tumour", "glioma"],
                         "lungs": ["lungs", "lung fields"]},
        mask_sources={"lungs": "map", "breast tumour": "segmenter", "brain tumour": "segmenter"},
        box_margins={"brain tumour": 0.15}, word_rule=WordRule(0.62, 0.07))


class FeatureSegmenter(BoxFillingSegmenter):
    """Encodes an image into (1, 16, 16, 16) features seeded by its pixels (the grounding
    heads read them); each box decodes to its filled rectangle."""

    name = "feature-segmenter"

    def encode(self, image):
        base = super().encode(image)
        seed = int(hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:8], 16)
        features = np.random.default_rng(seed).normal(size=(1, 16, 16, 16)).astype(np.float32)
        return ImageEmbedding(features, base.geometry, self.name)

    def refine(self, embedding, boxes, low_res_logits):
        """A second round: the same filled rectangles (one per box and first-round mask)."""
        assert len(low_res_logits) == len(boxes)
        return self.predict(embedding, boxes=boxes)


def word_segmenter(config: RunConfig | None = None, model: GroundingModel | None = None,
                   encoder: FeatureSegmenter | None = None) -> Segmenter:
    """A Segmenter running the library's MedCLIP-SAM pipeline on :func:`word_model`."""
    config = config or RunConfig()
    model = model or word_model()
    encoder = encoder or FeatureSegmenter()
    return Segmenter(config, pipeline=MedClipSamPipeline(encoder, model, config.medclipsam,
                                                         config.presence),
                     encoder=encoder, text=model)
