"""The presence curve: recall against "not found" on images without the target, per target,
with the operating points marked; images where the target may be visible are left out."""

from types import SimpleNamespace

import numpy as np
import pytest

from clipsam.eval.presence import (
    auc,
    concept_scores,
    group_auc,
    logit_grid,
    not_found_rate,
    presence_curve,
    presence_curves,
    set_roles,
)
from word_fakes import word_model

CONCEPTS = {
    "busi": SimpleNamespace(target="breast tumour", may_show=(), always_shows=()),
    "lgg": SimpleNamespace(target="brain tumour", may_show=(), always_shows=()),
    "cxr": SimpleNamespace(target="lungs", may_show=(), always_shows=("jsrt",)),
    "jsrt": SimpleNamespace(target="heart", may_show=(), always_shows=("cxr",)),
    "kvasir": SimpleNamespace(target="polyp", may_show=("busi",), always_shows=()),
}


def _row(name, index, concept, presence, gt_empty=False):
    return {"set": name, "id": f"{name}{index}", "gt_empty": gt_empty, "concept": concept,
            "presence": presence, "error": ""}


def test_auc_and_rates():
    assert auc(np.array([0.9, 0.8]), np.array([0.1, 0.85])) == 0.75
    assert auc(np.array([0.5]), np.array([0.5])) == 0.5 and auc(np.array([]), np.ones(2)) is None
    assert group_auc(np.array([0.9]), [np.array([0.95]), np.array([0.1])]) == 0.5
    assert not_found_rate([np.array([0.1, 0.9]), np.array([])], 0.5) == 0.5
    assert not_found_rate([np.array([])], 0.5) is None


def test_roles_leave_out_sets_that_may_or_always_show_a_target():
    roles = set_roles(CONCEPTS)
    assert roles["lungs"] == ({"cxr"}, {"jsrt"})
    assert roles["breast tumour"] == ({"busi"}, {"kvasir"})
    assert roles["brain tumour"] == ({"lgg"}, set())


def test_the_curve_of_a_target_from_per_image_rows():
    rows = [_row("busi", 0, "breast tumour", 0.9), _row("busi", 1, "breast tumour", 0.7),
            _row("busi", 2, "breast tumour", 0.6, gt_empty=True),
            _row("lgg", 0, "breast tumour", 0.1), _row("lgg", 1, "breast tumour", 0.8),
            _row("kvasir", 0, "breast tumour", 0.99),  # may show it: left out
            {"set": "lgg", "id": "bad", "error": "cannot read"}]
    positives, groups = concept_scores(rows, "breast tumour", {"busi"}, {"kvasir"})
    assert sorted(positives) == [0.7, 0.9]
    assert list(groups[0]) == [0.6] and sorted(groups[1]) == [0.1, 0.8]
    curve = presence_curve(positives, groups, [0.5, 0.65], {"recall": 0.65, "balanced": 0.85})
    assert [c["threshold"] for c in curve] == [0.5, 0.65, 0.85]
    assert [c["point"] for c in curve] == ["", "recall", "balanced"]
    at = {c["threshold"]: c for c in curve}
    assert at[0.65]["recall"] == 1.0 and at[0.65]["not_found_empty"] == 1.0
    assert at[0.65]["not_found_other_sets"] == 0.5 and at[0.65]["not_found"] == 0.75
    assert at[0.85]["recall"] == 0.5 and at[0.85]["not_found"] == 1.0
    # recall never rises and "not found" never falls along the sweep
    sweep = presence_curve(positives, groups, logit_grid())
    assert np.all(np.diff([c["recall"] for c in sweep]) <= 0)
    assert np.all(np.diff([c["not_found"] for c in sweep]) >= 0)


def test_curves_of_every_target_with_the_models_operating_points():
    model = word_model(points={"breast tumour": {"balanced": 0.5, "precision": 0.8},
                               "brain tumour": {"balanced": 0.45, "precision": 0.5},
                               "lungs": {"balanced": 0.7, "precision": 0.9}})
    points = {c: model.operating_points(c) for c in model.concept_names}
    assert points["breast tumour"] == {"recall": 0.25, "balanced": 0.5, "precision": 0.8}
    rng = np.random.default_rng(0)
    rows = []
    for name, concept in CONCEPTS.items():
        for i in range(6):
            for target in ("breast tumour", "lungs"):
                own = concept.target == target
                rows.append(_row(name, i, target, float(rng.uniform(0.6, 1) if own and i < 4
                                                         else rng.uniform(0, 0.7)),
                                 gt_empty=own and i >= 4))
    curve, summary = presence_curves(rows, CONCEPTS, points, logit_grid())
    assert set(summary) == {"breast tumour", "lungs"}
    lungs = summary["lungs"]
    assert lungs["n_present"] == 4 and lungs["n_empty"] == 2
    assert lungs["n_other_sets"] == 18 and lungs["left_out_sets"] == ["jsrt"]
    assert set(lungs["points"]) == {"recall", "balanced", "precision"}
    assert lungs["points"]["balanced"]["threshold"] == 0.7
    marked = [c for c in curve if c["concept"] == "lungs" and c["point"]]
    assert [c["point"] for c in marked] == ["recall", "balanced", "precision"]
    assert lungs["auc"] == pytest.approx(np.mean([lungs["auc_empty"], lungs["auc_other_sets"]]),
                                         abs=1e-4)
    # an old model has only the recall point
    old = word_model()
    assert old.operating_points("lungs") == {"recall": 0.6}
    assert old.operating_points(None) == {"recall": 0.99}
