"""``clipsam adapt``: a new concept from a few shots, its threshold, mask source and the
negative bank it is calibrated against."""

import copy
import re
import shutil
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from clipsam.apps import cli
from clipsam.errors import InputError, WeightsError
from clipsam.eval.seen import SEEN_KEY, count_seen
from clipsam.models.grounding import GroundingModel, PresenceRule, load_grounding_model
from clipsam.models.grounding.words import WordRule
from clipsam.models.weights import sha256_of
from clipsam.train.adapt import (
    AdaptConfig,
    Shot,
    adapt,
    adapt_from_folder,
    save_adapted,
    shot_views,
)
from clipsam.train.negative_bank import BANK_FILE, build_bank, load_bank
from clipsam.train.trainer import TrainConfig, train_heads
from conftest import BoxFillingSegmenter
from synthetic_grounding import (
    FEATURES,
    GRID,
    NAMES,
    SMALL,
    ImageSegmenter,
    ShiftingSegmenter,
    direction,
    embedding,
    features_with,
    grid_to_pixels,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    region_data,
    square_target,
    write_labelled_set,
)
from test_grounding import HashEncoder

NEW = NAMES[2]  # "gamma thing": not trained
CONFIG = AdaptConfig(steps=60)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A model trained on alpha and beta, calibrated by hand, saved with its negative bank."""
    train = region_data(0, 48)
    config = TrainConfig(epochs=6, batch_size=4, learning_rate=1e-2, contrastive_draws=2)
    heads, _ = train_heads(train, config, None, HashEncoder(), SMALL, progress=False)
    model = GroundingModel(heads, PresenceRule(4, 0.5), text_encoder=HashEncoder(),
                           concept_thresholds={NAMES[0]: 0.4, NAMES[1]: 0.6},
                           concept_phrases={NAMES[0]: [NAMES[0], "first thing"]},
                           mask_sources={NAMES[1]: "map"})
    folder = tmp_path_factory.mktemp("base")
    model.save(folder)
    build_bank(model, train).save(folder / BANK_FILE)
    return folder


@pytest.fixture
def base(base_dir):
    return load_grounding_model(base_dir, text_encoder=HashEncoder())


def _in_memory(model):
    """The same model without its folder (so without a negative bank)."""
    return GroundingModel(model.heads, model.presence, model.concepts,
                          model.concept_thresholds, HashEncoder(), None, model.metadata,
                          model.concept_phrases, model.mask_sources)


def _shots(count, seed=7, concept=2):
    rng = np.random.default_rng(seed)
    shots = []
    for _ in range(count):
        t = square_target(rng, 6)
        shots.append(Shot(embedding(features_with(t, concept, rng)),
                          np.zeros((64, 64), np.float32), grid_to_pixels(t)))
    return shots


def _negatives(count, seed=11):
    rng = np.random.default_rng(seed)
    return [embedding(features_with(np.zeros((GRID, GRID), np.float32), None, rng))
            for _ in range(count)]


def test_the_bank_round_trips_and_approximates_presence_on_its_images(base, tmp_path):
    data = region_data(2, 16)
    bank = build_bank(base, data, per_set=8)
    bank.save(tmp_path / BANK_FILE)
    loaded = load_bank(tmp_path / BANK_FILE)
    assert loaded.set_names == bank.set_names == ("s0", "s1") * 8
    np.testing.assert_array_equal(loaded.centroids, bank.centroids.astype(np.float16))
    np.testing.assert_array_equal(loaded.sizes, bank.sizes)
    assert (bank.sizes.sum(axis=1) == GRID * GRID).all()  # every cell stands in a centroid
    for c, name in enumerate(NAMES[:2]):
        approx = loaded.presence_scores(base, base.text_vector(name))
        exact = np.array([base.presence_score(data.embedding(i), name) for i in range(16)])
        # close on every image, those with the target (a compact region) included
        assert np.abs(approx - exact).max() < 0.15, name
        positive = (data.concept_index == c) & data.has_target()
        assert approx[~positive].max() < exact[positive].min(), name


@pytest.mark.parametrize("field, value, named", [
    ("views", -1, "views must be 0 or more"), ("steps", 0, "steps >= 1"),
    ("learning_rate", 0.0, "positive learning rate"), ("bank_weight", -0.5, "bank_weight"),
    ("recall", 0.0, "recall must be in (0, 1]"), ("negative_quantile", 1.5, "negative_quantile"),
])
def test_adapt_settings_out_of_range_are_refused_with_their_name(field, value, named):
    with pytest.raises(InputError, match=re.escape(named)):
        AdaptConfig(**{field: value})
    assert getattr(AdaptConfig(), field) != value


def test_the_threshold_keeps_every_left_out_shot(base):
    model = _in_memory(base)
    adapted, report = adapt(model, _shots(4), NEW, BoxFillingSegmenter(), config=CONFIG)
    assert len(report.left_out_scores) == 4
    assert report.threshold == min(report.left_out_scores)
    assert any("no negative bank" in w for w in report.warnings)
    assert any("no image without the target" in w for w in report.warnings)
    assert adapted.threshold_for(NEW) == report.threshold
    assert adapted.mask_source_for(NEW) == report.mask_source == "segmenter"
    assert set(report.source_dice) == {"segmenter", "map", "union"}
    assert adapted.metadata["adapted"] == {NEW: report.to_dict()}
    # the new concept is found on new images with it, and not on images without it
    for shot in _shots(3, seed=8):
        assert adapted.is_present(shot.embedding, NEW)
        prob = adapted.similarity_map(shot.embedding, NEW)
        target = shot.mask.reshape(GRID, 4, GRID, 4).mean(axis=(1, 3)) > 0.5
        assert prob[target].mean() > prob[~target].mean() + 0.3
    for negative in _negatives(3):
        assert not adapted.is_present(negative, NEW)


def test_negatives_below_the_shots_place_the_threshold_between_them(base):
    model, shots = _in_memory(base), _shots(4)
    alone, report_alone = adapt(model, shots, NEW, BoxFillingSegmenter(), config=CONFIG)
    negatives = _negatives(6)
    _, report = adapt(model, shots, NEW, BoxFillingSegmenter(), negatives, CONFIG)
    scores = report.negative_scores["given"]
    assert len(scores) == 6 and report.left_out_scores == report_alone.left_out_scores
    assert np.quantile(scores, CONFIG.negative_quantile) < report.threshold
    assert report.threshold <= min(report.left_out_scores)
    assert report.to_dict()["negatives"]["given"]["not_found"] == 1.0
    # negatives that look like the target never push the threshold above a left-out shot
    lookalikes = [s.embedding for s in _shots(3, seed=9)]
    _, overlapping = adapt(model, shots, NEW, BoxFillingSegmenter(), lookalikes, CONFIG)
    assert overlapping.threshold == min(overlapping.left_out_scores)
    assert any("overlap" in w for w in overlapping.warnings)
    assert alone.threshold_for(NEW) == report_alone.threshold


def test_one_shot_sets_the_threshold_from_itself_with_a_warning(base):
    adapted, report = adapt(_in_memory(base), _shots(1), NEW, BoxFillingSegmenter(),
                            config=CONFIG)
    assert report.threshold == report.left_out_scores[0]
    assert report.mask_source == "segmenter" and report.source_dice == {}
    assert any(w.startswith("1 shot") for w in report.warnings)
    assert adapted.metadata["adapted"][NEW]["warnings"] == report.warnings


def test_the_mask_source_follows_the_left_out_dice(base):
    _, report = adapt(_in_memory(base), _shots(3), NEW, ShiftingSegmenter(), config=CONFIG)
    assert report.mask_source == "map"
    assert report.source_dice["map"] > report.source_dice["segmenter"] + CONFIG.min_gain


def test_adapting_keeps_the_trained_concepts(base):
    probe = region_data(3, 4)
    before = {name: [base.similarity_map(probe.embedding(i), name) for i in range(4)]
              for name in NAMES[:2]}
    adapted, _ = adapt(base, _shots(3), NEW, BoxFillingSegmenter(), config=CONFIG)
    for name, maps in before.items():
        for i, prob in enumerate(maps):
            np.testing.assert_array_equal(adapted.similarity_map(probe.embedding(i), name), prob)
    assert adapted.threshold_for("first thing") == 0.4 and adapted.threshold_for(NAMES[1]) == 0.6
    assert adapted.mask_source_for(NAMES[1]) == "map"
    assert NEW not in base.concepts and NEW not in base.concept_thresholds  # base untouched
    assert adapted.heads is base.heads
    # the adapted concept is one more concept that words reach, by the base model's rule
    base.word_rule = WordRule(0.5, 0.01)
    again, _ = adapt(base, _shots(2), NEW, BoxFillingSegmenter(), config=CONFIG)
    assert again.word_rule == WordRule(0.5, 0.01) and NEW in again.concept_names
    assert again.match(NEW.upper()).concept == NEW


def test_an_adapted_model_saves_with_its_bank_and_adapts_again(base, base_dir, tmp_path):
    adapted, report = adapt(base, _shots(3), NEW, ShiftingSegmenter(), config=CONFIG)
    _, calibration = load_bank(base_dir / BANK_FILE).halves()
    assert len(report.negative_scores["bank"]) == len(calibration.set_names)
    assert not any("no negative bank" in w for w in report.warnings)
    out = save_adapted(adapted, tmp_path / "adapted")
    assert (out / BANK_FILE).read_bytes() == (base_dir / BANK_FILE).read_bytes()
    loaded = load_grounding_model(out, text_encoder=HashEncoder())
    assert loaded.threshold_for("Gamma  Thing") == pytest.approx(report.threshold)
    assert loaded.mask_source_for(NEW) == report.mask_source == "map"
    assert loaded.metadata["adapted"][NEW] == report.to_dict()
    np.testing.assert_allclose(loaded.text_vector(NEW), adapted.text_vector(NEW))
    assert loaded.threshold_for(NAMES[0]) == 0.4
    again, second = adapt(loaded, _shots(2, seed=3, concept=1), "beta variant",
                          BoxFillingSegmenter(), config=replace(CONFIG, steps=20))
    assert "bank" in second.negative_scores
    assert set(again.metadata["adapted"]) == {NEW, "beta variant"}
    assert again.threshold_for(NEW) == loaded.threshold_for(NEW)


def test_the_adapt_command_uses_negatives_and_writes_a_model(base_dir, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.setattr("clipsam.models.sam.load_litemedsam", lambda *a, **k: ImageSegmenter(2))
    monkeypatch.setattr("clipsam.models.grounding.model.SentenceEncoder", HashEncoder)
    labelled = write_labelled_set(tmp_path, "new", 2, ["a", "b", "c", "d"], tmp_path / "c")
    negatives = write_labelled_set(tmp_path, "neg", 2, ["e", "f", "g"], tmp_path / "c",
                                   empty=(0, 1, 2)) / "images"
    out = tmp_path / "out"
    code = cli.main(["-q", "adapt", str(labelled), "--prompt", NEW, "--shots", "3",
                     "--base", str(base_dir), "--negatives", str(negatives), "--out",
                     str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "learned 'gamma thing' from 3 images" in printed
    model = load_grounding_model(out, text_encoder=HashEncoder())
    entry = model.metadata["adapted"][NEW]
    assert entry["negatives"]["given"]["n"] == 3 and "bank" in entry["negatives"]
    assert model.threshold_for(NEW) == pytest.approx(entry["threshold"], abs=1e-4)
    assert (out / BANK_FILE).is_file()
    assert SEEN_KEY not in model.metadata  # the base records no images: it may have seen any
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli.main(["-q", "adapt", str(labelled), "--prompt", NEW, "--shots", "3", "--base",
                     str(base_dir), "--negatives", str(empty), "--out", str(tmp_path / "x")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "holds no image" in error and "\n" not in error
    code = cli.main(["-q", "adapt", str(labelled), "--prompt", NEW, "--base", str(base_dir),
                     "--views", "-1", "--out", str(tmp_path / "y")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "views must be 0 or more" in error and "\n" not in error


def test_an_adapted_model_adds_its_shots_and_negatives_to_the_images_it_saw(
        base_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("clipsam.models.grounding.model.SentenceEncoder", HashEncoder)
    labelled = write_labelled_set(tmp_path, "new", 2, ["a", "b", "c", "d"], tmp_path / "c")
    negatives = write_labelled_set(tmp_path, "neg", 2, ["e", "f"], tmp_path / "c",
                                   empty=(0, 1)) / "images"
    base = load_grounding_model(base_dir, text_encoder=HashEncoder(),
                                segmenter=ImageSegmenter(2))
    base.metadata = {**base.metadata, SEEN_KEY: {"new": ["0" * 64], "old": ["1" * 64]}}
    adapted, chosen, _ = adapt_from_folder(base, labelled, NEW, shots=2, negatives_dir=negatives,
                                           config=replace(CONFIG, steps=5))
    assert len(chosen) == 2
    assert adapted.metadata[SEEN_KEY] == {
        "new": sorted({"0" * 64, *(sha256_of(s.image_path) for s in chosen)}),
        "negatives": sorted(sha256_of(p) for p in negatives.iterdir()),
        "old": ["1" * 64]}
    # what eval --subset test counts: the shots (not the other labelled images) and negatives
    files = sorted((labelled / "images").iterdir())
    assert count_seen(files, adapted.metadata) == 2
    assert count_seen(negatives.iterdir(), adapted.metadata) == 2


def _blind(model):
    """``model`` with a patch head that sees nothing: every cell gets the same vector."""
    heads = copy.deepcopy(model.heads)
    with torch.no_grad():
        heads.patch.out.weight.zero_()
        heads.patch.out.bias.fill_(1.0)
    return GroundingModel(heads, model.presence, text_encoder=HashEncoder())


def _separation(model, prompt, seed=8):
    """Mean map probability on target cells minus off-target cells, over new images."""
    gaps = []
    for shot in _shots(3, seed=seed):
        prob = model.similarity_map(shot.embedding, prompt)
        target = shot.mask.reshape(GRID, 4, GRID, 4).mean(axis=(1, 3)) > 0.5
        gaps.append(prob[target].mean() - prob[~target].mean())
    return float(np.mean(gaps))


def test_the_feature_probe_finds_a_target_the_heads_space_cannot_tell_apart(base):
    blind = _blind(base)
    probe_model, _ = adapt(blind, _shots(4), NEW, BoxFillingSegmenter(), config=CONFIG)
    vector_model, _ = adapt(blind, _shots(4), NEW, BoxFillingSegmenter(),
                            config=replace(CONFIG, probe=False))
    assert NEW in probe_model.concept_probes and NEW not in vector_model.concept_probes
    # the model records which adaptation made each concept
    assert probe_model.metadata["adapted"][NEW]["settings"] == asdict(CONFIG)
    assert vector_model.metadata["adapted"][NEW]["settings"]["probe"] is False
    assert probe_model.concept_probes[NEW].shape == (FEATURES + 1,)
    assert abs(_separation(vector_model, NEW)) < 0.01  # the vector alone sees one cell type
    assert _separation(probe_model, NEW) > 0.3
    # the learned probe reads the target's own feature direction
    weights = probe_model.concept_probes[NEW][:-1]
    cosine = weights @ direction(2) / np.linalg.norm(weights) / np.linalg.norm(direction(2))
    assert cosine > 0.5


def test_probes_round_trip_and_are_checked(base, tmp_path):
    adapted, _ = adapt(base, _shots(3), NEW, BoxFillingSegmenter(), config=CONFIG)
    save_adapted(adapted, tmp_path / "m")
    loaded = load_grounding_model(tmp_path / "m", text_encoder=HashEncoder())
    np.testing.assert_array_equal(loaded.concept_probes[NEW], adapted.concept_probes[NEW])
    shot = _shots(1, seed=5)[0]
    np.testing.assert_allclose(loaded.logit_map(shot.embedding, NEW),
                               adapted.logit_map(shot.embedding, NEW), atol=1e-5)
    without = GroundingModel(adapted.heads, adapted.presence, adapted.concepts,
                             text_encoder=HashEncoder())
    gap = np.abs(without.logit_map(shot.embedding, NEW) - adapted.logit_map(shot.embedding, NEW))
    assert gap.max() > 0.1  # the probe changes the map
    with pytest.raises(WeightsError, match="without a concept vector"):
        GroundingModel(base.heads, concept_probes={"other": np.zeros(FEATURES + 1)})
    with pytest.raises(WeightsError, match=f"must hold {FEATURES + 1} values"):
        GroundingModel(base.heads, concepts={NEW: adapted.concepts[NEW]},
                       concept_probes={NEW: np.zeros(FEATURES)})


def test_the_bank_scores_a_probed_concept_and_an_old_bank_is_not_used_silently(base, base_dir,
                                                                                tmp_path):
    # not trained against the bank: scores spread over the images, so tracking them means
    # something
    adapted, report = adapt(base, _shots(4), NEW, BoxFillingSegmenter(),
                            config=replace(CONFIG, bank_weight=0.0))
    data = region_data(2, 16)
    learned = adapted.concept_probes[NEW]
    exact = np.array([adapted.presence_score(data.embedding(i), NEW) for i in range(16)])
    # one centroid per cell: the bank's score is the exact one, probe included
    fine = build_bank(base, data, per_set=8, clusters=GRID * GRID)
    approx = fine.presence_scores(adapted, adapted.concepts[NEW], learned)
    np.testing.assert_allclose(approx, exact, atol=1e-4)
    coarse = build_bank(base, data, per_set=8).presence_scores(adapted, adapted.concepts[NEW],
                                                               learned)
    assert np.corrcoef(coarse, exact)[0, 1] > 0.9
    assert "bank" in report.negative_scores
    # a bank saved before probes existed (no encoder features): recorded, not used
    old = tmp_path / "old"
    shutil.copytree(base_dir, old)
    replace(load_bank(base_dir / BANK_FILE), features=None).save(old / BANK_FILE)
    with pytest.raises(ValueError, match="no encoder features"):
        load_bank(old / BANK_FILE).presence_scores(adapted, adapted.concepts[NEW], learned)
    _, report = adapt(load_grounding_model(old, text_encoder=HashEncoder()), _shots(4), NEW,
                      BoxFillingSegmenter(), config=CONFIG)
    assert "bank" not in report.negative_scores
    assert any("predates feature probes" in w for w in report.warnings)
    _, vector_only = adapt(load_grounding_model(old, text_encoder=HashEncoder()), _shots(4), NEW,
                           BoxFillingSegmenter(), config=replace(CONFIG, probe=False))
    assert "bank" in vector_only.negative_scores


def test_the_bank_halves_are_disjoint_and_hold_every_set(base, base_dir):
    bank = load_bank(base_dir / BANK_FILE)
    learn, calibrate = bank.halves()
    assert len(learn.set_names) + len(calibrate.set_names) == len(bank.set_names)
    assert set(learn.set_names) == set(calibrate.set_names) == set(bank.set_names)
    rows = [np.flatnonzero((bank.centroids == half.centroids[i]).all(axis=(1, 2)))
            for half in (learn, calibrate) for i in range(len(half.set_names))]
    assert sorted(int(r[0]) for r in rows) == list(range(len(bank.set_names)))


def test_half_the_bank_teaches_the_concept_what_it_is_not(base, base_dir):
    learn, calibrate = load_bank(base_dir / BANK_FILE).halves()
    shots = _shots(4)
    alone, report_alone = adapt(base, shots, NEW, BoxFillingSegmenter(),
                                config=replace(CONFIG, bank_weight=0.0))
    taught, report = adapt(base, shots, NEW, BoxFillingSegmenter(), config=CONFIG)
    # without bank training the whole bank calibrates; with it, only the half not learned from
    assert len(report_alone.negative_scores["bank"]) == len(learn.set_names) + len(
        calibrate.set_names)
    assert len(report.negative_scores["bank"]) == len(calibrate.set_names)
    for half in (learn, calibrate):  # lower on the images learned from, and on the others
        scores = [half.presence_scores(m, m.concepts[NEW], m.concept_probes[NEW]).mean()
                  for m in (alone, taught)]
        assert scores[1] < scores[0] - 0.05
    # the target itself is still found on new images
    for shot in _shots(3, seed=8):
        assert taught.is_present(shot.embedding, NEW)


def test_a_readapted_concept_drops_the_level_and_margin_calibrated_for_its_old_map(base):
    calibrated = GroundingModel(base.heads, base.presence, base.concepts,
                                base.concept_thresholds, HashEncoder(), None, base.metadata,
                                base.concept_phrases, base.mask_sources,
                                map_levels={NAMES[0]: 0.7, NAMES[1]: 0.6},
                                box_margins={NAMES[0]: 0.1, NAMES[1]: 0.05})
    adapted, _ = adapt(calibrated, _shots(3, concept=0), NAMES[0], BoxFillingSegmenter(),
                       config=CONFIG)
    assert adapted.map_level_for(NAMES[0]) is None and adapted.box_margin_for(NAMES[0]) is None
    assert adapted.map_level_for(NAMES[1]) == 0.6 and adapted.box_margin_for(NAMES[1]) == 0.05
    assert calibrated.box_margin_for(NAMES[0]) == 0.1  # the base is untouched


class _FeatureSegmenter(BoxFillingSegmenter):
    """Encodes any image into synthetic features without a target (counts its passes)."""

    def encode(self, image):
        self.encoded += 1
        rng = np.random.default_rng(self.encoded)
        return embedding(features_with(np.zeros((GRID, GRID), np.float32), None, rng))


def test_shot_views_are_reproducible_aligned_crops_encoded_once_each():
    mask = np.zeros((64, 64), bool)
    mask[20:40, 8:30] = True
    # the target is the bright part of the image, so a view's mask must be its bright part
    shot = replace(_shots(1)[0], image=np.where(mask, 900.0, 100.0).astype(np.float32),
                   mask=mask)
    segmenter = _FeatureSegmenter()
    views = shot_views(shot, 0, segmenter, 3)
    assert len(views) == 3 and segmenter.encoded == 3
    for view in views:
        assert view.image.shape == view.mask.shape and view.image.dtype == np.uint8
        assert min(view.mask.shape) >= round(64 * 0.7)
        assert np.array_equal(view.image > 127, view.mask)
    again = shot_views(shot, 0, _FeatureSegmenter(), 3)
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
               for a, b in zip(views, again, strict=True))
    other = shot_views(shot, 1, _FeatureSegmenter(), 1)[0]
    assert other.image.shape != views[0].image.shape or not np.array_equal(other.image,
                                                                           views[0].image)


def test_views_are_learned_beside_their_shot_and_left_out_with_it(base, monkeypatch):
    import clipsam.train.adapt as adapt_module

    sizes = []
    learn = adapt_module.learn_concept

    def recording(model, embeddings, masks, *args, **kwargs):
        sizes.append(len(embeddings))
        return learn(model, embeddings, masks, *args, **kwargs)

    monkeypatch.setattr(adapt_module, "learn_concept", recording)
    segmenter = _FeatureSegmenter()
    _, report = adapt(_in_memory(base), _shots(4), NEW, segmenter,
                      config=replace(CONFIG, views=2))
    # all 4 shots with 2 views each, then each shot left out with its views
    assert sizes == [12, 9, 9, 9, 9]
    assert segmenter.encoded == 8
    assert len(report.left_out_scores) == 4 and report.settings["views"] == 2
