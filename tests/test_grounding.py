import hashlib

import numpy as np
import pytest
import torch

from clipsam.errors import InputError, WeightsError
from clipsam.models.grounding import (
    GroundingHeads,
    GroundingModel,
    HeadsConfig,
    PresenceRule,
    load_grounding_model,
)
from clipsam.models.grounding.grid import (
    boxes_to_grid,
    grid_box_to_image,
    mask_to_grid,
    valid_mask,
)
from clipsam.models.grounding.model import presence_from_logits
from clipsam.models.image_text import DenseGrounding, ImageTextModel
from clipsam.models.segmenter import Geometry, ImageEmbedding

SMALL = HeadsConfig(feature_dim=16, text_dim=24, hidden_dim=8, embed_dim=8, dilations=(1, 2))


class HashEncoder:
    """A deterministic stand-in for the sentence encoder (no model load)."""

    dim = 24

    def __call__(self, texts):
        out = []
        for text in texts:
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=self.dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32).reshape(len(texts), self.dim)


def _model(seed=0, presence=None, **kwargs):
    torch.manual_seed(seed)
    return GroundingModel(GroundingHeads(SMALL), presence or PresenceRule(2, 0.5),
                          text_encoder=HashEncoder(), **kwargs)


def _embedding(seed=0, original=(40, 80), grid=16):
    rng = np.random.default_rng(seed)
    h, w = original
    scale = 64 / max(h, w)
    geometry = Geometry(original, (round(h * scale), round(w * scale)), 64)
    return ImageEmbedding(rng.normal(size=(1, 16, grid, grid)).astype(np.float32), geometry,
                          "test")


def test_grid_helpers_map_masks_and_boxes():
    emb = _embedding()
    valid = valid_mask(emb.geometry, 16)
    assert valid[:8].all() and not valid[8:].any()
    full = mask_to_grid(np.ones((40, 80), bool), emb.geometry, 16)
    np.testing.assert_allclose(full[valid], 1.0, atol=1e-6)
    assert full[~valid].max() == 0
    left = np.zeros((40, 80), bool)
    left[:, :40] = True
    frac = mask_to_grid(left, emb.geometry, 16)
    assert frac[:8, :7].min() > 0.99 and frac[:8, 9:].max() < 0.01
    box = grid_box_to_image(np.array([0, 0, 8, 4]), emb.geometry, 16)
    np.testing.assert_allclose(box, [0, 0, 40, 20], atol=1e-4)
    cells = boxes_to_grid(np.array([box, [41, 21, 42, 22]]), emb.geometry, 16)
    assert cells[0].sum() == 32 and cells[0][:4, :8].all()  # the inverse of grid_box_to_image
    assert cells[1].sum() == 1 and cells[1][4, 8]  # a box inside one cell touches it alone


def test_model_implements_the_shared_interfaces():
    model = _model()
    assert isinstance(model, ImageTextModel) and isinstance(model, DenseGrounding)
    text = model.encode_text(["fetal head", "polyp"])
    assert text.shape == (2, 8) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)


def test_similarity_map_is_a_probability_on_the_valid_region_only():
    model, emb = _model(), _embedding()
    prob = model.similarity_map(emb, "fetal head")
    valid = valid_mask(emb.geometry, 16)
    assert prob.shape == (16, 16) and prob.dtype == np.float32
    assert (prob[~valid] == 0).all() and (prob[valid] > 0).all() and (prob <= 1).all()
    assert not np.allclose(prob[valid], model.similarity_map(emb, "polyp")[valid])


def test_presence_is_the_sigmoid_of_the_mean_top_k_logit_inside_the_image():
    emb = _embedding()
    model = _model()
    score = model.presence_score(emb, "lungs")
    logits = model.logit_map(emb, "lungs")
    valid = valid_mask(emb.geometry, 16)
    top = np.sort(logits[valid])[-2:].mean()
    assert score == pytest.approx(1 / (1 + np.exp(-top)), abs=1e-6)
    # not the mean of the top-k probabilities (the old rule): the two differ on this map
    prob = model.similarity_map(emb, "lungs")
    assert abs(score - np.sort(prob[valid])[-2:].mean()) > 1e-4
    np.testing.assert_allclose(prob[valid], 1 / (1 + np.exp(-logits[valid])), atol=1e-6)
    assert _model(presence=PresenceRule(2, score - 1e-4)).is_present(emb, "lungs")
    assert not _model(presence=PresenceRule(2, score + 1e-4)).is_present(emb, "lungs")


