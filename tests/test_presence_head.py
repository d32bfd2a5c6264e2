"""The image-level presence head: fitted with cross-fitting on the training part, it finds a
target the top-cell statistic cannot see (a global feature shift), and calibration uses it
only where it separates the held-out images better."""

from pathlib import Path

import numpy as np
import pytest
import torch

from clipsam.eval.presence import auc
from clipsam.io.labelled_sets import Sample
from clipsam.models.grounding import (
    GroundingHeads,
    GroundingModel,
    PresenceRule,
    load_grounding_model,
)
from clipsam.train.calibrate import (
    CalibrationConfig,
    calibrate_presence,
    presence_scores,
    presence_settings,
)
from clipsam.train.presence_head import (
    PresenceHeadConfig,
    cross_fit,
    fit_logistic,
    fit_presence_heads,
    logistic_scores,
    sample_weights,
)
from clipsam.train.region_data import RegionData
from synthetic_grounding import (
    FEATURES,
    GEOMETRY,
    GRID,
    SMALL,
    concepts,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    square_target,
)
from test_grounding import HashEncoder

SHIFT = 0.5  # alpha's target: channel 0 raised by this much on every cell (noise sd 1)


def shifted_data(seed: int, n: int, prefix: str) -> RegionData:
    """``n`` images of two sets: s0 (alpha: a third of them empty, the others with channel 0
    shifted everywhere: the target is the whole image) and s1 (beta: a square target along a
    direction without channel 0, so it does not shift alpha's channel)."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(101).normal(size=FEATURES).astype(np.float32) * 2
    direction[0] = 0
    features, targets, index, samples = [], [], [], []
    for i in range(n):
        c = i % 2
        f = rng.normal(size=(FEATURES, GRID, GRID)).astype(np.float32)
        if c == 0:
            empty = (i // 2) % 3 == 2
            t = np.zeros((GRID, GRID), np.float32) if empty else np.ones((GRID, GRID), np.float32)
            f[0] += SHIFT * t
        else:
            t = square_target(rng)
            f += t[None] * direction[:, None, None]
        features.append(f)
        targets.append(t)
        index.append(c)
        samples.append(Sample(f"s{c}", f"img{i}", f"{prefix}{i}", Path(f"{i}.png"),
                              Path(f"{i}.png")))
    unknown = np.zeros((n, 2), bool)
    return RegionData(features, np.stack(targets), np.ones((n, GRID, GRID), bool),
                      np.asarray(index), unknown, np.zeros_like(unknown), concepts(2),
                      tuple(samples), (GEOMETRY,) * n, "synthetic")


def blind_model() -> GroundingModel:
    """Random tiny heads that do not read feature channel 0: no map can see alpha's shift."""
    torch.manual_seed(0)
    heads = GroundingHeads(SMALL)
    with torch.no_grad():
        heads.patch.inp.weight[:, 0] = 0
    return GroundingModel(heads, PresenceRule(4, 0.5), text_encoder=HashEncoder())


