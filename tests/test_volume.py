"""Volumes segmented consistently along the slice axis: smoothing, runs, box propagation and the
3-D clean-up, on a synthetic volume with a known object (tests/synthetic_volume.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clipsam.api import Segmenter
from clipsam.config import RunConfig, VolumeConfig
from clipsam.errors import InputError
from clipsam.eval.metrics import dice
from clipsam.io.image import MedicalImage
from clipsam.pipelines.base import PipelineResult
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.pipelines.volume import (
    SliceEvidence,
    VolumeSettings,
    VolumeTracker,
    resolve_settings,
)
from clipsam.postprocess.volume import (
    anchored_components,
    gaussian_weights,
    major_components,
    runs,
    smooth_scores,
    smoothing_radius,
)
from synthetic_volume import (
    BLOB_SLICE,
    CALIBRATED,
    DIM_SLICE,
    PROMPT,
    BrightSegmenter,
    MarginGrounding,
    object_mask,
    volume_pixels,
)


def volume_segmenter(volume: dict | None = CALIBRATED, config: VolumeConfig | None = None,
                     keep: bool = False) -> Segmenter:
    segmenter = BrightSegmenter()
    pipeline = MedClipSamPipeline(segmenter, MarginGrounding(volume))
    run = RunConfig(volume=config or VolumeConfig(), keep_intermediates=keep)
    return Segmenter(run, pipeline=pipeline, encoder=segmenter)


def phantom(pixels: np.ndarray | None = None) -> MedicalImage:
    return MedicalImage(volume_pixels() if pixels is None else pixels, None, "nifti",
                        is_volume=True)


# --- the array rules -------------------------------------------------------------------------


def test_smoothing_is_a_two_sided_gaussian_renormalised_at_the_ends():
    assert smoothing_radius(0) == 0 and smoothing_radius(1.0) == 3 and smoothing_radius(0.5) == 2
    weights = gaussian_weights(1.0)
    assert weights.sum() == pytest.approx(1) and weights[3] == weights.max()
    scores = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    smoothed = smooth_scores(scores, 1.0)
    assert smoothed[4] == pytest.approx(weights[3]) and smoothed[5] == pytest.approx(weights[2])
    # slice 1 sees slices 0-4 only: the weights of offsets -1..3, renormalised
    assert smoothed[1] == pytest.approx(weights[6] / weights[2:].sum())
    assert smooth_scores(scores[3:], 1.0)[1] == pytest.approx(weights[3] / weights[2:].sum())
    np.testing.assert_array_equal(smooth_scores(scores, 0), scores)


def test_runs_are_maximal_stretches_of_true():
    assert runs(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)) == [(1, 3), (4, 5), (7, 8)]
    assert runs(np.zeros(4, bool)) == [] and runs(np.ones(3, bool)) == [(0, 3)]


def test_components_touching_no_anchor_slice_are_dropped():
    mask = np.zeros((6, 10, 10), bool)
    mask[1:4, 2:5, 2:5] = True  # touches anchor slice 2
    mask[4, 7:9, 7:9] = True  # alone on slice 4
    mask[3, 8, 0] = True  # on slice 3 only, not an anchor
    anchors = np.array([0, 0, 1, 0, 0, 0], bool)
    kept, dropped = anchored_components(mask, anchors)
    assert dropped == 2
    expected = np.zeros_like(mask)
    expected[1:4, 2:5, 2:5] = True
    np.testing.assert_array_equal(kept, expected)
    # diagonal neighbours across slices belong together (26-connectivity)
    mask = np.zeros((3, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True
    assert anchored_components(mask, np.array([1, 0, 0], bool))[1] == 0


def test_components_small_beside_the_largest_are_dropped():
    mask = np.zeros((6, 10, 10), bool)
    mask[1:4, 0:4, 0:4] = True  # 48 voxels
    mask[1:3, 7:10, 7:10] = True  # 18 voxels: 0.375 of the largest
    mask[5, 0, 9] = True  # 1 voxel
    for fraction, dropped, kept_voxels in ((0.0, 0, 67), (0.02, 0, 67), (0.1, 1, 66),
                                           (0.375, 1, 66), (0.4, 2, 48), (1.0, 2, 48)):
        kept, count = major_components(mask, fraction)
        assert (count, int(kept.sum())) == (dropped, kept_voxels), fraction
        assert not (kept & ~mask).any()
    assert major_components(np.zeros((2, 3, 3), bool), 0.5)[1] == 0
    with pytest.raises(InputError, match="fraction"):
        major_components(mask, 1.5)


# --- the tracker, with hand-made slices ---------------------------------------------------------


def _result(mask: np.ndarray) -> PipelineResult:
    from clipsam.postprocess.boxes import component_boxes

    boxes = component_boxes(mask)
    return PipelineResult(mask=mask, found=bool(mask.any()), boxes=boxes,
                          scores=np.ones(len(boxes), np.float32), prompt="p", method="m",
                          timings={"decode": 0.01, "total": 0.01})


def test_the_tracker_propagates_drops_far_components_and_holds_few_embeddings():
    """Slices 1-5 show a square; slice 3's own answer misses it; slice 6 is weak and its
    propagated mask lands apart from everything (dropped by the clean-up)."""
    size = (12, 12)
    square = np.zeros(size, bool)
    square[3:8, 3:8] = True
    far = np.zeros(size, bool)
    far[10:12, 10:12] = True
    scores = [0.1, 0.9, 0.9, 0.3, 0.9, 0.9, 0.35, 0.1, 0.1]
    own = [square if s > 0.5 else np.zeros(size, bool) for s in scores]
    decoded = []

    def decode(embedding, boxes, timer):
        decoded.append((embedding, boxes.copy()))
        return (far if embedding == 6 else square), np.array([0.5], np.float32)

    settings = VolumeSettings("consistent", smoothing=0.7, hold=0.0, reach=1, margin=0.2,
                              cleanup=True)
    tracker = VolumeTracker(settings, "p", "m", decode)
    held = []
    for z, (score, mask) in enumerate(zip(scores, own, strict=True)):
        tracker.add(z, _result(mask), SliceEvidence(score, 0.4, "score"))
        held.append(len(tracker._embeddings))
    outcome = tracker.finish()
    smoothed = smooth_scores(np.array(scores), 0.7)
    in_run = smoothed >= 0.4
    assert in_run[1:7].all() and not in_run[[0, 7, 8]].any()  # slice 6 only by smoothing
    assert max(held) <= settings.lag == 4  # 3 slices of smoothing, 1 of reach
    assert [e for e, _ in decoded] == [3, 6]  # only the weak slices of the run are decoded
    # slice 3 took its box from slices 2 and 4 (both one away), grown by a fifth per side
    np.testing.assert_allclose(decoded[0][1], [[2, 2, 9, 9]])
    expected = np.zeros((9, *size), bool)
    expected[1:6] = square
    np.testing.assert_array_equal(outcome.mask, expected)
    volume = outcome.decisions["volume"]
    assert volume["propagated_slices"] == [3, 6] and volume["dropped_components"] == 1
    assert volume["runs"] == [[1, 6, round(float(smoothed[1:7].max()), 4), True]]
    assert outcome.found and outcome.boxes[:, 0].tolist() == [1, 2, 3, 4, 5]
    assert set(outcome.timings) >= {"decode", "propagate", "volume", "total"}


def test_the_tracker_drops_a_confident_speck_beside_the_target_with_min_component():
    size = (10, 10)
    both = np.zeros(size, bool)
    both[1:6, 1:6] = True  # the target: 25 pixels a slice
    both[8, 8] = True  # a speck on the same confident slices
    for fraction, kept in ((0.0, 26 * 3), (0.1, 25 * 3)):
        tracker = VolumeTracker(VolumeSettings("consistent", cleanup=True,
                                               min_component=fraction), "p", "m")
        for z in range(3):
            tracker.add(z, _result(both), SliceEvidence(0.9, 0.5, "score"))
        outcome = tracker.finish()
        assert int(outcome.mask.sum()) == kept
        assert outcome.decisions["volume"]["dropped_minor_components"] == (fraction > 0)
        assert outcome.decisions["volume"]["min_component"] == fraction


def test_a_run_below_the_hold_level_is_not_found():
    size = (8, 8)
    square = np.zeros(size, bool)
    square[2:6, 2:6] = True
    scores = [0.1, 0.6, 0.7, 0.6, 0.1]
    for hold, found in ((0.0, True), (1.0, False)):  # 1 logit above 0.5 is 0.73
        tracker = VolumeTracker(VolumeSettings("consistent", hold=hold), "p", "m")
        for z, score in enumerate(scores):
            tracker.add(z, _result(square if score > 0.5 else np.zeros(size, bool)),
                        SliceEvidence(score, 0.5, "score"))
        outcome = tracker.finish()
        assert outcome.found is found and outcome.mask.any() is np.bool_(found)
        assert outcome.decisions["volume"]["runs"] == [[1, 3, 0.7, found]]


def test_settings_come_from_the_config_else_the_model_else_neutral_with_a_warning():
    settings = resolve_settings(VolumeConfig(reach=1), {"smoothing": 2.0, "margin": 0.3})
    assert (settings.smoothing, settings.reach, settings.margin, settings.hold) == (2.0, 1, 0.3, 0)
    assert settings.origin == {"smoothing": "calibrated", "hold": "default", "reach": "config",
                               "margin": "calibrated", "cleanup": "default",
                               "min_component": "default"}
    assert "hold, cleanup, min_component" in settings.warnings[0]
    assert not resolve_settings(VolumeConfig(), CALIBRATED).warnings
    assert resolve_settings(VolumeConfig(mode="slices"), CALIBRATED).record() == {"mode": "slices"}
    with pytest.raises(InputError, match="volume mode"):
        VolumeConfig(mode="3d")
    with pytest.raises(InputError, match="reach"):
        VolumeConfig(reach=1.5)
    with pytest.raises(InputError, match="margin"):
        resolve_settings(VolumeConfig(), {"margin": 2.0})
    with pytest.raises(InputError, match="min_component"):
        VolumeConfig(min_component=1.5)


# --- the whole pipeline on the synthetic volume -------------------------------------------------


def test_consistent_mode_fills_the_missed_slice_and_drops_the_far_blob():
    segmenter = volume_segmenter()
    seen = []
    result = segmenter.segment(phantom(), [PROMPT], progress=lambda d, t: seen.append((d, t)))[0]
    truth = object_mask()
    assert seen == [(z + 1, 16) for z in range(16)]  # progress after every slice
    assert segmenter.encoder.encoded == 16  # one encoder pass per slice, none again
    np.testing.assert_array_equal(result.mask, truth)
    assert result.found and dice(result.mask, truth) == 1.0
    volume = result.decisions["volume"]
    assert volume["propagated_slices"] == [DIM_SLICE]
    assert volume["from"]["reach"] == "calibrated" and volume["presence"] == "score"
    assert [run[:2] for run in volume["runs"]] == [[2, 8]]
    assert sorted(set(result.boxes[:, 0].astype(int))) == list(range(2, 9))

    plain = volume_segmenter(config=VolumeConfig(mode="slices")).segment(phantom(), PROMPT)[0]
    assert not plain.mask[DIM_SLICE].any() and plain.mask[BLOB_SLICE].any()  # today's answer
    assert dice(plain.mask, truth) < 0.95
    assert plain.decisions["volume"] == {"mode": "slices"}


def test_slices_mode_stacks_each_slice_segmented_as_an_image():
    segmenter = volume_segmenter(config=VolumeConfig(mode="slices"))
    result = segmenter.segment(phantom(), PROMPT)[0]
    pixels = volume_pixels()
    alone = [segmenter.segment(plane, PROMPT)[0] for plane in pixels]
    np.testing.assert_array_equal(result.mask, np.stack([r.mask for r in alone]))
    boxes = np.concatenate([np.column_stack([np.full(len(r.boxes), z), r.boxes])
                            for z, r in enumerate(alone)])
    np.testing.assert_allclose(result.boxes, boxes)
    assert result.found == any(r.found for r in alone)


def test_an_uncalibrated_model_gives_the_slice_masks_and_says_so():
    result = volume_segmenter(volume=None).segment(phantom(), PROMPT)[0]
    plain = volume_segmenter(config=VolumeConfig(mode="slices")).segment(phantom(), PROMPT)[0]
    np.testing.assert_array_equal(result.mask, plain.mask)
    assert "no calibrated volume setting" in result.decisions["volume"]["warnings"][0]
    assert result.to_record()["decisions"]["volume"]["from"]["smoothing"] == "default"


def test_a_volume_without_a_run_is_not_found():
    pixels = volume_pixels()
    pixels[:BLOB_SLICE] = pixels[0]  # only the far blob's slice is bright
    result = volume_segmenter(keep=True).segment(phantom(pixels), PROMPT)[0]
    assert not result.found and not result.mask.any() and result.boxes.shape == (0, 5)
    assert result.decisions["volume"]["runs"] == []
    presence = result.intermediates["presence"]
    assert presence[BLOB_SLICE] > 0.5 and result.intermediates["smoothed_presence"].max() < 0.5


def test_the_volume_mode_is_a_run_option_and_part_of_the_settings_key():
    from clipsam.api import run_config
    from clipsam.pipelines.provenance import run_identity

    config = run_config("medclipsam", volume_mode="slices")
    assert config.volume == VolumeConfig(mode="slices")
    assert run_identity(config).key != run_identity(run_config("medclipsam")).key
    with pytest.raises(InputError, match="volume mode"):
        run_config("medclipsam", volume_mode="both")


def test_the_evidence_is_what_the_slice_recorded_else_whether_it_was_found():
    from clipsam.pipelines.volume import slice_evidence

    mask = np.ones((4, 4), bool)
    recorded = PipelineResult(mask=mask, found=True, boxes=np.zeros((0, 4)), scores=np.zeros(0),
                              prompt="p", method="m", decisions={"presence": 0.7,
                                                                 "threshold": 0.4})
    plain = PipelineResult(mask=mask, found=True, boxes=np.zeros((0, 4)), scores=np.zeros(0),
                           prompt="p", method="m")
    assert slice_evidence(recorded) == SliceEvidence(0.7, 0.4, "score")
    assert slice_evidence(plain) == SliceEvidence(1.0, 0.5, "found")
    assert slice_evidence(replace(plain, found=False)) == SliceEvidence(0.0, 0.5, "found")


def test_salip_records_the_presence_and_decodes_propagated_boxes_whole():
    from clipsam.pipelines.salip import SalipPipeline
    from synthetic_volume import BrightGrounding

    segmenter = BrightSegmenter()
    salip = SalipPipeline(segmenter, BrightGrounding())
    plane = volume_pixels()[3]
    embedding = segmenter.encode(plane)
    decisions = salip.run(plane, PROMPT, embedding=embedding).decisions
    assert decisions["presence"] == pytest.approx(230 / 255, abs=1e-3)
    assert decisions["threshold"] == 0.5
    from clipsam.pipelines.timing import StageTimer

    mask, scores = salip.box_decoder(PROMPT)(embedding, np.array([[10, 10, 50, 50]]),
                                             StageTimer())
    np.testing.assert_array_equal(mask, object_mask()[3])
    assert len(scores) == 1
    # a map-sourced MedCLIP-SAM concept decodes no boxes: nothing is propagated
    mapped = MedClipSamPipeline(segmenter, MarginGrounding())
    mapped.text_model.mask_source_for = lambda text: "map"
    assert mapped.box_decoder(PROMPT) is None
