"""Captions, the subject split, region data and the grounding heads' trainer."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipsam.train.trainer as trainer
from clipsam.io.labelled_sets import list_samples
from clipsam.io.splits import calibration_of, split_of
from clipsam.models.grounding import GroundingHeads, GroundingModel, PresenceRule
from clipsam.train.captions import (
    Concept,
    background_captions,
    builtin_concepts,
    concept_for,
    target_captions,
)
from clipsam.train.trainer import (
    TrainConfig,
    contrastive_loss,
    presence_logits,
    sampling_weights,
    train_heads,
)
from synthetic_grounding import (
    NAMES,
    SMALL,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    region_data,
    stored_region_data,
    write_labelled_set,
)
from test_grounding import HashEncoder

FAST = TrainConfig(epochs=6, batch_size=4, learning_rate=1e-2, contrastive_draws=2)


def test_builtin_concepts_give_varied_target_and_background_captions():
    concepts = builtin_concepts()
    assert len(concepts) == 11
    for concept in concepts.values():
        targets, backgrounds = target_captions(concept), background_captions(concept)
        assert len(set(targets)) >= 20 and len(set(backgrounds)) >= 5
        assert concept.target in targets and not set(targets) & set(backgrounds)
    own = concept_for("my_set", "liver")
    assert own.target == "liver" and "the liver" in target_captions(own)
    with pytest.raises(KeyError):
        concept_for("unknown_set")


def _write_set(root: Path, ids, subjects=None, size=(32, 48)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in ids:
        Image.fromarray(np.zeros(size, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.zeros(size, np.uint8)).save(root / "masks" / f"{i}.png")
    if subjects:
        rows = "\n".join(f"{i},{s}" for i, s in zip(ids, subjects, strict=True))
        (root / "meta.csv").write_text(f"id,patient\n{rows}\n")


def test_split_is_by_subject_and_stable(tmp_path):
    ids = [f"img{i:02d}" for i in range(40)]
    _write_set(tmp_path / "set", ids, [f"p{i // 4}" for i in range(40)])
    samples = list_samples(tmp_path / "set")
    assert [s.subject for s in samples[:4]] == ["p0"] * 4
    parts = {}
    for s in samples:
        parts.setdefault(s.subject, set()).add((split_of(s), calibration_of(s)))
    assert all(len(p) == 1 for p in parts.values())
    assert {next(iter(p))[0] for p in parts.values()} == {"train", "test"}


def test_region_data_has_a_channel_per_concept_and_marks_may_show_as_unknown(tmp_path):
    cache = tmp_path / "cache"
    write_labelled_set(tmp_path, "s1", 1, ["a", "b", "c"], cache, empty=(2,))
    write_labelled_set(tmp_path, "s0", 0, ["d", "e"], cache, seed=1)
    samples = list_samples(tmp_path / "s1") + list_samples(tmp_path / "s0")
    concepts = {"s1": Concept("beta thing", ("beta thing",), may_show=("s0", "s9")),
                "s0": Concept("alpha thing", ("alpha thing",), always_shows=("s2",)),
                "s2": Concept("gamma thing", ("gamma thing",))}  # no image here
    data = stored_region_data(samples, cache, concepts)
    assert [c.target for c in data.concepts] == ["alpha thing", "beta thing", "gamma thing"]
    np.testing.assert_array_equal(data.concept_index, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(data.unknown, [[1, 0, 0]] * 3 + [[0, 0, 0]] * 2)
    np.testing.assert_array_equal(data.shown, [[0, 0, 0]] * 3 + [[0, 0, 1]] * 2)
    present, known = data.labels()
    # s0's images show gamma (always_shows): present there, but with no map target
    np.testing.assert_array_equal(present, [[0, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1],
                                            [1, 0, 1]])
    np.testing.assert_array_equal(known, ~data.unknown)
    np.testing.assert_array_equal(data.unmapped(), data.unknown | data.shown)
    assert data.model_name == "synthetic" and data.features[0].shape == (16, 16, 16)
    assert isinstance(data.features[0], np.memmap)  # read per access, not loaded up front
    assert data.embedding(0).features.dtype == np.float32
    # the same concepts give a part of the data set the same channels
    part = stored_region_data(samples[3:], cache, concepts)
    assert part.concepts == data.concepts
    np.testing.assert_array_equal(part.concept_index, [0, 0])
    with pytest.raises(KeyError, match="s1"):
        stored_region_data(samples, cache, {"s0": concepts["s0"]})


def test_sampling_weights_balance_sets():
    data = region_data(n=8, count=2)
    data = replace(data, concept_index=np.array([0, 0, 0, 0, 0, 0, 1, 1]))
    np.testing.assert_allclose(sampling_weights(data, 0.0), np.full(8, 1 / 8))
    equal = sampling_weights(data, 1.0)
    assert equal[:6].sum() == pytest.approx(0.5) and equal[6:].sum() == pytest.approx(0.5)
    np.testing.assert_allclose(equal[:6], 1 / 12)
    half = sampling_weights(data, 0.5)
    assert half.sum() == pytest.approx(1) and 0.5 < half[:6].sum() < 0.75


def test_presence_logits_average_the_top_k_valid_cells():
    logits = torch.tensor([[[[5.0, 1.0], [3.0, 100.0]]]])
    valid = torch.tensor([[[True, True], [True, False]]])
    np.testing.assert_allclose(presence_logits(logits, valid, 2), [[4.0]])
    np.testing.assert_allclose(presence_logits(logits, valid, 1), [[5.0]])


def _caption_vectors(data):
    encoder = HashEncoder()
    return torch.from_numpy(encoder([t for target, background in data.caption_pools()
                                     for t in (target[0], background[0])]))


def _text_gradient(data, index, config=FAST):
    torch.manual_seed(0)
    heads = GroundingHeads(SMALL)
    texts = _caption_vectors(data).requires_grad_(True)
    feats = torch.from_numpy(np.stack([np.asarray(data.features[i], np.float32)
                                       for i in index]))
    loss = trainer._step_loss(heads, data, np.asarray(index), feats,
                              torch.from_numpy(data.targets[index]),
                              torch.from_numpy(data.valid[index]), texts, config,
                              np.random.default_rng(0), contrastive_loss(config))
    loss.backward()
    return texts.grad


def test_may_show_concepts_are_left_out_of_the_loss():
    """Images of set s1 where concept 0 may show unlabelled: nothing pulls concept 0's
    captions, neither as absent (dense, presence) nor in the contrastive term."""
    unknown = np.zeros((12, 3), bool)
    unknown[1::3, 0] = True  # the images of concept 1
    data = region_data(n=12, count=3, unknown=unknown)
    batch = [1, 4, 7, 10]  # concept 1 only
    grad = _text_gradient(data, batch)
    assert grad[0:2].abs().max() == 0  # concept 0: target and background caption
    assert grad[2:4].abs().max() > 0 and grad[4:6].abs().max() > 0
    # known absent, the same images do train concept 0 (so the test can fail)
    grad = _text_gradient(replace(data, unknown=np.zeros_like(unknown)), batch)
    assert grad[0].abs().max() > 0


def test_always_shown_concepts_train_presence_but_no_map():
    """Images of set s1 that certainly show concept 0 without a mask: concept 0's captions are
    pulled only through the presence term (present), never as a map target or as absent."""
    shown = np.zeros((12, 3), bool)
    shown[1::3, 0] = True  # the images of concept 1
    data = region_data(n=12, count=3)
    data = replace(data, shown=shown)
    batch = [1, 4, 7, 10]  # concept 1 only
    assert _text_gradient(data, batch)[0].abs().max() > 0  # presence pulls the target caption
    assert _text_gradient(data, batch)[1].abs().max() == 0  # no background map for concept 0
    quiet = replace(FAST, presence_weight=0.0)
    assert _text_gradient(data, batch, quiet)[0:2].abs().max() == 0  # no dense, no contrastive


def test_batches_crop_and_flip_features_and_targets_together():
    data = region_data(n=4, count=2)
    marked = [np.asarray(f, np.float32).copy() for f in data.features]
    valid = np.zeros_like(data.valid)
    valid[:, :10, :12] = True  # a wide image: padding below and right
    for f, t, v in zip(marked, data.targets, valid, strict=True):
        f[0] = t * v + 2 * v  # channel 0: 2 inside the image, 3 on its target, 0 on padding
    data = replace(data, features=marked, targets=data.targets * valid, valid=valid)
    rng = np.random.default_rng(0)
    for _ in range(4):
        feats, targets, cells = trainer._batch(data, np.arange(4), 8, True, rng)
        assert feats.shape == (4, 16, 8, 8) and targets.shape == cells.shape == (4, 8, 8)
        np.testing.assert_array_equal(feats[:, 0], targets + 2 * cells)
    mirrored = 0
    for _ in range(4):  # whole grid: mirrored inside the image only, padding stays put
        feats, targets, _ = trainer._batch(data, np.arange(4), 64, True, rng)
        np.testing.assert_array_equal(feats[:, 0], targets + 2 * torch.from_numpy(valid))
        for i, t in enumerate(targets.numpy()):
            if not np.array_equal(t, data.targets[i]):
                np.testing.assert_array_equal(t[:10, :12], data.targets[i][:10, :12][:, ::-1])
                mirrored += 1
    assert 0 < mirrored < 16


@pytest.fixture(scope="module")
def trained():
    heads, curve = train_heads(region_data(0, 48), FAST, None, HashEncoder(), SMALL,
                               progress=False, validation=region_data(1, 16))
    return GroundingModel(heads, PresenceRule(FAST.top_k, 0.5), text_encoder=HashEncoder()), curve


def test_training_separates_present_from_absent_and_grounds_targets(trained):
    model, _ = trained
    test = region_data(2, 16)
    for c, name in enumerate(NAMES[:2]):
        scores = np.array([model.presence_score(test.embedding(i), name) for i in range(16)])
        positive = (test.concept_index == c) & test.has_target()
        # every image with the target scores above every image without it
        assert scores[positive].min() > scores[~positive].max(), name
        inside = [model.similarity_map(test.embedding(i), name)[test.targets[i] > 0].mean()
                  for i in np.flatnonzero(positive)]
        assert np.mean(inside) > 0.5, name


def test_the_validation_curve_has_one_point_per_epoch(trained):
    _, curve = trained
    assert [p["epoch"] for p in curve] == list(range(1, FAST.epochs + 1))
    last = curve[-1]["validation"]
    assert set(last) == {"s0", "s1"}
    for scores in last.values():
        assert 0.5 < scores["dice"] <= 1 and 0.5 < scores["presence"] <= 1
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    _, none = train_heads(region_data(0, 8), replace(FAST, epochs=1), None, HashEncoder(),
                          SMALL, progress=False)
    assert len(none) == 1 and "validation" not in none[0]


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    data, config = region_data(0, 16), replace(FAST, epochs=3, flip=True, crop=12)
    reference, curve = train_heads(data, config, None, HashEncoder(), SMALL, progress=False)

    def interrupt(point):
        if point["epoch"] == 2:
            raise KeyboardInterrupt
        return ""

    monkeypatch.setattr(trainer, "_curve_line", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_heads(data, config, tmp_path, HashEncoder(), SMALL, progress=True)
    assert torch.load(tmp_path / trainer.CHECKPOINT, weights_only=False)["epoch"] == 1
    monkeypatch.undo()
    resumed, again = train_heads(data, config, tmp_path, HashEncoder(), SMALL, progress=False)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert [p["train_loss"] for p in again] == [p["train_loss"] for p in curve]
    # a finished run resumes without a step; other settings start afresh
    finished, _ = train_heads(data, config, tmp_path, HashEncoder(), SMALL, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), finished.parameters(),
                                                 strict=True))
    other, _ = train_heads(data, replace(config, seed=1), tmp_path, HashEncoder(), SMALL,
                           progress=False)
    assert not torch.equal(other.bias, finished.bias)


@pytest.mark.parametrize("loss", ["info-nce", "dhn-nce"])
def test_both_contrastive_losses_train(loss):
    config = TrainConfig(epochs=2, batch_size=4, loss=loss, contrastive_draws=2)
    _, curve = train_heads(region_data(0, n=8), config, None, HashEncoder(), SMALL,
                           progress=False)
    assert len(curve) == 2 and np.isfinite(curve[-1]["train_loss"])
    with pytest.raises(ValueError, match="l2"):
        contrastive_loss(TrainConfig(loss="l2"))