def _alpha_split(data: RegionData, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    present, _ = data.labels()
    return scores[present[:, 0], 0], scores[~present[:, 0], 0]


def test_sample_weights_balance_both_sides_and_weigh_hard_negatives():
    present = np.array([1, 1, 0, 0, 0, 0], bool)
    empty = np.array([0, 0, 1, 0, 0, 0], bool)
    others = np.array([0, 0, 0, 1, 1, 0], bool)  # the last image: unknown, left out
    w = sample_weights(present, empty, others, 4.0)
    assert w.sum() == pytest.approx(1) and w[5] == 0
    assert w[present].sum() == pytest.approx(0.5) and w[2] == pytest.approx(4 * w[3])


def test_a_logistic_fit_undoes_the_standardisation_it_was_fitted_with():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * [1, 100, 0.01] + [5, -50, 2]
    y = (x[:, 0] - 5 + (x[:, 2] - 2) * 100 + rng.normal(scale=0.3, size=200)) > 0
    head = fit_logistic(x, y, np.full(200, 1 / 200), 1e-3)
    scores = logistic_scores(head, x)
    assert auc(scores[y], scores[~y]) > 0.95
    assert np.mean((scores > 0.5) == y) > 0.9


def test_the_head_finds_a_global_shift_the_top_cells_cannot_see():
    model = blind_model()
    train, held = shifted_data(0, 90, "t"), shifted_data(1, 60, "h")
    # the map statistic is blind to the shift: removing it changes no score
    present = [i for i in range(len(held)) if held.concept_index[i] == 0 and held.has_target()[i]]
    for i in present[:3]:
        unshifted = held.embedding(i)
        unshifted.features[0, 0] -= SHIFT
        assert model.presence_score(unshifted, "alpha thing") == pytest.approx(
            model.presence_score(held.embedding(i), "alpha thing"), abs=1e-6)
    heads, report = fit_presence_heads(model, train, PresenceHeadConfig(folds=3))
    assert set(heads) == {"alpha thing", "beta thing"}
    alpha = report["alpha thing"]
    assert alpha["n_present"] == 30 and alpha["n_empty"] == 15 and alpha["n_other_sets"] == 45
    assert alpha["penalty"] in PresenceHeadConfig().penalties
    assert alpha["oof_auc"] > 0.95  # cross-fitted on the training part
    with_heads = GroundingModel(model.heads, model.presence, text_encoder=HashEncoder(),
                                presence_heads=heads)
    map_auc = auc(*_alpha_split(held, presence_scores(with_heads, held)))
    head_auc = auc(*_alpha_split(held, presence_scores(with_heads, held, "head")))
    assert head_auc > 0.95 and map_auc < 0.75


def test_calibration_uses_the_head_only_where_it_separates_better(tmp_path):
    model = blind_model()
    heads, _ = fit_presence_heads(model, shifted_data(0, 90, "t"), PresenceHeadConfig(folds=3))
    with_heads = GroundingModel(model.heads, model.presence, text_encoder=HashEncoder(),
                                presence_heads=heads)
    calibration = shifted_data(2, 60, "c")
    result = calibrate_presence(with_heads, calibration, CalibrationConfig())
    assert result.statistics["alpha thing"] == "head"
    alpha = result.report["alpha thing"]
    assert alpha["auc"]["head"] >= alpha["auc"]["map"] + 0.02
    assert alpha["points"]["balanced"]["recall"] > 0.9
    assert alpha["points"]["balanced"]["not_found_empty"] > 0.9
    # the calibrated model keeps the heads chosen, scores with them, and saves them
    settings = presence_settings(result, with_heads)
    chosen = {c for c, s in result.statistics.items() if s == "head"}
    assert set(settings["presence_heads"]) == chosen
    calibrated = GroundingModel(model.heads, **settings, text_encoder=HashEncoder())
    embedding = calibration.embedding(0)
    assert calibrated.presence_score(embedding, "alpha thing") == pytest.approx(
        with_heads.presence_score(embedding, "alpha thing", "head"))
    match = calibrated.reach(embedding, "alpha thing", "balanced")
    assert match.statistic == "head"
    assert match.threshold == result.points["alpha thing"]["balanced"]
    calibrated.save(tmp_path / "m")
    loaded = load_grounding_model(tmp_path / "m", text_encoder=HashEncoder())
    assert loaded.presence_score(embedding, "alpha thing") == pytest.approx(
        calibrated.presence_score(embedding, "alpha thing"))


def test_cross_fitting_scores_each_image_without_its_own_fold():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    y = x[:, 0] > 0
    weights = np.full(40, 1 / 40)
    folds = np.arange(40) % 4
    penalty, oof, losses = cross_fit(x, y, weights, folds, PresenceHeadConfig(folds=4))
    assert set(losses) == set(PresenceHeadConfig().penalties)
    assert penalty == min(losses, key=losses.get)
    # image 0's score comes from a head fitted on the other three folds
    fit = folds != 0
    head = fit_logistic(x[fit], y[fit], weights[fit] / weights[fit].sum(), penalty)
    assert oof[0] == pytest.approx(logistic_scores(head, x[:1])[0])
    # folds holding one side each: no fold can be scored (the rest lacks that side)
    _, oof, losses = cross_fit(x, y, weights, y.astype(int), PresenceHeadConfig())
    assert np.isnan(oof).all() and set(losses.values()) == {np.inf}
