"""The shipped examples and the shared evaluation sets through the reader, and gt-box with the
real LiteMedSAM weights."""

from __future__ import annotations

import numpy as np
import pytest

from clipsam.eval.dataset import load_case, open_dataset
from clipsam.eval.gt_box import GtBoxOracle
from clipsam.eval.harness import evaluate
from clipsam.eval.methods import Method
from clipsam.io.image import segmenter_input

SETS = ("hc18", "busi", "cxr_lungs", "lgg_flair", "kvasir_polyp")


def test_examples_are_an_evaluation_set_with_spacing(examples_dir):
    dataset = open_dataset(examples_dir)
    assert [case.id for case in dataset] == ["002_HC", "008_HC"]
    for case in dataset:
        loaded = load_case(case)
        assert loaded.image.size == (270, 400) and loaded.mask.any()
        assert loaded.spacing is not None and 0.1 < loaded.spacing[0] < 0.2


@pytest.mark.parametrize("name", SETS)
def test_shared_sets_open_and_their_first_case_loads(shared_data, name):
    dataset = open_dataset(shared_data / name)
    assert len(dataset) >= 100
    loaded = load_case(dataset.cases[0])
    assert loaded.mask.shape == loaded.image.size
    assert (loaded.spacing is not None) == (name == "hc18")


@pytest.mark.slow
def test_gt_box_with_litemedsam_on_the_examples(examples_dir, litemedsam, tmp_path):
    oracle = GtBoxOracle(litemedsam)
    method = Method("gt-box", lambda image, reference, prompt: oracle.run(image, reference))
    summary = evaluate(open_dataset(examples_dir), method, tmp_path / "out", progress=False)
    assert summary["n"] == 2 and summary["n_failed"] == 0
    assert summary["dice_mean"] > 0.85 and summary["nsd_mean"] > 0.8
    # the embedding is reusable: decoding again from it gives the same mask
    loaded = load_case(open_dataset(examples_dir).cases[0])
    image = segmenter_input(loaded.image)
    embedding = litemedsam.encode(image)
    first = oracle.run(image, loaded.mask, embedding=embedding)
    again = oracle.run(image, loaded.mask, embedding=embedding)
    np.testing.assert_array_equal(first.mask, again.mask)
