"""Shared fixtures: the evaluation data, the shipped examples and the real LiteMedSAM segmenter."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (the evaluation sets); skips the test when it is absent."""
    root = (REPO.parent / "shared" / "data").resolve()
    if not root.is_dir():
        pytest.skip(f"evaluation data not found at {root}")
    return root


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The HC18 examples shipped in the repository (images/, masks/, meta.csv)."""
    return REPO / "examples"


@pytest.fixture(scope="session")
def litemedsam():
    """The real LiteMedSAM segmenter; skips when its code or weights are not available."""
    from clipsam.errors import WeightsError

    try:
        from clipsam.models.sam import load_litemedsam
    except ImportError as exc:
        pytest.skip(f"LiteMedSAM loader not available: {exc}")
    try:
        return load_litemedsam()
    except WeightsError as exc:
        pytest.skip(f"LiteMedSAM weights not available: {exc}")


class BoxFillingSegmenter:
    """A stand-in segmenter: each box prompt yields its filled rectangle (inclusive corners)."""

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
            mask[y0:y1 + 1, x0:x1 + 1] = True
        return MaskPrediction(masks, np.zeros((len(boxes), 16, 16), np.float32),
                              np.full(len(boxes), 0.9, np.float32))


@pytest.fixture()
def box_segmenter() -> BoxFillingSegmenter:
    return BoxFillingSegmenter()
