"""SaLIP end to end on a synthetic chest with a box-only fake segmenter: feature-box proposals
decoded in one segmenter call, retrieval by the text map (or by crops), one final decode."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.config import SalipConfig
from clipsam.eval.metrics import dice
from clipsam.models.grounding.grid import mask_to_grid
from clipsam.models.segmenter import Geometry, ImageEmbedding, MaskPrediction
from clipsam.pipelines.salip import SalipPipeline
from clipsam.proposals.generate import BOX_PROMPT_DEFAULTS

H, W = 128, 160
GRID = 16


def ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def chest() -> dict[str, np.ndarray]:
    """Two lungs inside a body, a bright marker outside it: the objects of the fake image."""
    body = ellipse(70, 70, 55, 62)
    left, right = ellipse(68, 44, 34, 16), ellipse(68, 96, 34, 16)
    return {"left lung": left, "right lung": right, "body": body & ~left & ~right,
            "marker": ellipse(24, 140, 18, 18) & ~body}


def image_of(objects: dict[str, np.ndarray]) -> np.ndarray:
    image = np.zeros((H, W), np.float32)
    for value, name in ((0.5, "body"), (0.2, "left lung"), (0.2, "right lung"), (1.0, "marker")):
        image[objects[name]] = value
    return image


class SceneSegmenter:
    """Box-only: a box gives the largest scene object lying (90 %) inside it (``pick``), else
    nothing. Its embedding holds a one-hot code of the object under each grid cell's centre.
    Records the number of boxes of every ``predict`` call."""

    name = "scene"
    supports_points = False
    pick = staticmethod(max)  # of the objects inside a box, by area

    def __init__(self, objects: dict[str, np.ndarray]) -> None:
        self.objects = list(objects.values())
        self.calls: list[int] = []

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        scale = 64 / max(H, W)
        geometry = Geometry((H, W), (round(H * scale), round(W * scale)), 64)
        centres_y = np.minimum(((np.arange(GRID) + 0.5) * 4 / scale).astype(int), H - 1)
        centres_x = np.minimum(((np.arange(GRID) + 0.5) * 4 / scale).astype(int), W - 1)
        features = np.zeros((1, len(self.objects) + 1, GRID, GRID), np.float32)
        features[0, 0] = 1.0
        for index, mask in enumerate(self.objects):
            under = mask[centres_y][:, centres_x]
            features[0, :, under] = 0.0
            features[0, index + 1, under] = 1.0
        features += np.random.default_rng(0).normal(0, 0.01, features.shape).astype(np.float32)
        return ImageEmbedding(features, geometry, self.name)

    def predict(self, embedding, boxes=None, points=None, point_labels=None) -> MaskPrediction:
        self.calls.append(len(boxes))
        masks = []
        for x1, y1, x2, y2 in np.asarray(boxes).round().astype(int):
            inside = [m for m in self.objects if m[y1:y2, x1:x2].sum() >= 0.9 * m.sum()]
            masks.append(self.pick(inside, key=np.sum) if inside else np.zeros((H, W), bool))
        masks = np.array(masks, bool).reshape(-1, H, W)
        logits = np.where(masks, 10.0, -10.0).astype(np.float32)[:, ::2, ::2]
        return MaskPrediction(masks, logits, np.full(len(masks), 0.95, np.float32))


class MapGrounding:
    """Dense grounding whose map is the cell coverage of a known target; counts its maps."""

    name = "map-grounding"

    def __init__(self, target: np.ndarray) -> None:
        self.target = target
        self.maps = 0

    def encode_text(self, texts):
        return np.ones((len(texts), 2), np.float32) / np.sqrt(2)

    def encode_images(self, images):
        return np.ones((len(images), 2), np.float32) / np.sqrt(2)

    def similarity_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        self.maps += 1
        return np.where(mask_to_grid(self.target, embedding.geometry, GRID) > 0.5, 0.95, 0.05)

    def region_scores(self, embedding, masks, texts):
        return np.array([dice(m, self.target) for m in masks], np.float32)

    def is_present(self, embedding, text):
        return True


class MarkerClip:
    """A CLIP-like model whose crops look like the text only where they show the bright marker:
    the crop's share of bright pixels."""

    name = "marker-clip"

    def encode_text(self, texts):
        return np.tile(np.array([[1.0, 0.0]], np.float32), (len(texts), 1))

    def encode_images(self, images):
        bright = np.array([float(np.mean(np.asarray(c) > 0.9)) for c in images])
        vectors = np.stack([bright, 1.0 - bright], axis=1).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_union_rule_keeps_both_lungs_from_one_proposal_call_and_one_final_call():
    objects = chest()
    lungs = objects["left lung"] | objects["right lung"]
    segmenter, grounding = SceneSegmenter(objects), MapGrounding(lungs)
    result = SalipPipeline(segmenter, grounding).run(
        image_of(objects), "left and right lungs", keep_intermediates=True)
    chosen = result.intermediates["proposals"].masks[result.intermediates["chosen"]]
    assert len(chosen) == 2
    assert all(any(np.array_equal(mask, objects[name]) for mask in chosen)
               for name in ("left lung", "right lung"))
    assert dice(result.mask, lungs) > 0.99
    # every proposal box in one segmenter call, then the two retrieved boxes in one more
    assert len(segmenter.calls) == 2
    margins = len(BOX_PROMPT_DEFAULTS.box_margins)
    assert 2 <= segmenter.calls[0] <= BOX_PROMPT_DEFAULTS.feature_boxes.max_boxes * margins
    assert segmenter.calls[1] == 2
    assert grounding.maps == 1  # the prompt's map, read once


