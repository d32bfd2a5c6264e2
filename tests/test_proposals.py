"""Segment-everything proposals against a fake segmenter of a known synthetic scene, and NMS."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clipsam.config import BoxGridConfig, FeatureBoxConfig, ProposalConfig
from clipsam.errors import InputError
from clipsam.models.segmenter import Geometry, ImageEmbedding, MaskPrediction
from clipsam.postprocess.boxes import box_iou, expand_boxes, mask_to_box
from clipsam.proposals.area import area_filter
from clipsam.proposals.feature_boxes import (
    cluster_regions,
    distinctness,
    feature_boxes,
    integral_image,
    kmeans_labels,
    principal_components,
)
from clipsam.proposals.generate import (
    BOX_PROMPT_DEFAULTS,
    default_config,
    generate_proposals,
)
from clipsam.proposals.nms import box_nms, mask_iou, mask_nms
from clipsam.proposals.prompts import box_grid, point_grid
from clipsam.proposals.quality import stability_score
from clipsam.proposals.result import Proposals

SIZE = (96, 128)


def disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE[0], 0:SIZE[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def rect(y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    mask = np.zeros(SIZE, bool)
    mask[y1:y2, x1:x2] = True
    return mask


class Scene:
    """Objects of the fake image: (mask, predicted IoU, sharp boundary?)."""

    def __init__(self) -> None:
        self.good_rect = rect(8, 40, 10, 60)
        self.good_disc = disc(65, 95, 18)
        self.blurry = disc(70, 30, 14)  # soft logits: unstable
        self.doubtful = rect(10, 30, 80, 120)  # the model doubts it: low predicted IoU
        self.objects = [(self.good_rect, 0.97, True), (self.good_disc, 0.93, True),
                        (self.blurry, 0.95, False), (self.doubtful, 0.5, True)]


class FakeSegmenter:
    """Answers a prompt with the scene object under the point or most inside the box; background
    points get the whole image; boxes around nothing get an empty mask."""

    name = "fake"

    def __init__(self, scene: Scene, supports_points: bool) -> None:
        self.scene = scene
        self.supports_points = supports_points
        self.batches: list[int] = []
        self.embeddings: list[ImageEmbedding] = []

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        raise AssertionError("proposals must reuse the embedding, not encode again")

    def _object_logits(self, index: int | None) -> tuple[np.ndarray, float]:
        if index is None:
            return np.full(SIZE, -10.0), 0.2
        mask, score, sharp = self.scene.objects[index]
        if sharp:
            return np.where(mask, 10.0, -10.0), score
        # A ramp: +3 at the centre falling to 0 at the object's edge and below outside.
        from scipy import ndimage
        inside = ndimage.distance_transform_edt(mask)
        outside = ndimage.distance_transform_edt(~mask)
        return np.clip(inside - outside, -3, 3), score

    def predict(self, embedding, boxes=None, points=None, point_labels=None) -> MaskPrediction:
        self.embeddings.append(embedding)
        logits, scores = [], []
        if points is not None:
            assert self.supports_points and boxes is None
            assert points.shape[1:] == (1, 2) and point_labels.shape == (len(points), 1)
            for (x, y), in points:
                hit = [i for i, (m, _, _) in enumerate(self.scene.objects) if m[int(y), int(x)]]
                if hit:
                    value, score = self._object_logits(hit[0])
                else:
                    value, score = np.full(SIZE, 10.0), 0.95  # the whole image
                logits.append(value)
                scores.append(score)
        else:
            for x1, y1, x2, y2 in np.asarray(boxes).astype(int):
                inside = [m[y1:y2, x1:x2].sum() / m.sum() for m, _, _ in self.scene.objects]
                best = int(np.argmax(inside))
                value, score = self._object_logits(best if inside[best] > 0.9 else None)
                logits.append(value)
                scores.append(score)
        self.batches.append(len(logits))
        logits = np.stack(logits)
        return MaskPrediction(masks=logits > 0, low_res_logits=logits[:, ::2, ::2],
                              scores=np.asarray(scores, np.float32))


def embedding(scene: Scene | None = None) -> ImageEmbedding:
    """A fake embedding on a 16 x 16 grid (8 original pixels per cell; the bottom 4 rows are
    padding): each cell holds a one-hot code of the scene object under its centre."""
    features = np.zeros((1, 8, 16, 16), np.float32)
    features[0, 0] = 1.0  # background
    for index, (mask, _, _) in enumerate(scene.objects if scene else []):
        centres = mask[4::8, 4::8]
        features[0, :, :12][:, centres] = 0.0
        features[0, index + 1, :12][centres] = 1.0
    features += np.random.default_rng(0).normal(0, 0.01, features.shape).astype(np.float32)
    return ImageEmbedding(features=features, geometry=Geometry(SIZE, (48, 64), 64),
                          model_name="fake")


def matches(proposals: Proposals, masks: list[np.ndarray]) -> bool:
    return len(proposals) == len(masks) and all(
        np.array_equal(p, m) for p, m in zip(proposals.masks, masks, strict=True))


@pytest.mark.parametrize("supports_points", [True, False])
def test_filters_and_nms_keep_one_mask_per_good_object(supports_points):
    scene = Scene()
    segmenter = FakeSegmenter(scene, supports_points)
    emb = embedding()
    config = ProposalConfig(points_per_side=16, batch_size=50, box_source="grid")
    proposals = generate_proposals(segmenter, emb, config)
    assert matches(proposals, [scene.good_rect, scene.good_disc])  # best score first
    assert proposals.scores.tolist() == pytest.approx([0.97, 0.93])
    assert proposals.stability.tolist() == [1.0, 1.0]
    assert proposals.areas.tolist() == [scene.good_rect.sum(), scene.good_disc.sum()]
    assert proposals.boxes.tolist() == [mask_to_box(scene.good_rect).tolist(),
                                        mask_to_box(scene.good_disc).tolist()]
    assert all(e is emb for e in segmenter.embeddings)
    assert max(segmenter.batches) <= 50 and len(segmenter.batches) > 1


def test_lowering_thresholds_admits_the_unstable_and_the_doubtful_objects():
    scene = Scene()
    loose = ProposalConfig(points_per_side=16, pred_iou_threshold=0.4, stability_threshold=0.0)
    proposals = generate_proposals(FakeSegmenter(scene, True), embedding(), loose)
    assert matches(proposals, [scene.good_rect, scene.blurry, scene.good_disc, scene.doubtful])
    assert proposals.stability[1] < 0.95
    whole = ProposalConfig(points_per_side=16, max_area_fraction=1.0)
    with_background = generate_proposals(FakeSegmenter(scene, True), embedding(), whole)
    assert any(m.all() for m in with_background.masks)


def test_mask_nms_and_region_cleaning():
    scene = Scene()
    speck = scene.good_rect.copy()
    speck[90:92, 2:4] = True  # a 4-pixel island
    speck[20:22, 30:32] = False  # a 4-pixel hole
    scene.objects[0] = (speck, 0.97, True)
    config = ProposalConfig(points_per_side=16, nms="mask", min_region_fraction=10 / speck.size)
    proposals = generate_proposals(FakeSegmenter(scene, True), embedding(), config)
    assert matches(proposals, [scene.good_rect, scene.good_disc])
    raw = generate_proposals(FakeSegmenter(scene, True), embedding(),
                             ProposalConfig(points_per_side=16, nms="mask"))
    assert np.array_equal(raw.masks[0], speck)


def test_box_only_default_decodes_its_feature_boxes_in_one_call():
    scene = Scene()
    segmenter = FakeSegmenter(scene, supports_points=False)
    assert default_config(segmenter) == BOX_PROMPT_DEFAULTS
    assert default_config(FakeSegmenter(scene, True)) == ProposalConfig()
    proposals = generate_proposals(segmenter, embedding(scene))
    # both good objects are proposed (a grown box may also answer with a neighbour)
    assert all(any(np.array_equal(p, m) for p in proposals.masks)
               for m in (scene.good_rect, scene.good_disc))
    assert len(segmenter.batches) == 1  # every box prompt in one segmenter call
    # at most one prompt per feature box and margin
    defaults = BOX_PROMPT_DEFAULTS
    assert segmenter.batches[0] <= len(defaults.box_margins) * defaults.feature_boxes.max_boxes


def test_box_margins_decode_each_box_as_is_and_grown():
    scene = Scene()
    seen = []
    segmenter = FakeSegmenter(scene, supports_points=False)
    config = replace(BOX_PROMPT_DEFAULTS, box_margins=(0.0, 0.25))

    def relevant(boxes):
        seen.append(boxes)
        return np.ones(len(boxes), bool)

    generate_proposals(segmenter, embedding(scene), config, relevant)
    boxes = feature_boxes(embedding(scene), config.feature_boxes)
    grown = expand_boxes(boxes, SIZE, fraction=0.25)
    assert np.allclose(seen[0], np.concatenate([boxes, grown]))
    assert not np.allclose(grown, boxes)
    with pytest.raises(InputError, match="box_margins"):
        generate_proposals(segmenter, embedding(scene), replace(config, box_margins=()))


def test_feature_boxes_frame_regions_of_similar_features():
    scene = Scene()
    boxes = feature_boxes(embedding(scene), FeatureBoxConfig(clusters=(5,), min_cells=2))
    # The rectangle covers the cells whose centres (4 + 8k) lie in rows 8..39, columns 10..59.
    assert [8, 8, 56, 40] in boxes.tolist()
    assert (boxes[:, 2] <= SIZE[1]).all() and (boxes[:, 3] <= SIZE[0]).all()
    for box in boxes:  # every box is a union of whole cells
        assert np.allclose(box % 8, 0)
    projected = feature_boxes(embedding(scene),
                              FeatureBoxConfig(clusters=(5,), min_cells=2, components=4))
    assert [8, 8, 56, 40] in projected.tolist()
    capped = feature_boxes(embedding(scene), FeatureBoxConfig(max_boxes=2))
    assert len(capped) == 2


def grid_embedding(features: np.ndarray) -> ImageEmbedding:
    """A (C, 16, 16) feature grid over a 128 x 128 image (8 pixels per cell, no padding)."""
    noise = np.random.default_rng(0).normal(0, 0.01, features.shape)
    return ImageEmbedding(features=(features + noise)[None].astype(np.float32),
                          geometry=Geometry((128, 128), (64, 64), 64), model_name="fake")


def test_feature_boxes_rank_distinct_regions_first_without_strips_or_background():
    features = np.zeros((4, 16, 16))
    features[0] = 1.0  # background
    features[:, 3:7, 2:6] = np.eye(4)[1][:, None, None]  # a distinct object
    features[:, 9:14, 8:14] = (0.9 * np.eye(4)[0] + 0.436 * np.eye(4)[2])[:, None, None]  # faint
    features[:, 0, :] = np.eye(4)[3][:, None]  # the encoder's strip along the top border
    boxes = feature_boxes(grid_embedding(features))
    assert boxes[:2].tolist() == [[16, 24, 48, 56], [64, 72, 112, 112]]  # distinct, then faint
    assert not any(y1 == 0 and y2 <= 8 for _, y1, _, y2 in boxes)  # no box for the strip
    assert not any((x2 - x1) * (y2 - y1) > 0.8 * 128 * 128 for x1, y1, x2, y2 in boxes)


def test_distinctness_is_contrast_with_the_grown_box_times_root_size():
    cells = np.zeros((10, 10, 2), np.float32)
    cells[..., 0] = 1.0
    cells[2:5, 2:5] = [0.0, 1.0]  # a 3 x 3 region of other features
    cells[7:9, 7:9] = [1.0, 0.0]  # a 2 x 2 region like its surroundings
    labels = np.zeros((10, 10), int)
    labels[2:5, 2:5], labels[7:9, 7:9] = 1, 2
    regions, sizes = cluster_regions(labels, 3)
    assert sizes.tolist() == [87, 9, 4]  # background first, then clusters 1 and 2
    boxes = np.array([[0, 0, 10, 10], [2, 2, 5, 5], [7, 7, 9, 9]])
    scores = distinctness(cells, integral_image(cells), regions, boxes, ring=1)
    assert scores[1] == pytest.approx(3.0)  # orthogonal features: 1 - 0, times sqrt(9)
    assert scores[2] == pytest.approx(0.0, abs=1e-6)
    whole = np.ones((10, 10), int)
    assert distinctness(cells, integral_image(cells), whole, boxes[:1], ring=1)[0] == 0.0


def test_principal_components_from_a_sample_of_rows():
    rng = np.random.default_rng(0)
    points = rng.normal(0, 1, (400, 2)) @ np.array([[3.0, 0, 0, 0], [0, 1.0, 0, 0]])
    points += rng.normal(0, 0.01, points.shape)
    projected = principal_components(points, 2, step=4)
    assert projected.shape == (400, 2)
    centred = points - points.mean(axis=0)
    distances = np.linalg.norm(centred[:, None] - centred[None], axis=-1)
    assert np.allclose(np.linalg.norm(projected[:, None] - projected[None], axis=-1),
                       distances, atol=0.1)  # rank-2 data keeps its geometry
    assert np.abs(projected[:, 0]).std() > np.abs(projected[:, 1]).std()  # main axis first


def test_kmeans_labels_separate_clusters_deterministically():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(c, 0.1, (50, 3)) for c in (0.0, 3.0, 6.0)])
    labels = kmeans_labels(points, 3, iterations=20, seed=1)
    assert all(len(set(labels[i * 50:(i + 1) * 50].tolist())) == 1 for i in range(3))
    assert len(set(labels.tolist())) == 3
    assert np.array_equal(labels, kmeans_labels(points, 3, iterations=20, seed=1))


def test_prompt_kind_errors():
    with pytest.raises(InputError):
        generate_proposals(FakeSegmenter(Scene(), False), embedding(),
                           ProposalConfig(prompts="points"))
    with pytest.raises(InputError):
        generate_proposals(FakeSegmenter(Scene(), True), embedding(), ProposalConfig(nms="soft"))
    with pytest.raises(InputError):
        generate_proposals(FakeSegmenter(Scene(), False), embedding(),
                           ProposalConfig(box_source="sliding"))


def test_area_filter():
    scene = Scene()
    proposals = generate_proposals(FakeSegmenter(scene, True), embedding(),
                                   ProposalConfig(points_per_side=16, max_area_fraction=1.0))
    share = proposals.areas / (SIZE[0] * SIZE[1])
    kept = area_filter(proposals, max_fraction=0.6, min_fraction=0.0)
    assert len(kept) == np.sum(share <= 0.6) and (kept.areas > 0).all()
    assert not any(m.all() for m in kept.masks)
    only_big = area_filter(proposals, max_fraction=1.0, min_fraction=0.12)
    assert (only_big.areas >= 0.12 * SIZE[0] * SIZE[1]).all()
    assert len(area_filter(Proposals.empty(SIZE))) == 0
    with pytest.raises(InputError):
        area_filter(proposals, max_fraction=0.1, min_fraction=0.2)


# --- NMS, stability, prompt grids --------------------------------------------------------------

def direct_nms(iou_of, n: int, scores: np.ndarray, threshold: float) -> list[int]:
    """Textbook greedy NMS with pairwise IoU computed on demand."""
    remaining = sorted(range(n), key=lambda i: (-scores[i], i))
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [i for i in remaining if iou_of(best, i) <= threshold]
    return keep


def test_box_nms_matches_direct_computation():
    rng = np.random.default_rng(0)
    for _ in range(5):
        xy = rng.uniform(0, 80, size=(40, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, size=(40, 2))], axis=1)
        scores = rng.random(40).round(1)  # ties included

        def iou_of(i, j, boxes=boxes):
            a, b = boxes[i], boxes[j]
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = w * h
            area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
            return inter / (area - inter)

        for threshold in (0.3, 0.7):
            assert box_nms(boxes, scores, threshold).tolist() == direct_nms(
                iou_of, 40, scores, threshold)


def test_mask_nms_matches_direct_computation():
    rng = np.random.default_rng(1)
    masks = np.stack([disc(*rng.uniform(20, 80, 2), rng.uniform(5, 25)) for _ in range(25)])
    scores = rng.random(25)

    def iou_of(i, j):
        return (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()

    exact = mask_iou(masks, masks, max_side=None)
    assert np.allclose(exact, [[iou_of(i, j) for j in range(25)] for i in range(25)])
    assert np.abs(mask_iou(masks, masks, max_side=32) - exact).max() < 0.1
    for threshold in (0.2, 0.5):
        assert mask_nms(masks, scores, threshold, max_side=None).tolist() == direct_nms(
            iou_of, 25, scores, threshold)


def test_stability_score_is_area_ratio_of_offset_thresholds():
    ramp = np.tile(np.linspace(-5, 5, 11), (2, 3, 1))  # -5 .. 5 in steps of 1
    ramp[1] -= 10.0  # every value at or below -5: nothing above -1
    score = stability_score(ramp, mask_threshold=0.0, offset=1.0)
    assert score[0] == pytest.approx(4 / 6)  # > 1: {2..5}; > -1: {0..5}
    assert score[1] == 0.0


def test_point_grid_is_cell_centres():
    points = point_grid((40, 80), 4)
    assert points.shape == (16, 2)
    assert sorted(set(points[:, 0].tolist())) == [10, 30, 50, 70]
    assert sorted(set(points[:, 1].tolist())) == [5, 15, 25, 35]
    with pytest.raises(InputError):
        point_grid((40, 80), 0)


def test_box_grid_covers_the_image_with_overlapping_tiles():
    config = BoxGridConfig(sizes=(0.25, 0.5), aspect_ratios=(1.0, 2.0), overlap=0.5)
    boxes = box_grid((200, 300), config)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 300).all() and (boxes[:, 3] <= 200).all()
    square = boxes[np.isclose(boxes[:, 2] - boxes[:, 0], 50) & np.isclose(
        boxes[:, 3] - boxes[:, 1], 50)]
    assert len(square) == 7 * 11  # starts every <= 25 px over 150 and 250 px of travel
    coverage = np.zeros((200, 300), bool)
    for x1, y1, x2, y2 in square.astype(int):
        coverage[y1:y2, x1:x2] = True
    assert coverage.all()
    wide = boxes[np.isclose((boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1]), 2.0)]
    assert len(wide) > 0
    neighbours = box_iou(square[:1], square[1:2])[0, 0]
    assert neighbours >= 1 / 3 - 1e-6  # half a side shared
