"""Calibration on held-out subjects: presence thresholds at a recall operating point and the
mask source of each concept."""

from dataclasses import replace

import numpy as np
import pytest

from clipsam.io.labelled_sets import list_samples
from clipsam.train.calibrate import (
    CalibrationConfig,
    balanced_threshold,
    calibrate_box_margins,
    calibrate_map_levels,
    calibrate_mask_sources,
    calibrate_presence,
    operating_points,
    place_threshold,
    precision_threshold,
    threshold_at_recall,
)
from clipsam.train.captions import Concept
from conftest import BoxFillingSegmenter
from synthetic_grounding import (
    NAMES,
    DirectionGrounding,
    ShiftingSegmenter,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    region_data,
    stored_region_data,
    write_labelled_set,
)


def test_threshold_at_recall_is_the_highest_keeping_the_share():
    positives = np.array([0.1, 0.5, 0.9, 0.3])
    assert threshold_at_recall(positives, 1.0) == 0.1
    assert threshold_at_recall(positives, 0.75) == 0.3  # 3 of 4 kept, exactly
    assert threshold_at_recall(positives, 0.8) == 0.1  # 3 of 4 would be 0.75 < 0.8
    assert threshold_at_recall(positives, 0.25) == 0.9
    # 0.9 of 10 is 9 exactly, despite (1 - 0.9) * 10 < 1 in floating point
    assert threshold_at_recall(np.arange(10) / 10, 0.9) == 0.1
    assert threshold_at_recall([0.7], 0.95) == 0.7


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 10, 20])
@pytest.mark.parametrize("recall", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_threshold_at_recall_matches_a_brute_force_search(n, recall):
    positives = np.random.default_rng(n).random(n)
    t = threshold_at_recall(positives, recall)
    assert np.mean(positives >= t) >= recall - 1e-12
    higher = positives[positives > t]
    assert all(np.mean(positives >= h) < recall - 1e-12 for h in higher)


class ScoreTable:
    """A model whose presence score is read from a table: row = the image (its features'
    first value), column = the concept; with ``heads`` (a table of the same shape) the concepts
    named in ``with_heads`` have a presence head scoring from it."""

    def __init__(self, table: np.ndarray, heads: np.ndarray | None = None,
                 with_heads: tuple[str, ...] = ()) -> None:
        self.tables = {"map": table, "head": heads}
        self.presence_heads = dict.fromkeys(with_heads, np.zeros(1))

    def presence_score(self, embedding, text: str, statistic: str | None = None) -> float:
        table = self.tables[statistic or "map"]
        return float(table[int(embedding.features[0, 0, 0, 0]), NAMES.index(text)])


def _scored_data():
    """s0 (alpha): 5 with the target, 1 empty; s1 (beta, where alpha may show): 4 with the
    target; s2 (gamma): 2 empty."""
    n = 12
    unknown = np.zeros((n, 3), bool)
    data = region_data(n=n, count=3, empty_every=0)
    index = np.array([0] * 6 + [1] * 4 + [2] * 2)
    targets = data.targets.copy()
    targets[[5, 10, 11]] = 0
    unknown[6:10, 0] = True
    features = [np.full((1, 2, 2), i, np.float16) for i in range(n)]
    return replace(data, features=features, targets=targets, concept_index=index,
                   unknown=unknown)


SCORES = np.array([
    # alpha, beta, gamma
    [0.9, 0.1, 0.1], [0.8, 0.1, 0.1], [0.7, 0.1, 0.1], [0.6, 0.1, 0.1], [0.2, 0.1, 0.1],
    [0.5, 0.1, 0.1],  # s0, empty
    [0.95, 0.7, 0.1], [0.95, 0.75, 0.1], [0.95, 0.8, 0.1], [0.95, 0.85, 0.1],  # s1
    [0.1, 0.2, 0.3], [0.65, 0.2, 0.3],  # s2, empty
])


def test_calibrate_presence_keeps_the_recall_and_leaves_may_show_sets_out():
    data = _scored_data()
    result = calibrate_presence(ScoreTable(SCORES), data, CalibrationConfig(recall=0.8))
    overall, thresholds = result.overall["recall"], result.thresholds
    report, warnings = result.report, result.warnings
    # recall points 0.6 (alpha) and 0.7 (beta); beta's negatives (alpha's 6, gamma's 2 images:
    # 90 % score below 0.2) pull its threshold half-way there in logits, alpha's overlap (0.5,
    # 0.65 against 0.6) so it stays at its recall point
    assert thresholds["alpha thing"] == pytest.approx(0.6)
    assert report["alpha thing"]["recall_point"] == pytest.approx(0.6)
    assert report["alpha thing"]["note"] and "overlap" in report["alpha thing"]["note"]
    assert report["beta thing"]["recall_point"] == pytest.approx(0.7)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    q = np.quantile([0.1] * 6 + [0.2, 0.2], 0.9)
    expected = 1 / (1 + np.exp(-(logit(q) + logit(0.7)) / 2))
    assert thresholds["beta thing"] == pytest.approx(expected)
    assert thresholds["beta thing"] < 0.7 and report["beta thing"]["note"] is None
    alpha = report["alpha thing"]
    assert alpha["n_present"] == 5 and alpha["recall"] == 0.8
    assert alpha["n_empty"] == 1 and alpha["not_found_empty"] == 1.0
    # s1 images (alpha may show there, scored 0.95) are not negatives of alpha
    assert alpha["n_other_sets"] == 2 and alpha["not_found_other_sets"] == 0.5
    assert report["beta thing"]["recall"] == 1.0 and report["beta thing"]["n_other_sets"] == 8
    # gamma has no calibration image with its target: the model-wide threshold, a warning
    assert overall == pytest.approx(0.6)  # 8 of the 9 present targets kept
    assert "gamma thing" not in thresholds
    assert report["gamma thing"]["threshold"] == 0.6 and report["gamma thing"]["recall"] is None
    assert {k: v["threshold"] for k, v in report["gamma thing"]["points"].items()} == {
        k: v["threshold"] for k, v in result.overall_report.items()}
    assert len(warnings) == 1 and "gamma thing" in warnings[0]
    assert not result.statistics and report["alpha thing"]["statistic"] == "map"
    for concept, threshold in thresholds.items():
        c = NAMES.index(concept)
        positives = SCORES[(data.concept_index == c) & data.has_target(), c].astype(np.float32)
        assert np.mean(positives >= threshold) >= 0.8


def test_calibrate_presence_needs_a_present_target():
    data = _scored_data()
    with pytest.raises(ValueError, match="at least one"):
        calibrate_presence(ScoreTable(SCORES), replace(data, targets=data.targets * 0),
                           CalibrationConfig())


def _two_sets(tmp_path, empty=()):
    """Calibration data of two synthetic sets: s0 (alpha, 3 images) and s1 (beta, 2 images;
    those listed in ``empty`` without the target)."""
    cache = tmp_path / "cache"
    write_labelled_set(tmp_path, "s0", 0, ["a", "b", "c"], cache)
    write_labelled_set(tmp_path, "s1", 1, ["d", "e"], cache, seed=1, empty=empty)
    samples = list_samples(tmp_path / "s0") + list_samples(tmp_path / "s1")
    concepts = {f"s{i}": Concept(NAMES[i], (NAMES[i],)) for i in range(2)}
    return stored_region_data(samples, cache, concepts)


def test_mask_sources_are_chosen_by_dice_through_the_pipeline(tmp_path):
    data = _two_sets(tmp_path, empty=(0, 1))
    chosen, report, warnings = calibrate_mask_sources(
        DirectionGrounding(), BoxFillingSegmenter(), data, CalibrationConfig())
    # the box of a square target gives it exactly: the map is no better by min_gain
    assert chosen == {"alpha thing": "segmenter"}
    assert report["alpha thing"]["n"] == 3 and report["alpha thing"]["dice_segmenter"] == 1.0
    assert len(warnings) == 1 and "beta thing" in warnings[0]
    chosen, report, _ = calibrate_mask_sources(
        DirectionGrounding(), ShiftingSegmenter(), data, CalibrationConfig())
    assert chosen == {"alpha thing": "map"}
    entry = report["alpha thing"]
    assert entry["dice_map"] > entry["dice_union"] > entry["dice_segmenter"]


class RimGrounding(DirectionGrounding):
    """DirectionGrounding whose map also lights a soft rim (0.6) around each target."""

    def similarity_map(self, embedding, text):
        sharp = super().similarity_map(embedding, text) > 0.5
        padded = np.pad(sharp, 1)
        rim = np.zeros_like(sharp)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                rim |= padded[dy:dy + sharp.shape[0], dx:dx + sharp.shape[1]]
        return np.where(sharp, 0.95, np.where(rim, 0.6, 0.05)).astype(np.float32)


def test_map_levels_are_calibrated_for_map_sourced_concepts_only(tmp_path):
    data = _two_sets(tmp_path)
    sources = {NAMES[0]: "map", NAMES[1]: "segmenter"}
    levels, report = calibrate_map_levels(RimGrounding(), BoxFillingSegmenter(), data, sources,
                                          CalibrationConfig())
    assert set(report) == {NAMES[0]} and report[NAMES[0]]["n"] == 3
    by_level = report[NAMES[0]]["dice_by_level"]
    assert levels == {NAMES[0]: report[NAMES[0]]["chosen"]} and levels[NAMES[0]] > 0.6
    assert by_level[str(levels[NAMES[0]])] > max(0.95, by_level["0.5"] + 0.1)
    # a sharp map gains nothing from another level: the default stays (nothing recorded)
    levels, report = calibrate_map_levels(DirectionGrounding(), BoxFillingSegmenter(), data,
                                          sources, CalibrationConfig())
    assert levels == {} and report[NAMES[0]]["chosen"] == 0.5


class CoreGrounding(DirectionGrounding):
    """DirectionGrounding whose map lights only the core of each target (one cell in from its
    outline), so a box drawn around the map stops inside the target."""

    def similarity_map(self, embedding, text):
        from scipy import ndimage

        sharp = super().similarity_map(embedding, text) > 0.5
        core = ndimage.binary_erosion(sharp)
        return np.where(core, 0.95, 0.05).astype(np.float32)


def test_box_margins_are_calibrated_for_concepts_the_segmenter_decodes(tmp_path):
    data = _two_sets(tmp_path)
    config = CalibrationConfig(box_margins=(0.0, 0.2, 1 / 3))
    # a 5-cell square's 3-cell core: growing its box by a third per side gives the target
    margins, report = calibrate_box_margins(CoreGrounding(), BoxFillingSegmenter(), data, {},
                                            {}, config)
    assert margins == {NAMES[0]: 1 / 3, NAMES[1]: 1 / 3}
    by_margin = report[NAMES[0]]["dice_by_margin"]
    assert report[NAMES[0]]["n"] == 3 and by_margin[str(1 / 3)] == 1.0
    assert by_margin["0.0"] < by_margin["0.2"] < 1.0
    # a concept answered from the map is not decoded: no margin, no report
    margins, report = calibrate_box_margins(CoreGrounding(), BoxFillingSegmenter(), data,
                                            {NAMES[0]: "map"}, {}, config)
    assert set(margins) == set(report) == {NAMES[1]}
    # boxes that already fit gain nothing from a margin: none is recorded
    margins, report = calibrate_box_margins(DirectionGrounding(), BoxFillingSegmenter(), data,
                                            {}, {}, config)
    assert margins == {} and report[NAMES[0]]["chosen"] == 0.0


def _balanced_accuracy(positives, groups, t):
    return 0.5 * (np.mean(positives >= t) + np.mean([np.mean(g < t) for g in groups]))


@pytest.mark.parametrize("seed", range(8))
def test_the_balanced_threshold_is_as_good_as_any_on_a_fine_grid(seed):
    rng = np.random.default_rng(seed)
    positives = rng.beta(4, 2, size=int(rng.integers(3, 30)))
    groups = [rng.beta(2, 4, size=int(rng.integers(1, 5))), rng.beta(1, 6, size=50)]
    t = balanced_threshold(positives, groups)
    grid = np.linspace(0, 1, 4001)
    best = max(_balanced_accuracy(positives, groups, g) for g in grid)
    assert _balanced_accuracy(positives, groups, t) == pytest.approx(best)
    # the lowest best threshold: every lower score of an image is a worse threshold
    every = np.concatenate([positives, *groups])
    assert all(_balanced_accuracy(positives, groups, s) < best - 1e-12 for s in every[every < t])


def test_the_balanced_threshold_lies_half_way_below_the_best_positive():
    # best: 0.7 (recall 2/3, both groups all "not found"); the next lower score is 0.4
    t = balanced_threshold(np.array([0.3, 0.7, 0.9]), [np.array([0.4]), np.array([0.1, 0.2])])
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(t) == pytest.approx((logit(0.4) + logit(0.7)) / 2)
    with pytest.raises(ValueError):
        balanced_threshold(np.array([0.5]), [np.array([])])


@pytest.mark.parametrize("share", [0.5, 0.8, 0.9, 1.0])
def test_the_precision_threshold_is_the_lowest_reaching_the_share_in_every_group(share):
    rng = np.random.default_rng(3)
    groups = [rng.random(2), rng.random(37)]
    t = precision_threshold(groups, share)
    assert all(np.mean(g < t) >= share for g in groups)
    # any lower threshold misses the share in some group
    lower = np.nextafter(t, -np.inf)
    assert any(np.mean(g < lower) < share for g in groups)
    # 2 empty images at 90 %: both must be "not found"
    assert precision_threshold([np.array([0.3, 0.6])], 0.9) > 0.6
    assert precision_threshold([np.array([0.3, 0.6])], 0.5) == pytest.approx(0.3)


def test_operating_points_are_ordered_and_equal_without_images_lacking_the_target():
    positives = np.array([0.2, 0.6, 0.7, 0.8, 0.9])
    groups = [np.array([0.5]), np.array([0.1, 0.65])]
    points = operating_points(0.6, positives, groups, 0.9)
    assert points["recall"] == 0.6
    # balanced: 0.7 is best (recall 0.6, no image without the target found), moved half-way
    # down to 0.65; precision's own rule (just above 0.65) is lower, so it takes balanced's
    assert 0.65 < points["balanced"] < 0.7
    assert points["precision"] == points["balanced"]
    assert operating_points(0.6, positives, [np.array([])], 0.9) == dict.fromkeys(
        ("recall", "balanced", "precision"), 0.6)
    # an easy split: balanced and precision stay at least at the recall point
    easy = operating_points(0.85, positives + 0.1, [np.array([0.05])], 0.9)
    assert easy["recall"] == easy["balanced"] == easy["precision"] == 0.85


def test_calibrate_presence_places_every_operating_point():
    data = _scored_data()
    result = calibrate_presence(ScoreTable(SCORES), data, CalibrationConfig(recall=0.8))
    alpha = result.points["alpha thing"]
    # alpha: targets 0.9 0.8 0.7 0.6 0.2; own empty 0.5; gamma's images 0.1, 0.65
    assert alpha == pytest.approx(operating_points(
        result.points["alpha thing"]["recall"], SCORES[:5, 0].astype(np.float32),
        [np.float32([0.5]), np.float32([0.1, 0.65])], 0.9))
    assert alpha["recall"] < alpha["balanced"] < 0.7
    entry = result.report["alpha thing"]["points"]
    assert entry["recall"]["recall"] == 0.8 and entry["recall"]["not_found_other_sets"] == 0.5
    assert entry["balanced"]["recall"] == 0.6
    assert entry["balanced"]["not_found_empty"] == entry["balanced"]["not_found_other_sets"] == 1
    assert set(result.concept_points()["alpha thing"]) == {"balanced", "precision"}
    # model-wide: the map statistic over every concept, recall at its recall point
    assert result.overall["recall"] == pytest.approx(0.6)
    assert result.overall["recall"] <= result.overall["balanced"] <= result.overall["precision"]


def test_a_presence_head_replaces_the_map_where_it_separates_better():
    data = _scored_data()
    heads = SCORES.copy()
    heads[:5, 0] = [0.9, 0.85, 0.8, 0.75, 0.7]  # alpha's targets all above its empty images
    heads[6:10, 1] = 0.15  # beta's head ranks its targets below gamma's images
    model = ScoreTable(SCORES, heads, with_heads=("alpha thing", "beta thing"))
    result = calibrate_presence(model, data, CalibrationConfig(recall=0.8))
    assert result.statistics == {"alpha thing": "head", "beta thing": "map"}
    alpha = result.report["alpha thing"]
    assert alpha["statistic"] == "head" and alpha["auc"]["head"] > alpha["auc"]["map"] + 0.02
    # alpha's points are placed on the head's scores: balanced separates perfectly
    assert alpha["points"]["balanced"]["recall"] == 1.0
    assert alpha["points"]["balanced"]["not_found_empty"] == 1.0
    assert result.points["alpha thing"]["recall"] == pytest.approx(
        place_threshold(heads[:5, 0], np.float32([0.5, 0.1, 0.65]), 0.8, 0.9)[0])
    beta = result.report["beta thing"]
    assert beta["statistic"] == "map" and beta["auc"]["map"] > beta["auc"]["head"]
    # a smaller gain than min_statistic_gain keeps the map
    strict = calibrate_presence(model, data, CalibrationConfig(recall=0.8,
                                                               min_statistic_gain=1.0))
    assert strict.statistics == {"alpha thing": "map", "beta thing": "map"}
