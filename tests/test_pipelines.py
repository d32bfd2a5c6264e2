"""The cascades on a synthetic scene with fake models whose behaviour is known exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from clipsam.config import MedClipSamConfig, SalipConfig
from clipsam.errors import InputError
from clipsam.eval.metrics import dice
from clipsam.models.image_text import DenseGrounding, ImageTextModel
from clipsam.models.segmenter import Geometry, ImageEmbedding, MaskPrediction
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.pipelines.salip import SalipPipeline
from clipsam.pipelines.unprompted import UnpromptedPipeline, WholeImageBoxPipeline

H, W = 120, 160


def disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


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
    # every box decoded (none left out for lying off the map), so there is a choice to make
    result = SalipPipeline(segmenter, FakeGrounding(target), SalipConfig(min_map_share=0.0)).run(
        image, "fetal head", keep_intermediates=True)
    assert result.found
    assert dice(result.mask, target) > 0.9
    assert segmenter.encodes == 1
    assert len(result.intermediates["proposals"]) > 1
    pruned = SalipPipeline(FakeSegmenter(), FakeGrounding(target)).run(image, "fetal head")
    assert np.array_equal(pruned.mask, result.mask)


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
    from clipsam.config import ProposalConfig
    from clipsam.proposals.generate import BOX_PROMPT_DEFAULTS

    assert SalipPipeline(FakeSegmenter(), BrightnessClip()).proposal_config == BOX_PROMPT_DEFAULTS
    assert UnpromptedPipeline(FakeSegmenter()).proposal_config == BOX_PROMPT_DEFAULTS
    chosen = ProposalConfig(pred_iou_threshold=0.5)
    assert SalipPipeline(FakeSegmenter(), BrightnessClip(),
                         SalipConfig(proposals=chosen)).proposal_config == chosen


# --- MedCLIP-SAM with a calibrated map: boxes from the map, mask sources -----------------------


class GridMapGrounding:
    """Dense grounding with a fixed 16 x 16 probability map over a 64 x 64 image (4 pixels a
    cell) and, optionally, a calibrated mask source per prompt."""

    name = "grid-map"

    def __init__(self, grid: np.ndarray, present: bool = True, source: str = "segmenter"):
        self.grid, self.present, self.source = grid.astype(np.float32), present, source

    def encode_text(self, texts):
        return np.ones((len(texts), 2), np.float32) / np.sqrt(2)

    def encode_images(self, images):
        return np.ones((len(images), 2), np.float32) / np.sqrt(2)

    def similarity_map(self, embedding, text):
        return self.grid

    def region_scores(self, embedding, masks, texts):
        raise NotImplementedError

    def is_present(self, embedding, text):
        return self.present

    def mask_source_for(self, text):
        return self.source


def _hot(*cells):
    """A 16 x 16 map at 0.02 with the given (y1, y2, x1, x2) cell rectangles at 0.95."""
    grid = np.full((16, 16), 0.02, np.float32)
    for y1, y2, x1, x2 in cells:
        grid[y1:y2, x1:x2] = 0.95
    return grid


class ShiftedBoxSegmenter:
    """Each box prompt yields its rectangle moved 8 pixels right (a segmenter that misses)."""

    name = "shifted"
    supports_points = False

    def __init__(self):
        from conftest import BoxFillingSegmenter

        self.inner = BoxFillingSegmenter()

    def encode(self, image):
        return self.inner.encode(image)

    def predict(self, embedding, boxes=None, points=None, point_labels=None):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4) + np.array([8, 0, 8, 0])
        return self.inner.predict(embedding, boxes=boxes)


IMAGE = np.zeros((64, 64), np.float32)


def test_two_separate_hot_regions_give_two_boxes_without_a_count_in_the_prompt(box_segmenter):
    model = GridMapGrounding(_hot((2, 6, 2, 6), (9, 13, 8, 14)))
    result = MedClipSamPipeline(box_segmenter, model).run(IMAGE, "lesion",
                                                          keep_intermediates=True)
    assert result.found and len(result.boxes) == 2 and box_segmenter.batches == [2]
    np.testing.assert_allclose(sorted(result.boxes.tolist()),
                               [[8, 8, 24, 24], [32, 36, 56, 52]], atol=2)
    assert result.intermediates["mask_source"] == "segmenter"
    assert result.intermediates["coarse_level"] == 0.5
    for x1, y1, x2, y2 in result.boxes.astype(int):
        assert result.mask[y1:y2, x1:x2].all()


def test_mask_source_map_returns_the_map_targets_without_decoding(box_segmenter):
    model = GridMapGrounding(_hot((2, 6, 2, 6), (9, 13, 8, 14)))
    result = MedClipSamPipeline(box_segmenter, model, MedClipSamConfig(mask_source="map")).run(
        IMAGE, "lesion", keep_intermediates=True)
    assert result.found and box_segmenter.batches == []
    np.testing.assert_array_equal(result.mask, result.intermediates["map_mask"])
    np.testing.assert_array_equal(result.scores, [1, 1])
    assert result.intermediates["mask_source"] == "map" and len(result.boxes) == 2
    # "auto" follows the model's calibrated choice for the prompt
    auto = MedClipSamPipeline(box_segmenter, GridMapGrounding(model.grid, source="map")).run(
        IMAGE, "lesion")
    np.testing.assert_array_equal(auto.mask, result.mask)
    assert box_segmenter.batches == []
    with pytest.raises(ValueError, match="mask source"):
        MedClipSamPipeline(box_segmenter, model, MedClipSamConfig(mask_source="sam")).run(
            IMAGE, "lesion")


def test_mask_source_union_holds_the_segmenter_mask_and_the_map():
    model = GridMapGrounding(_hot((4, 10, 4, 10)))
    runs = {source: MedClipSamPipeline(ShiftedBoxSegmenter(), model,
                                       MedClipSamConfig(mask_source=source)).run(
        IMAGE, "lesion", keep_intermediates=True) for source in ("segmenter", "map", "union")}
    segment, mapped, union = (runs[s].mask for s in ("segmenter", "map", "union"))
    assert (union >= segment).all() and (union >= mapped).all()
    assert union.sum() > segment.sum() and union.sum() > mapped.sum()
    np.testing.assert_array_equal(union, segment | runs["union"].intermediates["map_mask"])


def test_refine_decodes_again_from_the_first_masks_tight_boxes():
    segmenter = ShiftedBoxSegmenter()
    model = GridMapGrounding(_hot((4, 10, 2, 8)))
    first = MedClipSamPipeline(segmenter, model).run(IMAGE, "lesion")
    refined = MedClipSamPipeline(segmenter, model, MedClipSamConfig(refine=True)).run(
        IMAGE, "lesion")
    np.testing.assert_array_equal(refined.boxes, first.boxes + np.array([8, 0, 8, 0]))
    assert segmenter.inner.batches == [1, 1, 1]


def test_mask_prompt_decodes_each_box_again_with_its_first_mask_and_records_it():
    class SecondRoundSegmenter(ShiftedBoxSegmenter):
        """The first round misses by 8 pixels; a second round given the first round's masks
        returns the box itself (a segmenter that corrects itself when shown its mask)."""

        def __init__(self):
            super().__init__()
            self.refined = []

        def refine(self, embedding, boxes, low_res_logits):
            self.refined.append((len(boxes), np.asarray(low_res_logits).shape))
            return self.inner.predict(embedding, boxes=boxes)

    segmenter, model = SecondRoundSegmenter(), GridMapGrounding(_hot((4, 10, 2, 8)))
    plain = MedClipSamPipeline(segmenter, model).run(IMAGE, "lesion")
    assert "mask_prompt" not in plain.decisions and segmenter.refined == []
    second = MedClipSamPipeline(segmenter, model, MedClipSamConfig(mask_prompt=True)).run(
        IMAGE, "lesion")
    assert second.decisions["mask_prompt"] is True
    assert [(n, shape[0]) for n, shape in segmenter.refined] == [(1, 1)]  # one box, its mask
    np.testing.assert_array_equal(second.boxes, plain.boxes)  # the same box prompts
    x1, y1, x2, y2 = np.asarray(second.boxes[0], int)
    assert second.mask[y1:y2, x1:x2].all() and not plain.mask[y1:y2, x1:x1 + 8].any()


def test_an_absent_or_weak_target(box_segmenter):
    hot = _hot((4, 10, 4, 10))
    absent = MedClipSamPipeline(box_segmenter, GridMapGrounding(hot, present=False)).run(
        IMAGE, "lesion", keep_intermediates=True)
    assert not absent.found and not absent.mask.any() and len(absent.boxes) == 0
    assert box_segmenter.batches == [] and box_segmenter.encoded == 1
    # present, but the map never reaches 0.5: cut at half its peak
    weak = MedClipSamPipeline(box_segmenter, GridMapGrounding(hot * 0.4)).run(
        IMAGE, "lesion", keep_intermediates=True)
    assert weak.found and weak.intermediates["coarse_level"] == pytest.approx(0.19)
    np.testing.assert_allclose(weak.boxes, [[16, 16, 40, 40]], atol=2)


# --- SaLIP's retrieval for dense grounding -----------------------------------------------------


def test_select_regions_takes_the_union_that_best_matches_the_map():
    from clipsam.pipelines.salip import select_regions

    prob = np.zeros((20, 20), np.float32)
    prob[2:8, 2:8] = 1.0  # target A
    prob[12:18, 12:18] = 0.9  # target B, elsewhere
    cover = np.zeros((5, 20, 20), np.float32)
    cover[0, 2:8, 2:8] = 1  # A
    cover[1, 2:8, 2:5] = 1  # half of A: adds nothing once A is kept
    cover[2, 12:18, 12:18] = 1  # B
    cover[3, 12:18, 2:8] = 1  # off the map
    cover[4] = 1  # the whole image: matches neither target well
    np.testing.assert_array_equal(select_regions(cover, prob), [0, 2])
    np.testing.assert_array_equal(select_regions(cover, prob, top_k=1), [0])
    assert select_regions(cover, np.zeros((20, 20), np.float32)).size == 0
    assert select_regions(cover[:0], prob).size == 0


def test_salip_with_dense_grounding_keeps_two_separate_targets():
    target = disc(60, 40, 20) | disc(60, 120, 20)
    image = target.astype(np.float32)
    result = SalipPipeline(FakeSegmenter(), FakeGrounding(target)).run(
        image, "lesion", keep_intermediates=True)
    assert len(result.intermediates["chosen"]) == 2
    assert dice(result.mask, target) > 0.95


def test_segment_boxes_keeps_one_filled_target_per_box_when_cleaning_up():
    from clipsam.pipelines.common import segment_boxes
    from clipsam.pipelines.timing import StageTimer

    class SpeckledSegmenter:
        """Each box gives a ring (a hole inside) and a speck in the image corner."""

        def predict(self, embedding, boxes=None, points=None, point_labels=None):
            masks = np.zeros((len(boxes), 32, 32), bool)
            for mask, (x1, y1, x2, y2) in zip(masks, np.asarray(boxes, int), strict=True):
                mask[y1:y2, x1:x2] = True
                mask[y1 + 2:y2 - 2, x1 + 2:x2 - 2] = False
                mask[0, 0] = True
            return MaskPrediction(masks, np.zeros((len(boxes), 8, 8), np.float32),
                                  np.full(len(boxes), 0.5, np.float32))

    embedding = ImageEmbedding(np.zeros((1, 1, 4, 4), np.float32),
                               Geometry((32, 32), (64, 64), 64), "x")
    boxes = np.array([[4, 4, 14, 14], [18, 18, 30, 30]], np.float32)
    clean, prediction = segment_boxes(SpeckledSegmenter(), embedding, boxes, StageTimer())
    expected = np.zeros((32, 32), bool)
    expected[4:14, 4:14] = expected[18:30, 18:30] = True
    np.testing.assert_array_equal(clean, expected)
    assert prediction.masks.shape == (2, 32, 32) and prediction.masks[:, 0, 0].all()
    raw, _ = segment_boxes(SpeckledSegmenter(), embedding, boxes, StageTimer(), cleanup=False)
    np.testing.assert_array_equal(raw, prediction.masks.any(axis=0))
    empty, _ = segment_boxes(SpeckledSegmenter(), embedding, np.zeros((0, 4)), StageTimer())
    assert empty.shape == (32, 32) and not empty.any()


class LeveledGrounding(GridMapGrounding):
    """A grid map with a calibrated map level."""

    def __init__(self, grid: np.ndarray, level: float | None):
        super().__init__(grid, source="map")
        self.level = level

    def map_level_for(self, text):
        return self.level


def test_the_map_level_comes_from_the_config_else_the_model_else_half(box_segmenter):
    grid = _hot((4, 10, 4, 10))
    grid[3, 4:10] = grid[10, 4:10] = 0.6  # a soft rim above and below the target
    run = lambda model, config=None: MedClipSamPipeline(  # noqa: E731
        box_segmenter, model, config).run(IMAGE, "lesion", keep_intermediates=True)
    default = run(LeveledGrounding(grid, None))
    calibrated = run(LeveledGrounding(grid, 0.8))
    assert default.intermediates["coarse_level"] == 0.5
    assert calibrated.intermediates["coarse_level"] == 0.8
    # the rim is in the mask at 0.5, not at 0.8
    assert default.mask[13:15, 24:32].all() and not calibrated.mask[13:15, 24:32].any()
    assert calibrated.mask[20:36, 20:36].all()
    forced = run(LeveledGrounding(grid, 0.8), MedClipSamConfig(map_level=0.5))
    np.testing.assert_array_equal(forced.mask, default.mask)
    with pytest.raises(ValueError, match="map_level"):
        run(LeveledGrounding(grid, None), MedClipSamConfig(map_level=1.5))


class MarginGrounding(GridMapGrounding):
    """A grid map with a calibrated box margin."""

    def __init__(self, grid: np.ndarray, margin: float | None, source: str = "segmenter"):
        super().__init__(grid, source=source)
        self.margin = margin

    def box_margin_for(self, text):
        return self.margin


def test_the_box_margin_comes_from_the_config_else_the_model_else_none(box_segmenter):
    grid = _hot((4, 10, 4, 10))
    run = lambda model, config=None: MedClipSamPipeline(  # noqa: E731
        box_segmenter, model, config).run(IMAGE, "lesion", keep_intermediates=True)
    plain = run(MarginGrounding(grid, None))
    grown = run(MarginGrounding(grid, 0.25))
    assert plain.intermediates["box_margin"] == 0.0 and grown.intermediates["box_margin"] == 0.25
    (x1, y1, x2, y2), = plain.boxes
    side = x2 - x1
    np.testing.assert_allclose(grown.boxes, [[x1 - side / 4, y1 - side / 4, x2 + side / 4,
                                              y2 + side / 4]])
    assert grown.mask.sum() > plain.mask.sum()
    forced = run(MarginGrounding(grid, 0.25), MedClipSamConfig(box_margin=0.0))
    np.testing.assert_array_equal(forced.mask, plain.mask)
    # the map source decodes nothing: its mask and boxes ignore the margin
    mapped = run(MarginGrounding(grid, 0.25, source="map"))
    np.testing.assert_array_equal(mapped.boxes, plain.boxes)
    with pytest.raises(ValueError, match="box_margin"):
        run(MarginGrounding(grid, None), MedClipSamConfig(box_margin=-0.1))


class FadingGrounding(MarginGrounding):
    """MarginGrounding whose map peaks at half its height from the second image on."""

    def __init__(self, grid: np.ndarray, margin: float | None):
        super().__init__(grid, margin)
        self.calls = 0

    def similarity_map(self, embedding, text):
        self.calls += 1
        return self.grid if self.calls == 1 else 0.5 * self.grid


def test_the_record_says_what_the_pipeline_decided_for_the_prompt(box_segmenter):
    from clipsam.api import Segmenter
    from clipsam.io.image import MedicalImage

    grid = _hot((4, 10, 4, 10))
    seg = Segmenter(pipeline=MedClipSamPipeline(box_segmenter, MarginGrounding(grid, 0.25)),
                    encoder=box_segmenter)
    record = json.loads(json.dumps(seg.segment(IMAGE, "lesion")[0].to_record()))
    assert record["decisions"] == {"mask_source": "segmenter", "coarse_level": 0.5,
                                   "box_margin": 0.25}
    # a volume keeps the decisions its slices share: the second slice's map never reaches
    # 0.5, so it was cut lower
    seg = Segmenter(pipeline=MedClipSamPipeline(box_segmenter, FadingGrounding(grid, 0.25)),
                    encoder=box_segmenter)
    volume = MedicalImage(np.stack([IMAGE, IMAGE + 1]), None, "nifti", is_volume=True)
    result = seg.segment(volume, "lesion")[0]
    decisions = dict(result.decisions)
    assert decisions.pop("volume")["mode"] == "consistent"
    assert result.found and decisions == {"mask_source": "segmenter", "box_margin": 0.25}


def test_test_time_flips_average_maps_flipped_back_with_one_encoder_pass_each():
    from synthetic_volume import BrightGrounding, BrightSegmenter

    image = np.zeros((64, 64), np.uint8)
    image[8:24, 4:20] = 230  # off-centre: a map not flipped back would land elsewhere
    runs = {}
    for tta in ((), ("hflip",), ("hflip", "vflip")):
        segmenter = BrightSegmenter()
        pipeline = MedClipSamPipeline(segmenter, BrightGrounding(), MedClipSamConfig(tta=tta))
        runs[tta] = pipeline.run(image, "bright thing", keep_intermediates=True)
        assert segmenter.encoded == 1 + len(tta)
        assert ("tta" in runs[tta].timings) is bool(tta)
    plain = runs[()]
    for tta in (("hflip",), ("hflip", "vflip")):
        np.testing.assert_allclose(runs[tta].intermediates["saliency"],
                                   plain.intermediates["saliency"], atol=1e-6)
        assert np.array_equal(runs[tta].mask, plain.mask) and plain.mask[8:24, 4:20].all()
    with pytest.raises(ValueError, match="unknown test-time flip 'rotate'"):
        MedClipSamPipeline(BrightSegmenter(), BrightGrounding(), MedClipSamConfig(tta=("rotate",)))