def test_presence_from_logits_ignores_padding_and_caps_k():
    logits = np.array([[4.0, 2.0, 99.0], [0.0, -2.0, 99.0]])
    valid = np.array([[True, True, False], [True, True, False]])
    assert presence_from_logits(logits, valid, 2) == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert presence_from_logits(logits, valid, 10) == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_region_scores_are_soft_dice_with_the_map():
    model, emb = _model(), _embedding()
    masks = np.zeros((3, 40, 80), bool)
    masks[0, :, :40] = True
    masks[1, :, 40:] = True
    scores = model.region_scores(emb, masks, ["brain tumour", "glioma"])
    prob = (model.similarity_map(emb, "brain tumour") + model.similarity_map(emb, "glioma")) / 2
    cover = mask_to_grid(masks[0], emb.geometry, 16)
    dice = 2 * (cover * prob).sum() / (cover.sum() + prob.sum())
    assert scores[0] == pytest.approx(dice, abs=1e-5)
    assert scores[2] == 0.0 and scores[0] != pytest.approx(scores[1])
    with pytest.raises(InputError):
        model.region_scores(emb, masks[0], ["x"])
    with pytest.raises(InputError):
        model.region_scores(emb, masks, [])


def test_the_region_covering_the_whole_target_and_little_else_scores_highest():
    model, emb = _model(), _embedding(original=(64, 64))
    hot = np.zeros((16, 16), np.float32)
    hot[4:8, 4:8] = 0.95
    model.similarity_map = lambda embedding, text: hot  # a known map
    target = np.zeros((64, 64), bool)
    target[16:32, 16:32] = True
    part, larger = np.zeros_like(target), np.zeros_like(target)
    part[16:24, 16:32] = True
    larger[8:40, 8:40] = True
    scores = model.region_scores(emb, np.stack([part, target, larger, ~target]), ["x"])
    assert scores.argmax() == 1
    assert scores[1] > 0.95 and scores[3] < 0.05


def test_bad_inputs_are_one_line_errors():
    model = _model()
    with pytest.raises(InputError):
        model.similarity_map(_embedding(), "   ")
    wrong = ImageEmbedding(np.zeros((1, 3, 16, 16), np.float32), _embedding().geometry, "x")
    with pytest.raises(InputError):
        model.similarity_map(wrong, "lungs")


def _calibrated(**kwargs):
    return _model(presence=PresenceRule(2, 0.5),
                  concept_thresholds={"fetal head": 0.8, "My Organ": 0.3},
                  concept_phrases={"fetal head": ["fetal head", "Fetal Skull",
                                                  "head of the fetus"]},
                  mask_sources={"fetal head": "map", "my organ": "union"}, **kwargs)


def test_a_prompt_uses_its_concepts_threshold_and_mask_source():
    model = _calibrated()
    model.concepts["my organ"] = np.eye(8, dtype=np.float32)[0]
    for prompt in ("fetal head", "FETAL  skull", "head of the fetus"):
        assert model.concept_of(prompt) == "fetal head"
        assert model.threshold_for(prompt) == 0.8
        assert model.mask_source_for(prompt) == "map"
    assert model.concept_of("my  organ") == "my organ"
    assert model.threshold_for("My organ") == 0.3 and model.mask_source_for("my organ") == "union"
    # an unknown prompt (even one containing a known phrase) gets the model-wide rule
    for prompt in ("polyp", "fetal head circumference"):
        assert model.concept_of(prompt) is None
        assert model.threshold_for(prompt) == 0.5
        assert model.mask_source_for(prompt) == "segmenter"
    emb = _embedding()
    # a phrase is grounded as its concept: the concept name's score against its threshold
    score = model.presence_score(emb, "fetal head")
    assert score != pytest.approx(model.presence_score(emb, "fetal skull"))
    for threshold in (score - 1e-4, score + 1e-4):
        model.concept_thresholds["fetal head"] = threshold
        assert model.is_present(emb, "fetal skull") == (score >= threshold)
    # a concept calibrated without phrases is still known by its name
    bare = _model(concept_thresholds={"lungs": 0.7}, mask_sources={"heart": "union"})
    assert bare.concept_of("Lungs") == "lungs" and bare.threshold_for("Lungs") == 0.7
    assert bare.mask_source_for("the heart") == "segmenter"
    assert bare.mask_source_for("heart") == "union" and bare.threshold_for("heart") == 0.5