class SmallestInside(SceneSegmenter):
    """A box gives the smallest scene object lying (90 %) inside it."""

    pick = staticmethod(min)


def test_a_proposal_of_two_parts_keeps_both_in_the_final_decode():
    objects = chest()
    lungs = objects.pop("left lung") | objects.pop("right lung")
    objects = {"lungs": lungs, **objects}  # one object of two parts
    result = SalipPipeline(SmallestInside(objects), MapGrounding(lungs)).run(
        image_of({"left lung": lungs, "right lung": lungs, **objects}), "lungs",
        keep_intermediates=True)
    chosen = result.intermediates["proposals"].masks[result.intermediates["chosen"]]
    assert len(chosen) == 1 and np.array_equal(chosen[0], lungs)
    assert dice(result.mask, lungs) > 0.99  # not cut to its largest part


def test_a_part_of_a_kept_target_is_not_added():
    objects = chest()
    target = objects["left lung"]
    result = SalipPipeline(SceneSegmenter(objects), MapGrounding(target)).run(
        image_of(objects), "left lung", keep_intermediates=True)
    assert len(result.intermediates["chosen"]) == 1
    assert dice(result.mask, target) > 0.99


@pytest.mark.parametrize("crop", ["masked", "box", "enlarged"])
def test_clip_backend_scores_proposal_crops(crop):
    objects = chest()
    segmenter = SceneSegmenter(objects)
    result = SalipPipeline(segmenter, MarkerClip(), SalipConfig(crop=crop)).run(
        image_of(objects), "the bright marker", keep_intermediates=True)
    assert dice(result.mask, objects["marker"]) > 0.99
    assert len(result.intermediates["proposals"]) > 1
    assert len(segmenter.calls) == 2 and segmenter.calls[1] == 1


def test_boxes_off_the_map_are_not_decoded_and_the_answer_is_the_same():
    objects = chest()
    target = objects["marker"]
    results, calls = [], []
    for share in (0.0, 0.02):
        segmenter = SceneSegmenter(objects)
        results.append(SalipPipeline(segmenter, MapGrounding(target),
                                     SalipConfig(min_map_share=share)).run(
            image_of(objects), "the bright marker"))
        calls.append(segmenter.calls[0])
    assert calls[1] < calls[0]  # the lung and body boxes hold none of the map
    assert np.array_equal(results[0].mask, results[1].mask)
    assert dice(results[1].mask, target) > 0.99
