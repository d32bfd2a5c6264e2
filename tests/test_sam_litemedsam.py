"""The real LiteMedSAM weights on real images with expert masks (skipped without the data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.eval.metrics import dice
from clipsam.io.masks import read_mask
from clipsam.models.sam import load_litemedsam
from clipsam.models.sam.checkpoints import litemedsam_checkpoint, read_state_dict
from clipsam.models.sam.factory import LITEMEDSAM
from clipsam.models.sam.model import SamModel
from clipsam.models.segmenter import PromptableSegmenter
from clipsam.postprocess.boxes import mask_to_box


def read_pair(root: Path, dataset: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    images = sorted((root / dataset / "images").glob("*.png"))
    path = images[index]
    return np.asarray(Image.open(path)), read_mask(root / dataset / "masks" / path.name)


def box_around(mask: np.ndarray) -> np.ndarray:
    """(1, 4) the tight box of ``mask`` in clipsam's convention (exclusive far corner)."""
    return mask_to_box(mask)[None]


@pytest.fixture(scope="module")
def torch_sam() -> PromptableSegmenter:
    return load_litemedsam(runtime="torch")


@pytest.fixture(scope="module")
def onnx_sam() -> PromptableSegmenter:
    return load_litemedsam(runtime="onnx")


def test_checkpoint_fits_every_key() -> None:
    state = read_state_dict(litemedsam_checkpoint())
    assert set(SamModel(LITEMEDSAM).state_dict()) == set(state)


def test_litemedsam_is_a_box_only_promptable_segmenter(torch_sam) -> None:
    assert isinstance(torch_sam, PromptableSegmenter)
    assert torch_sam.supports_points is False
    assert load_litemedsam().runtime.name == "onnx"  # "auto" picks the faster runtime


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "index"),
                         [("hc18", 0), ("hc18", 7), ("cxr_lungs", 0), ("cxr_lungs", 7)])
def test_ground_truth_box_gives_expert_mask(shared_data, onnx_sam, dataset, index) -> None:
    image, truth = read_pair(shared_data, dataset, index)
    embedding = onnx_sam.encode(image)
    assert embedding.features.shape == (1, 256, 64, 64)
    pred = onnx_sam.predict(embedding, boxes=box_around(truth))
    assert pred.masks.shape == (1, *truth.shape)
    assert pred.low_res_logits.shape == (1, 256, 256)
    assert dice(pred.masks[0], truth) > 0.8


@pytest.mark.slow
def test_torch_and_onnx_agree_on_a_real_image(shared_data, torch_sam, onnx_sam) -> None:
    image, truth = read_pair(shared_data, "hc18", 3)
    boxes = np.concatenate([box_around(truth), [[0, 0, image.shape[1] // 2, image.shape[0]]]])
    want = torch_sam.predict(torch_sam.encode(image), boxes=boxes)
    got = onnx_sam.predict(onnx_sam.encode(image), boxes=boxes)
    assert np.abs(got.low_res_logits - want.low_res_logits).max() < 1e-2
    assert np.abs(got.scores - want.scores).max() < 1e-3
    assert (got.masks != want.masks).sum(axis=(1, 2)).max() <= 5


@pytest.mark.slow
def test_wide_image_maps_back_without_squashing(shared_data, onnx_sam) -> None:
    """A lung X-ray beside an equally wide black strip: the box on the left half must give the
    lungs there, at the right place and size, and nothing in the right half."""
    image, truth = read_pair(shared_data, "cxr_lungs", 2)
    width = image.shape[1]
    wide = np.concatenate([image, np.zeros_like(image)], axis=1)
    wide_truth = np.concatenate([truth, np.zeros_like(truth)], axis=1)
    box = box_around(truth)
    pred = onnx_sam.predict(onnx_sam.encode(wide), boxes=box)
    mask = pred.masks[0]
    assert mask.shape == wide.shape[:2]
    assert not mask[:, width:].any()
    x1, y1, x2, y2 = box[0].astype(int)
    outside = mask.copy()
    outside[max(0, y1 - 2): y2 + 3, max(0, x1 - 2): x2 + 3] = False
    assert not outside.any()
    assert dice(mask, wide_truth) > 0.8
