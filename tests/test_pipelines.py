"""The cascades on a synthetic scene with fake models whose behaviour is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from clipsam.config import MedClipSamConfig, SalipConfig
from clipsam.errors import InputError
from clipsam.models.image_text import DenseGrounding, ImageTextModel
from clipsam.models.segmenter import Geometry, ImageEmbedding, MaskPrediction
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.pipelines.salip import SalipPipeline
from clipsam.pipelines.unprompted import UnpromptedPipeline, WholeImageBoxPipeline

H, W = 120, 160


def disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


class FakeSegmenter:
    """Like SAM on a clean scene: a box gives the whole bright object that fills most of it.
    Counts its calls."""

    name = "fake"
    supports_points = False

    def __init__(self) -> None:
        self.encodes = 0
        self.decoded_boxes = 0

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.encodes += 1
        h, w = image.shape[:2]
        scale = 64 / max(h, w)
        geometry = Geometry((h, w), (round(h * scale), round(w * scale)), 64)
        # features: the image's brightness on a 16 x 16 grid over the padded 64 x 64 input
        rh, rw = geometry.resized_size
        rows = np.minimum((np.arange(16) * 4 + 2) * h / rh, h - 1).astype(int)
        cols = np.minimum((np.arange(16) * 4 + 2) * w / rw, w - 1).astype(int)
        grid = image[rows][:, cols].astype(np.float32)
        grid[(np.arange(16) * 4 + 2) >= rh] = 0
        grid[:, (np.arange(16) * 4 + 2) >= rw] = 0
        features = np.stack([grid, 1 - grid, grid**2, np.ones_like(grid)])[None]
        return ImageEmbedding(features, geometry, self.name, {"image": image})

    def predict(self, embedding, boxes=None, points=None, point_labels=None) -> MaskPrediction:
        labels, _ = ndimage.label(embedding.extras["image"] > 0.5)
        masks = []
        for x1, y1, x2, y2 in np.asarray(boxes, int):
            counts = np.bincount(labels[y1:y2, x1:x2].ravel(), minlength=labels.max() + 1)
            counts[0] = 0
            masks.append(labels == counts.argmax() if counts.any() else labels < 0)
        self.decoded_boxes += len(masks)
        masks = np.array(masks, bool).reshape(-1, H, W)
        logits = np.where(masks, 20.0, -20.0).astype(np.float32)
        return MaskPrediction(masks, logits, np.ones(len(masks), np.float32))


class FakeGrounding:
    """Dense grounding that 'sees' the target given at construction."""

    name = "fake-grounding"

    def __init__(self, target: np.ndarray, present: bool = True) -> None:
        self.target, self.present = target, present

    def encode_text(self, texts):
        return np.ones((len(texts), 2), np.float32) / np.sqrt(2)

    def encode_images(self, images):
        return np.ones((len(images), 2), np.float32) / np.sqrt(2)

    def similarity_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        geometry = embedding.geometry
        h, w = geometry.resized_size
        grid = np.zeros((16, 16), np.float32)
        rows = (np.arange(16) * 4 + 2) * H / h
        cols = (np.arange(16) * 4 + 2) * W / w
        inside_r = rows < H
        inside_c = cols < W
        sub = self.target[np.clip(rows, 0, H - 1).astype(int)][:, np.clip(cols, 0, W - 1)
                                                                .astype(int)]
        grid[:] = np.where(inside_r[:, None] & inside_c[None, :] & sub, 0.95, 0.05)
        return grid

    def region_scores(self, embedding, masks, texts):
        return np.array([(m & self.target).sum() / max((m | self.target).sum(), 1)
                         for m in masks], np.float32)

    def is_present(self, embedding, text):
        return self.present


class BrightnessClip:
    """A CLIP-like model whose image vector says how bright a crop is; the text wants bright."""

    name = "brightness-clip"

    def encode_text(self, texts):
        return np.tile(np.array([[1.0, 0.0]], np.float32), (len(texts), 1))

    def encode_images(self, images):
        out = []
        for crop in images:
            b = float(np.mean(crop))
            v = np.array([b, 1.0 - b], np.float32)
            out.append(v / np.linalg.norm(v))
        return np.array(out)


@pytest.fixture
def scene():
    target = disc(60, 50, 22)
    image = np.where(target, 1.0, 0.0).astype(np.float32)
    dim = disc(60, 120, 18)
    image[dim] = 0.6  # a second, dimmer object
    return image, target


def test_fakes_match_the_interfaces():
    assert isinstance(FakeGrounding(np.zeros((H, W), bool)), DenseGrounding)
    assert isinstance(BrightnessClip(), ImageTextModel)


def test_medclipsam_native_segments_the_grounded_target_from_one_encode(scene):
    image, target = scene
    segmenter = FakeSegmenter()
    pipeline = MedClipSamPipeline(segmenter, FakeGrounding(target))
    result = pipeline.run(image, "fetal head", keep_intermediates=True)
    assert result.found
    assert dice(result.mask, target) > 0.95
    assert len(result.boxes) == 1
    assert segmenter.encodes == 1
    assert {"encode", "saliency", "decode", "total"} <= set(result.timings)
    assert result.intermediates["saliency"].shape == (H, W)


def test_medclipsam_reuses_a_given_embedding(scene):
    image, target = scene
    segmenter = FakeSegmenter()
    embedding = segmenter.encode(image)
    MedClipSamPipeline(segmenter, FakeGrounding(target)).run(image, "x", embedding=embedding)
    assert segmenter.encodes == 1


def test_medclipsam_absent_target_gives_empty_mask_without_decoding(scene):
    image, target = scene
    segmenter = FakeSegmenter()
    result = MedClipSamPipeline(segmenter, FakeGrounding(target, present=False)).run(
        image, "polyp")
    assert not result.found
    assert not result.mask.any() and result.mask.shape == (H, W)
    assert segmenter.decoded_boxes == 0


def test_medclipsam_two_named_targets_get_one_box_each():
    left, right = disc(60, 40, 20), disc(60, 120, 20)
    target = left | right
    image = target.astype(np.float32)
    result = MedClipSamPipeline(FakeSegmenter(), FakeGrounding(target)).run(
        image, "left and right lungs")
    assert len(result.boxes) == 2
    assert dice(result.mask, target) > 0.95


def test_medclipsam_rejects_gradient_saliency_for_a_model_without_gradients(scene):
    with pytest.raises(ValueError, match="gscorecam"):
        MedClipSamPipeline(FakeSegmenter(), BrightnessClip(),
                           MedClipSamConfig(saliency="gscorecam"))


def test_empty_prompt_is_refused(scene):
    image, target = scene
    with pytest.raises(InputError, match="empty prompt"):
        MedClipSamPipeline(FakeSegmenter(), FakeGrounding(target)).run(image, "  ")


def test_salip_retrieves_the_proposal_the_text_model_scores_highest(scene):
    image, target = scene
    segmenter = FakeSegmenter()
    result = SalipPipeline(segmenter, FakeGrounding(target)).run(
        image, "fetal head", keep_intermediates=True)
    assert result.found
    assert dice(result.mask, target) > 0.9
    assert segmenter.encodes == 1
    assert len(result.intermediates["proposals"]) > 1


def test_salip_with_a_clip_backend_scores_crops(scene):
    image, target = scene
    for crop in ("masked", "box", "enlarged"):
        result = SalipPipeline(FakeSegmenter(), BrightnessClip(), SalipConfig(crop=crop)).run(
            image, "the bright disc")
        assert dice(result.mask, target) > 0.9, crop


def test_salip_absent_target_gives_empty_mask(scene):
    image, target = scene
    result = SalipPipeline(FakeSegmenter(), FakeGrounding(target, present=False)).run(
        image, "polyp")
    assert not result.found and not result.mask.any()


def test_unprompted_returns_one_proposal_and_whole_box_one_full_box(scene):
    image, target = scene
    result = UnpromptedPipeline(FakeSegmenter()).run(image)
    assert result.mask.shape == (H, W) and result.mask.any()
    assert len(result.boxes) == 1
    whole = WholeImageBoxPipeline(FakeSegmenter()).run(image)
    np.testing.assert_array_equal(whole.boxes, [[0, 0, W, H]])
    np.testing.assert_array_equal(whole.mask, target)


def test_proposals_default_to_the_segmenters_own_settings():
    from clipsam.proposals.generate import BOX_PROMPT_DEFAULTS, ProposalConfig

    assert SalipPipeline(FakeSegmenter(), BrightnessClip()).proposal_config == BOX_PROMPT_DEFAULTS
    assert UnpromptedPipeline(FakeSegmenter()).proposal_config == BOX_PROMPT_DEFAULTS
    chosen = ProposalConfig(pred_iou_threshold=0.5)
    assert SalipPipeline(FakeSegmenter(), BrightnessClip(),
                         SalipConfig(proposals=chosen)).proposal_config == chosen