def test_an_unknown_mask_source_or_a_level_outside_0_1_is_a_weights_error():
    with pytest.raises(WeightsError, match="mask source"):
        _model(mask_sources={"fetal head": "sam"})
    with pytest.raises(WeightsError, match="map levels"):
        _model(map_levels={"fetal head": 1.0})
    with pytest.raises(WeightsError, match="box margins"):
        _model(box_margins={"fetal head": -0.1})


def test_save_and_load_round_trip(tmp_path):
    model = _calibrated()
    model = GroundingModel(model.heads, PresenceRule(3, 0.42), model.concepts,
                           model.concept_thresholds, HashEncoder(), None, {"note": "x"},
                           model.concept_phrases, model.mask_sources,
                           map_levels={"Fetal Head": 0.7}, box_margins={"fetal head": 0.1})
    model.concepts["my organ"] = np.eye(8, dtype=np.float32)[0]
    model.save(tmp_path / "m")
    loaded = load_grounding_model(tmp_path / "m", text_encoder=HashEncoder())
    assert loaded.source_dir == tmp_path / "m" and model.source_dir is None
    emb = _embedding(1)
    for text in ("fetal head", "My  Organ"):
        np.testing.assert_allclose(loaded.similarity_map(emb, text),
                                   model.similarity_map(emb, text), atol=1e-6)
    assert loaded.presence == PresenceRule(3, 0.42)
    assert loaded.concept_thresholds == {"fetal head": 0.8, "my organ": 0.3}
    assert loaded.concept_phrases == model.concept_phrases
    assert loaded.mask_sources == {"fetal head": "map", "my organ": "union"}
    assert loaded.map_levels == {"fetal head": 0.7}
    assert loaded.map_level_for("fetal skull") == 0.7 and loaded.map_level_for("my organ") is None
    assert loaded.box_margins == {"fetal head": 0.1}
    assert loaded.box_margin_for("fetal skull") == 0.1 and loaded.box_margin_for("my organ") is None
    assert loaded.metadata == {"note": "x"}
    assert loaded.threshold_for("fetal skull") == 0.8
    np.testing.assert_allclose(loaded.text_vector("my organ"), np.eye(8)[0])
    size = sum(p.stat().st_size for p in (tmp_path / "m").iterdir())
    assert size < 1_000_000


def test_loading_a_folder_that_is_not_a_model_fails_clearly(tmp_path):
    with pytest.raises(WeightsError, match="not a grounding model"):
        load_grounding_model(tmp_path)


def test_a_dense_head_mixes_channels_and_round_trips_through_torch_and_onnx(tmp_path):
    dense = HeadsConfig(feature_dim=16, text_dim=24, hidden_dim=8, embed_dim=8,
                        dilations=(1, 2), depthwise=False)
    torch.manual_seed(0)
    heads = GroundingHeads(dense)
    spatial = heads.patch.blocks[0].spatial
    assert spatial.groups == 1 and spatial.weight.shape == (8, 8, 3, 3)
    assert GroundingHeads(SMALL).patch.blocks[0].spatial.weight.shape == (8, 1, 3, 3)
    model = GroundingModel(heads, PresenceRule(2, 0.5), text_encoder=HashEncoder())
    model.save(tmp_path / "m")
    emb = _embedding(2, grid=64)
    for runtime in ("torch", "onnx"):
        loaded = load_grounding_model(tmp_path / "m", text_encoder=HashEncoder(), runtime=runtime)
        assert HeadsConfig.from_dict(loaded.heads_config).depthwise is False
        np.testing.assert_allclose(loaded.similarity_map(emb, "fetal head"),
                                   model.similarity_map(emb, "fetal head"), atol=1e-4)


