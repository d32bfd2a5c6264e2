"""Segment-everything proposals with the real LiteMedSAM on a real fetal-head ultrasound image."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from clipsam.errors import WeightsError
from clipsam.io.masks import read_mask
from clipsam.proposals.generate import BOX_PROMPT_DEFAULTS, generate_proposals
from real_resources import skip_missing

IMAGE_ID = "001_HC"


@pytest.fixture(scope="module")
def litemedsam():
    from clipsam.models.sam import load_litemedsam

    try:
        return load_litemedsam(runtime="torch")
    except WeightsError as error:
        skip_missing(f"LiteMedSAM weights not available: {error}")


@pytest.mark.slow
def test_proposals_contain_the_fetal_head(litemedsam, shared_data):
    data = shared_data / "hc18"
    image = np.asarray(Image.open(data / "images" / f"{IMAGE_ID}.png"))
    truth = read_mask(data / "masks" / f"{IMAGE_ID}.png")
    embedding = litemedsam.encode(image)
    start = time.perf_counter()
    proposals = generate_proposals(litemedsam, embedding)
    seconds = time.perf_counter() - start
    print(f"\nproposal stage: {len(proposals)} masks in {seconds:.2f} s")
    margins = len(BOX_PROMPT_DEFAULTS.box_margins)
    assert 0 < len(proposals) <= BOX_PROMPT_DEFAULTS.feature_boxes.max_boxes * margins
    assert proposals.masks.shape[1:] == truth.shape
    assert (proposals.scores >= BOX_PROMPT_DEFAULTS.pred_iou_threshold).all()
    assert (proposals.stability >= BOX_PROMPT_DEFAULTS.stability_threshold).all()
    ious = [(mask & truth).sum() / (mask | truth).sum() for mask in proposals.masks]
    print(f"best IoU with the head: {max(ious):.3f}")
    assert max(ious) > 0.5
