"""Shared fixtures: the shipped examples and a stand-in segmenter. The real evaluation data and
LiteMedSAM segmenter come from the ``real_resources`` plugin (they skip locally when absent and
fail in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("real_resources",)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The HC18 examples shipped in the repository (images/, masks/, meta.csv)."""
    return REPO / "examples"


class BoxFillingSegmenter:
    """A stand-in segmenter: each box prompt yields its filled rectangle
    ``mask[y1:y2, x1:x2]`` (clipsam's box convention: the far corner is exclusive)."""

    name = "box-filling"
    supports_points = False

    def __init__(self) -> None:
        self.encoded = 0
        self.batches: list[int] = []

    def encode(self, image):
        import numpy as np

        from clipsam.models.segmenter import Geometry, ImageEmbedding

        self.encoded += 1
        h, w = image.shape[:2]
        scale = 64 / max(h, w)
        geometry = Geometry((h, w), (round(h * scale), round(w * scale)), 64)
        return ImageEmbedding(np.zeros((1, 1, 4, 4), np.float32), geometry, self.name)

    def predict(self, embedding, boxes=None, points=None, point_labels=None):
        import numpy as np

        from clipsam.models.segmenter import MaskPrediction

        h, w = embedding.geometry.original_size
        boxes = np.asarray(boxes, dtype=int).reshape(-1, 4)
        self.batches.append(len(boxes))
        masks = np.zeros((len(boxes), h, w), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
            mask[y0:y1, x0:x1] = True
        return MaskPrediction(masks, np.zeros((len(boxes), 16, 16), np.float32),
                              np.full(len(boxes), 0.9, np.float32))


@pytest.fixture()
def box_segmenter() -> BoxFillingSegmenter:
    return BoxFillingSegmenter()