def _with_points(**kwargs):
    """A model calibrated at every operating point: 'fetal head' has its own points."""
    return _model(presence=PresenceRule(2, 0.5, 0.6, 0.7),
                  concept_thresholds={"fetal head": 0.8, "adapted thing": 0.3},
                  concept_points={"fetal head": {"balanced": 0.85, "precision": 0.9}},
                  concept_phrases={"fetal head": ["fetal skull"]}, **kwargs)


def test_each_operating_point_has_its_threshold_and_results_record_it():
    model = _with_points()
    assert [model.threshold_for("fetal skull", p) for p in ("recall", "balanced", "precision")] \
        == [0.8, 0.85, 0.9]
    # a prompt reaching no concept: the model-wide points
    assert [model.threshold_for("liver", p) for p in ("recall", "balanced", "precision")] \
        == [0.5, 0.6, 0.7]
    # a concept with only its own recall threshold (adapted) refuses the other points
    with pytest.raises(InputError, match=r"'adapted thing'.*no 'balanced'.*--presence recall"):
        model.threshold_for("adapted thing", "balanced")
    with pytest.raises(InputError, match="unknown presence operating point 'strict'"):
        model.reach(_embedding(), "fetal head", "strict")
    emb = _embedding()
    score = model.presence_score(emb, "fetal head")
    for point, threshold in (("recall", 0.8), ("precision", 0.9)):
        match = model.reach(emb, "fetal skull", point)
        decisions = match.decisions()
        assert decisions["presence_point"] == point and decisions["threshold"] == threshold
        assert decisions["presence_statistic"] == "map"
        assert match.present == (score >= threshold)


def test_a_model_without_operating_points_refuses_them_naming_the_model(tmp_path):
    old = _calibrated()
    old.save(tmp_path / "old")
    loaded = load_grounding_model(tmp_path / "old", text_encoder=HashEncoder())
    assert loaded.threshold_for("fetal head", "recall") == 0.8  # today's behaviour
    for point in ("balanced", "precision"):
        with pytest.raises(InputError, match=f"{tmp_path / 'old'}.*no '{point}' presence point"):
            loaded.reach(_embedding(), "fetal head", point)
    with pytest.raises(WeightsError, match="both or none"):
        _model(presence=PresenceRule(2, 0.5, 0.6, None))
    with pytest.raises(WeightsError, match="model-wide"):
        _model(concept_points={"fetal head": {"balanced": 0.85, "precision": 0.9}})


def test_a_presence_head_scores_pooled_features_and_round_trips(tmp_path):
    from clipsam.models.grounding.presence_head import (
        head_input,
        input_size,
        map_features,
        pooled_features,
    )

    size = input_size(16)
    head = np.random.default_rng(0).normal(scale=0.05, size=size + 1)
    model = _with_points(presence_heads={"Fetal Head": head},
                         presence_statistics={"fetal head": "head"})
    emb = _embedding(2)
    valid = valid_mask(emb.geometry, 16)
    features = emb.features[0]
    x = head_input(pooled_features(features, valid),
                   map_features(features, model.logit_map(emb, "fetal head"), valid))
    assert x.shape == (size,)
    expected = 1 / (1 + np.exp(-(x @ head[:-1] + head[-1])))
    assert model.presence_score(emb, "fetal head") == pytest.approx(expected)
    assert model.presence_score(emb, "fetal head", "map") == pytest.approx(presence_from_logits(
        model.logit_map(emb, "fetal head"), valid, 2))
    assert model.reach(emb, "fetal skull").decisions()["presence_statistic"] == "head"
    model.save(tmp_path / "m")
    loaded = load_grounding_model(tmp_path / "m", text_encoder=HashEncoder())
    assert loaded.presence == PresenceRule(2, 0.5, 0.6, 0.7)
    assert loaded.concept_points == {"fetal head": {"balanced": 0.85, "precision": 0.9}}
    assert loaded.presence_statistics == {"fetal head": "head"}
    assert loaded.presence_score(emb, "fetal head") == pytest.approx(expected)
    with pytest.raises(WeightsError, match="presence head chosen but missing"):
        _with_points(presence_statistics={"fetal head": "head"})
    with pytest.raises(WeightsError, match="presence head must hold"):
        _with_points(presence_heads={"fetal head": head[:-1]})
