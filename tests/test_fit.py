"""From labelled sets with cached embeddings to a saved, calibrated grounding model."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clipsam.errors import InputError
from clipsam.eval.seen import SEEN_KEY
from clipsam.io.labelled_sets import Sample, list_samples
from clipsam.io.splits import calibration_of
from clipsam.models.grounding import load_grounding_model
from clipsam.models.grounding.model import MASK_SOURCES
from clipsam.models.weights import sha256_of
from clipsam.train.captions import Concept
from clipsam.train.fit import fit_from_samples, recipe_concepts
from clipsam.train.negative_bank import BANK_FILE, load_bank
from clipsam.train.recipes import RECIPES, Recipe, recipe_named
from clipsam.train.trainer import TrainConfig
from conftest import BoxFillingSegmenter
from synthetic_grounding import (
    NAMES,
    SMALL,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    synthetic_store,
    write_labelled_set,
)
from test_grounding import HashEncoder

TINY = Recipe("tiny", train=TrainConfig(epochs=2, batch_size=4, learning_rate=1e-2,
                                        contrastive_draws=2),
              heads=SMALL, calibration_fraction=0.3)


def _subjects(held: int, kept: int, fraction: float) -> tuple[list[str], list[str]]:
    """``held`` subject ids that :func:`calibration_of` holds out and ``kept`` it does not."""
    out: tuple[list[str], list[str]] = ([], [])
    for i in range(1000):
        name = f"subject{i}"
        side = out[0] if calibration_of(Sample("x", "x", name, None, None), fraction) else out[1]
        side.append(name)
        if len(out[0]) >= held and len(out[1]) >= kept:
            return out[0][:held], out[1][:kept]
    raise AssertionError("no split found")


def test_fit_trains_on_some_subjects_calibrates_on_the_others_and_saves(tmp_path):
    held, kept = _subjects(2, 4, TINY.calibration_fraction)
    cache = tmp_path / "cache"
    # s0: a held-out subject with two images, s1 shares a held-out subject with s0
    write_labelled_set(tmp_path, "s0", 0, [held[0], held[0], *kept[:3], kept[0]], cache,
                       empty=(5,))
    write_labelled_set(tmp_path, "s1", 1, [held[1], held[0], *kept[1:4]], cache, seed=1)
    samples = list_samples(tmp_path / "s0") + list_samples(tmp_path / "s1")
    concepts = {f"s{i}": Concept(NAMES[i], (NAMES[i], f"synonym {i}")) for i in range(2)}
    out = tmp_path / "model"
    segmenter = BoxFillingSegmenter()
    model = fit_from_samples(samples, synthetic_store(cache), concepts, TINY, out,
                             segmenter=segmenter, encoder=HashEncoder(),
                             metadata={"data": "synthetic"}, progress=False)
    assert segmenter.encoded == 0  # every embedding was in the store
    info = json.loads((out / "training.json").read_text())
    assert info["subjects"] == {
        "s0": {"train": sorted(kept[:3]), "calibration": [held[0]]},
        "s1": {"train": sorted(kept[1:4]), "calibration": sorted(held[:2])},
    }
    # the content of every training and calibration image file, for eval --subset test
    assert info[SEEN_KEY] == {name: sorted(sha256_of(s.image_path) for s in samples
                                           if s.set_name == name) for name in ("s0", "s1")}
    assert info["train_images"] == 7 and info["calibration_images"] == 4
    assert info["recipe"] == "tiny" and info["data"] == "synthetic"
    assert info["concepts"] == list(NAMES[:2])
    assert [p["epoch"] for p in info["curve"]] == [1, 2]
    assert set(info["curve"][-1]["validation"]) == {"s0", "s1"}
    assert set(info["calibration"]["presence"]) == set(NAMES[:2])
    assert set(info["calibration"]["mask_source"]) == set(NAMES[:2])
    assert model.metadata == info
    # thresholds, mask sources and phrases are saved and read back
    loaded = load_grounding_model(out, text_encoder=HashEncoder())
    assert set(loaded.concept_thresholds) == set(NAMES[:2])
    assert loaded.concept_thresholds == pytest.approx(model.concept_thresholds)
    assert loaded.presence == model.presence
    assert loaded.mask_sources == model.mask_sources
    assert set(loaded.mask_sources) == set(NAMES[:2])
    assert set(loaded.mask_sources.values()) <= set(MASK_SOURCES)
    # box margins are calibrated for the concepts the segmenter decodes, and saved
    decoded = {c for c, s in loaded.mask_sources.items() if s != "map"}
    assert decoded and set(info["calibration"]["box_margin"]) == decoded
    assert loaded.box_margins == {c: e["chosen"] for c, e in
                                  info["calibration"]["box_margin"].items() if e["chosen"]}
    assert loaded.threshold_for("Synonym 0") == loaded.concept_thresholds["alpha thing"]
    for concept, entry in info["calibration"]["presence"].items():
        assert entry["threshold"] == pytest.approx(loaded.concept_thresholds[concept], abs=1e-4)
        assert entry["recall"] >= TINY.calibrate.recall
    bank = load_bank(out / BANK_FILE)
    assert sorted(bank.set_names) == ["s0"] * 4 + ["s1"] * 3  # the training images
    assert bank.sizes is not None and bank.centroids.shape[:2] == bank.sizes.shape


def test_fit_without_calibration_subjects_warns_and_keeps_the_default(tmp_path):
    _, kept = _subjects(0, 3, TINY.calibration_fraction)
    cache = tmp_path / "cache"
    write_labelled_set(tmp_path, "s0", 0, kept, cache)
    samples = list_samples(tmp_path / "s0")
    model = fit_from_samples(samples, synthetic_store(cache),
                             {"s0": Concept(NAMES[0], (NAMES[0],))}, TINY, None,
                             encoder=HashEncoder(), progress=False)
    assert model.presence.threshold == 0.5 and not model.concept_thresholds
    assert any("no calibration subjects" in w for w in model.metadata["warnings"])
    assert model.metadata["subjects"] == {"s0": {"train": sorted(kept)}}


def test_only_covisible_recipes_train_always_shown_targets_as_present():
    concepts = {"s0": Concept("alpha thing", ("alpha thing",), may_show=("s2",),
                              always_shows=("s1",)),
                "s1": Concept("beta thing", ("beta thing",))}
    earlier = recipe_concepts(concepts, RECIPES["builtin-xlong"])
    assert earlier["s0"].may_show == ("s2", "s1") and earlier["s0"].always_shows == ()
    assert recipe_concepts(concepts, RECIPES["anatomy"]) == concepts


def test_recipes_are_named():
    # the name a model records (metadata "recipe") finds the recipe that made it
    for name, recipe in RECIPES.items():
        assert recipe_named(name) is recipe and recipe.name == name
    with pytest.raises(InputError, match="builtin"):
        recipe_named("fancy")


def test_a_recipe_with_presence_heads_fits_them_and_calibrates_every_point(tmp_path):
    from dataclasses import replace

    from clipsam.train.presence_head import PresenceHeadConfig

    held, kept = _subjects(2, 6, TINY.calibration_fraction)
    cache = tmp_path / "cache"
    write_labelled_set(tmp_path, "s0", 0, [held[0], *kept[:5], held[1]], cache, empty=(3, 6))
    write_labelled_set(tmp_path, "s1", 1, [held[1], *kept[2:6]], cache, seed=1)
    samples = list_samples(tmp_path / "s0") + list_samples(tmp_path / "s1")
    concepts = {f"s{i}": Concept(NAMES[i], (NAMES[i],)) for i in range(2)}
    recipe = replace(TINY, presence_head=PresenceHeadConfig(folds=2))
    out = tmp_path / "model"
    model = fit_from_samples(samples, synthetic_store(cache), concepts, recipe, out,
                             encoder=HashEncoder(), progress=False)
    info = model.metadata["calibration"]
    # fitted on the training part: 5 + 4 images, s0's image 3 without its target
    head = info["presence_head"]
    assert head[NAMES[0]]["n_present"] == 4 and head[NAMES[0]]["n_empty"] == 1
    assert head[NAMES[0]]["n_other_sets"] == 4 and "penalty" in head[NAMES[1]]
    # each concept's statistic is chosen and recorded; only chosen heads are kept
    for name in NAMES[:2]:
        assert info["presence"][name]["statistic"] == model.statistic_of(name)
        assert set(info["presence"][name]["auc"]) == {"map", "head"}
    assert set(model.presence_heads) == set(model.presence_statistics)
    assert set(model.presence_statistics.values()) <= {"head"}
    # every operating point, per concept and model-wide, ordered
    assert set(model.concept_points) == set(model.concept_thresholds) == set(NAMES[:2])
    for name, points in model.concept_points.items():
        assert model.concept_thresholds[name] <= points["balanced"] <= points["precision"]
    assert model.presence.balanced is not None and model.presence.precision is not None
    assert info["presence_model_wide"]["recall"]["threshold"] == pytest.approx(
        model.presence.threshold, abs=1e-4)
    loaded = load_grounding_model(out, text_encoder=HashEncoder())
    assert loaded.concept_points == model.concept_points
    assert loaded.presence_statistics == model.presence_statistics


def one_set(tmp_path) -> tuple[list[Sample], Path, dict[str, Concept]]:
    """A labelled set "s0" of one calibration subject and four training ones: its samples,
    its embedding cache and its concept."""
    held, kept = _subjects(1, 4, TINY.calibration_fraction)
    cache = tmp_path / "cache"
    write_labelled_set(tmp_path, "s0", 0, [held[0], *kept], cache)
    return list_samples(tmp_path / "s0"), cache, {"s0": Concept(NAMES[0], (NAMES[0],))}


def test_a_recipe_with_init_starts_from_that_models_heads_and_records_them(tmp_path):
    samples, cache, concepts = one_set(tmp_path)
    first = tmp_path / "first"
    fit_from_samples(samples, synthetic_store(cache), concepts, TINY, first,
                     encoder=HashEncoder(), progress=False)
    # a learning rate of zero keeps the starting weights: they are the first model's
    still = Recipe("still", train=replace(TINY.train, learning_rate=0.0, weight_decay=0.0),
                   heads=SMALL, calibration_fraction=0.3, init="tiny")
    model = fit_from_samples(samples, synthetic_store(cache), concepts, still, tmp_path / "second",
                             encoder=HashEncoder(), progress=False, init=first)
    start = load_grounding_model(first, text_encoder=HashEncoder()).heads.state_dict()
    for name, tensor in model.heads.state_dict().items():
        assert torch.equal(tensor, start[name]), name
    assert model.metadata["init"] == {"model": str(first), "recipe": "tiny",
                                      "heads_sha256": sha256_of(first / "heads.safetensors")}
    # no folder, a model of another recipe, other heads, or --init for a recipe without one
    for recipe, init, message in (
            (still, None, "give its folder with --init"),
            (replace(still, init="other"), first, "made by recipe 'tiny'"),
            (replace(still, heads=replace(SMALL, hidden_dim=SMALL.hidden_dim * 2)), first,
             "heads settings differ"),
            (TINY, first, "--init is not used")):
        with pytest.raises(InputError, match=message):
            fit_from_samples(samples, synthetic_store(cache), concepts, recipe, None,
                             encoder=HashEncoder(), progress=False, init=init)
