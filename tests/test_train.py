from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsam.models.grounding import HeadsConfig, load_grounding_model
from clipsam.models.grounding.grid import valid_mask
from clipsam.models.segmenter import Geometry
from clipsam.train.adapt import learn_concept, with_concept
from clipsam.train.captions import (
    background_captions,
    builtin_concepts,
    concept_for,
    target_captions,
)
from clipsam.train.region_data import RegionData
from clipsam.train.regions import list_samples, read_split, select, split_of, write_split
from clipsam.train.trainer import TrainConfig, calibrate_presence, fit_grounding_model
from test_grounding import HashEncoder

SMALL = HeadsConfig(feature_dim=16, text_dim=24, hidden_dim=16, embed_dim=8, dilations=(1, 2))


def test_builtin_concepts_give_varied_target_and_background_captions():
    concepts = builtin_concepts()
    assert set(concepts) == {"hc18", "busi", "cxr_lungs", "lgg_flair", "kvasir_polyp"}
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
        parts.setdefault(s.subject, set()).add(split_of(s))
    assert all(len(p) == 1 for p in parts.values())
    assert {p.pop() for p in parts.values()} == {"train", "test"}
    write_split(samples, tmp_path / "split.json")
    split = read_split(tmp_path / "split.json")
    test = select(samples, split, "test")
    assert test and all(split_of(s) == "test" for s in test)
    assert len(test) + len(select(samples, split, "train")) == 40


def test_calibration_picks_a_threshold_between_classes():
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.05], [0.1, 0.7]])
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 1]], bool)
    own = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], bool)
    t = calibrate_presence(scores, labels, own)
    assert 0.3 < t <= 0.7


def _synthetic(seed=0, n=24, grid=16):
    """Two concepts whose targets carry a distinct feature direction; a quarter are empty."""
    directions = np.random.default_rng(99).normal(size=(2, 16)) * 2
    rng = np.random.default_rng(seed)
    features, targets, concept = [], [], []
    for i in range(n):
        c = i % 2
        f = rng.normal(size=(16, grid, grid)).astype(np.float32)
        t = np.zeros((grid, grid), np.float32)
        if i % 4 < 3:
            y, x = rng.integers(0, grid - 5, size=2)
            t[y:y + 5, x:x + 5] = 1
            f += (t[None] * directions[c][:, None, None]).astype(np.float32)
        features.append(f.astype(np.float16))
        targets.append(t)
        concept.append(c)
    geometry = Geometry((64, 64), (64, 64), 64)
    concepts = (concept_for("a", "alpha thing"), concept_for("b", "beta thing"))
    return RegionData(features, np.stack(targets), np.ones((n, grid, grid), bool),
                      np.asarray(concept), concepts, tuple([None] * n), (geometry,) * n)


def _dice_at_half(model, data, i, text):
    prob = model.similarity_map(data.embedding(i), text) > 0.5
    t = data.targets[i] > 0.5
    return 2 * (prob & t).sum() / max(prob.sum() + t.sum(), 1)


def test_training_learns_targets_presence_and_resumes(tmp_path):
    train, calibration = _synthetic(0), _synthetic(1, n=12)
    config = TrainConfig(epochs=12, batch_size=4, learning_rate=1e-2, crop=16, seed=0)
    model = fit_grounding_model(train, calibration, config, tmp_path / "m",
                                encoder=HashEncoder(), progress=False, heads_config=SMALL)
    test = _synthetic(2, n=12)
    dices = [_dice_at_half(model, test, i, test.concepts[test.concept_index[i]].target)
             for i in range(12) if test.targets[i].any()]
    assert np.mean(dices) > 0.6
    right = [model.is_present(test.embedding(i), test.concepts[test.concept_index[i]].target)
             == bool(test.targets[i].any()) for i in range(12)]
    assert np.mean(right) >= 0.75
    # a finished run resumes from its checkpoint without changing the weights
    again = fit_grounding_model(train, calibration, config, tmp_path / "m",
                                encoder=HashEncoder(), progress=False, heads_config=SMALL)
    for a, b in zip(model.heads.parameters(), again.heads.parameters(), strict=True):
        assert torch.equal(a, b)
    loaded = load_grounding_model(tmp_path / "m", text_encoder=HashEncoder())
    assert loaded.presence == model.presence


@pytest.mark.parametrize("loss", ["info-nce", "dhn-nce"])
def test_both_contrastive_losses_train(loss):
    config = TrainConfig(epochs=2, batch_size=4, crop=16, loss=loss, contrastive_draws=2)
    model = fit_grounding_model(_synthetic(0, n=8), None, config, encoder=HashEncoder(),
                                progress=False, heads_config=SMALL)
    assert 0 <= model.presence.threshold <= 1
    with pytest.raises(ValueError):
        fit_grounding_model(_synthetic(0, n=8), None, TrainConfig(loss="l2"),
                            encoder=HashEncoder(), progress=False, heads_config=SMALL)


def test_adapting_learns_a_new_concept_and_keeps_the_others():
    data = _synthetic(0)
    config = TrainConfig(epochs=3, batch_size=4, crop=16, contrastive_draws=2)
    base = fit_grounding_model(data, None, config, encoder=HashEncoder(), progress=False,
                               heads_config=SMALL)
    rng = np.random.default_rng(5)
    direction = rng.normal(size=16) * 2
    embeddings, masks = [], []
    for i in range(5):
        f = rng.normal(size=(1, 16, 16, 16)).astype(np.float32)
        m = np.zeros((64, 64), bool)
        m[8 * (i % 4):8 * (i % 4) + 24, 16:40] = True
        cells = m.reshape(16, 4, 16, 4).mean(axis=(1, 3))
        f[0] += (cells[None] * direction[:, None, None]).astype(np.float32)
        emb = data.embedding(0).__class__(f, data.geometries[0], "test")
        embeddings.append(emb)
        masks.append(m)
    before = {t: base.similarity_map(embeddings[0], t) for t in ("alpha thing", "beta thing")}
    untrained = base.similarity_map(embeddings[0], "gamma thing")
    adapted = with_concept(base, "gamma thing",
                           learn_concept(base, embeddings[:4], masks[:4], "gamma thing"))
    for text, prob in before.items():
        np.testing.assert_array_equal(adapted.similarity_map(embeddings[0], text), prob)
    target = masks[4].reshape(16, 4, 16, 4).mean(axis=(1, 3)) > 0.5
    prob = adapted.similarity_map(embeddings[4], "gamma thing")
    assert prob[target].mean() > prob[~target].mean() + 0.3
    assert valid_mask(embeddings[0].geometry, 16).all()
    assert not np.array_equal(untrained, adapted.similarity_map(embeddings[0], "Gamma  thing"))
