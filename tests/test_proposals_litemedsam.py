"""Segment-everything proposals with the real LiteMedSAM on a real fetal-head ultrasound image."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.errors import ClipsamError
from clipsam.proposals.generate import BOX_PROMPT_DEFAULTS, generate_proposals

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hc18"
IMAGE_ID = "001_HC"


@pytest.fixture(scope="module")
def litemedsam():
    try:
        from clipsam.models.sam import load_litemedsam

        return load_litemedsam(runtime="torch")
    except (ClipsamError, ImportError, FileNotFoundError) as error:
        pytest.skip(f"LiteMedSAM unavailable: {error}")


@pytest.mark.slow
def test_proposals_contain_the_fetal_head(litemedsam):
    image_path = DATA / "images" / f"{IMAGE_ID}.png"
    if not image_path.exists():
        pytest.skip(f"evaluation data absent: {image_path}")
    image = np.asarray(Image.open(image_path))
    truth = np.asarray(Image.open(DATA / "masks" / f"{IMAGE_ID}.png")) > 127
    embedding = litemedsam.encode(image)
    start = time.perf_counter()
    proposals = generate_proposals(litemedsam, embedding)
    seconds = time.perf_counter() - start
    print(f"\nproposal stage: {len(proposals)} masks in {seconds:.2f} s")
    assert 0 < len(proposals) <= BOX_PROMPT_DEFAULTS.feature_boxes.max_boxes
    assert proposals.masks.shape[1:] == truth.shape
    assert (proposals.scores >= BOX_PROMPT_DEFAULTS.pred_iou_threshold).all()
    assert (proposals.stability >= BOX_PROMPT_DEFAULTS.stability_threshold).all()
    ious = [(mask & truth).sum() / (mask | truth).sum() for mask in proposals.masks]
    assert max(ious) > 0.5
