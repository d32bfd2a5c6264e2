"""Calibrating the volume settings: one pass per volume scores every candidate, the groups are
chosen in turn with the project's chooser, and the block lands in the model's config.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipsam.config import VolumeConfig
from clipsam.errors import WeightsError
from clipsam.eval.metrics import SliceDetection
from clipsam.models.grounding.model import load_grounding_model, save_volume_settings
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.pipelines.volume import NEUTRAL, resolve_settings
from clipsam.train.volume_calibration import (
    DEFAULT,
    Key,
    VolumeCalibrationConfig,
    VolumeScore,
    calibrate_volumes,
    choose_volume_settings,
)
from synthetic_volume import (
    PROMPT,
    BrightSegmenter,
    MarginGrounding,
    object_mask,
    volume_pixels,
)
from test_provenance import grounding_copy
from test_volume import phantom

SMALL = VolumeCalibrationConfig(smoothings=(0.0, 1.0), holds=(0.0, 2.0), reaches=(0, 2),
                                margins=(0.0, 0.1))


def scored(table: dict[Key, float], hits: dict[Key, int] | None = None,
           ref: int = 10) -> dict[Key, VolumeScore]:
    """Made-up scores: each candidate's Dice, reaching ``hits`` (default all) of ``ref``
    target slices."""
    hits = hits or {}
    return {key: VolumeScore(value, SliceDetection(ref=ref, pred=ref, hit=hits.get(key, ref)))
            for key, value in table.items()}


def test_the_groups_are_chosen_in_turn_each_against_its_neutral_default():
    keys = SMALL.candidates()
    # reach 0 takes no margin; four min_component values
    assert DEFAULT in keys and len(keys) == 2 * 2 * (1 + 2) * 2 * 4
    base = dict.fromkeys(keys, 0.5)
    a = dict(base)
    a[(1.0, 0.0, 0, 0.0, False, 0.0)] = 0.52  # smoothing alone: +0.01 on average
    a[(1.0, 0.0, 2, 0.1, False, 0.0)] = 0.7  # smoothing with propagation: +0.1
    a[(1.0, 2.0, 2, 0.1, False, 0.0)] = 0.71  # then a hold: +0.005, below min_gain
    a[(1.0, 0.0, 2, 0.1, True, 0.0)] = 0.74  # then the clean-up: +0.02
    a[(1.0, 0.0, 2, 0.1, True, 0.25)] = 0.8  # then minor components: +0.03
    a[(1.0, 0.0, 2, 0.1, False, 0.5)] = 0.95  # never reached: clean-up was chosen
    a[(0.0, 2.0, 0, 0.0, True, 0.0)] = 0.9  # never reached: smoothing 0 was not chosen
    table = {"a": scored(a), "b": scored(base)}
    settings, report = choose_volume_settings(table, SMALL)
    assert settings == {"smoothing": 1.0, "hold": 0.0, "reach": 2, "margin": 0.1,
                        "cleanup": True, "min_component": 0.25}
    assert report["dice_slices"] == 0.5 and report["dice_chosen"] == 0.65
    assert report["steps"]["min_component"]["0.25"] == {"dice": 0.65, "slice_recall": 1.0}
    assert report["steps"]["smoothing reach margin"]["1.0 2 0.1"]["dice"] == 0.6
    assert {k: v["dice"] for k, v in report["steps"]["hold"].items()} == {"0.0": 0.6,
                                                                         "2.0": 0.605}
    equal = {"a": scored(base)}
    assert choose_volume_settings(equal, SMALL)[0] == NEUTRAL  # nothing gains: slice by slice


def test_a_candidate_that_loses_slice_recall_is_never_chosen():
    base = dict.fromkeys(SMALL.candidates(), 0.5)
    best, second = (0.0, 0.0, 0, 0.0, False, 0.5), (0.0, 0.0, 0, 0.0, False, 0.25)
    dices = {**base, best: 0.9, second: 0.6}
    # the best Dice drops 3 of 20 target slices (recall 0.85), the second 0 of 20
    table = {"a": scored(dices, {best: 7}), "b": scored(dices, {best: 10})}
    settings, report = choose_volume_settings(table, SMALL)
    assert settings["min_component"] == 0.25
    assert report["steps"]["min_component"]["0.5"] == {
        "dice": 0.9, "slice_recall": 0.85, "ruled_out": "loses slice recall"}
    assert report["slice_recall_slices"] == report["slice_recall_chosen"] == 1.0
    # within max_recall_loss (one slice of 50: 0.98) the best is chosen
    table = {"a": scored(dices, {best: 49}, ref=50)}
    assert choose_volume_settings(table, SMALL)[0]["min_component"] == 0.5


def test_calibration_on_synthetic_volumes_finds_the_consistent_settings():
    segmenter = BrightSegmenter()
    pipeline = MedClipSamPipeline(segmenter, MarginGrounding(volume=None))
    volumes = [(f"v{shift}", phantom(np.roll(volume_pixels(), shift, axis=2)),
                np.roll(object_mask(), shift, axis=2)) for shift in (0, 5)]
    settings, report = calibrate_volumes(pipeline, segmenter, volumes, PROMPT, SMALL)
    assert segmenter.encoded == 32  # one encoder pass per slice for every candidate
    assert settings["smoothing"] == 1.0 and settings["reach"] == 2
    assert report["dice_chosen"] == 1.0 > report["dice_slices"] + 0.05
    assert report["prompt"] == PROMPT and report["n_volumes"] == 2
    assert set(report["per_volume"]) == {"v0", "v5"}


def test_the_block_is_saved_in_the_model_and_read_by_the_pipeline(tmp_path):
    folder = grounding_copy(tmp_path)
    heads = (folder / "heads.safetensors").read_bytes()
    block = {"smoothing": 1.0, "hold": 0.0, "reach": 2, "margin": 0.1, "cleanup": True}
    save_volume_settings(folder, block, {"n_volumes": 2})
    config = json.loads((folder / "config.json").read_text())
    assert config["volume"] == block and config["metadata"]["calibration"]["volume"] == {
        "n_volumes": 2}
    assert (folder / "heads.safetensors").read_bytes() == heads
    model = load_grounding_model(folder)
    assert model.volume == block
    settings = resolve_settings(VolumeConfig(), model.volume)
    assert settings.origin["reach"] == "calibrated" and settings.reach == 2
    with pytest.raises(WeightsError, match="unknown volume setting"):
        save_volume_settings(folder, {"depth": 3}, {})
