"""How well a presence score tells images with a target from images without it.

An image's target is answered "found" when its presence score is at least the threshold. The
images without the target fall into groups (the concept's own set's empty images, other sets'
images): each group's "not found" rate counts equally, so a handful of hard empty images of
the target's own set is not drowned by hundreds of easy images of other sets.

The presence curve (:func:`presence_curve`) is the recall against the "not found" rates over a
sweep of thresholds, with a model's operating points marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def recall_at(positives: np.ndarray, threshold: float) -> float | None:
    """Share of ``positives`` (scores of images with the target) at or above ``threshold``
    (None without positives)."""
    positives = np.asarray(positives, np.float64)
    return float(np.mean(positives >= threshold)) if positives.size else None


def not_found_rate(groups: Sequence[np.ndarray], threshold: float) -> float | None:
    """Mean over the non-empty ``groups`` (scores of images without the target) of the share
    scoring below ``threshold``; None when every group is empty."""
    rates = [float(np.mean(np.asarray(g, np.float64) < threshold)) for g in groups if len(g)]
    return float(np.mean(rates)) if rates else None


def auc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half):
    the area under the ROC curve; None when either side is empty."""
    positives = np.asarray(positives, np.float64)
    negatives = np.asarray(negatives, np.float64)
    if not positives.size or not negatives.size:
        return None
    above = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(above + 0.5 * ties)


def group_auc(positives: np.ndarray, groups: Sequence[np.ndarray]) -> float | None:
    """Mean :func:`auc` of ``positives`` against each non-empty group (None when none)."""
    values = [auc(positives, g) for g in groups if len(g)]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def logit_grid(low: float = -8.0, high: float = 8.0, steps: int = 161) -> np.ndarray:
    """Thresholds evenly spaced in logits (presence scores crowd near 0 and 1)."""
    return 1.0 / (1.0 + np.exp(-np.linspace(low, high, steps)))


def concept_scores(rows: Sequence[dict[str, Any]], concept: str, own_sets: set[str],
                   excluded_sets: set[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """From per-image rows (``set``, ``concept``, ``gt_empty``, ``presence``; rows with an
    ``error`` left out): the presence scores of ``concept`` on the images of ``own_sets``
    with their target, and two groups without it: those sets' empty images, and the images
    of every other set but ``excluded_sets`` (where the target may be visible or is always
    shown)."""
    mine = [r for r in rows if r.get("concept") == concept and not r.get("error")
            and r.get("presence") is not None]
    own = [r for r in mine if r["set"] in own_sets]
    pick = lambda subset: np.array([float(r["presence"]) for r in subset])  # noqa: E731
    return (pick([r for r in own if not r["gt_empty"]]),
            [pick([r for r in own if r["gt_empty"]]),
             pick([r for r in mine if r["set"] not in own_sets | excluded_sets])])


def presence_curve(positives: np.ndarray, groups: Sequence[np.ndarray],
                   thresholds: Sequence[float], points: dict[str, float] | None = None
                   ) -> list[dict[str, Any]]:
    """One row per threshold (the sweep and the operating ``points``, sorted): the recall,
    each group's "not found" rate and their mean; ``point`` names the operating points at
    that threshold."""
    points = points or {}
    every = sorted({float(t) for t in thresholds} | set(points.values()))
    rows = []
    for t in every:
        rows.append({
            "threshold": t,
            "point": "+".join(p for p, v in points.items() if v == t),
            "recall": recall_at(positives, t),
            "not_found_empty": not_found_rate(groups[:1], t),
            "not_found_other_sets": not_found_rate(groups[1:], t),
            "not_found": not_found_rate(groups, t)})
    return rows


def set_roles(concepts: Mapping[str, Any]) -> dict[str, tuple[set[str], set[str]]]:
    """Per target: the sets labelled with it, and the sets where it may be visible or is always
    shown unlabelled (left out of its images without the target). ``concepts``: set name ->
    concept (``target``, ``may_show``, ``always_shows``: the sets whose targets its images
    may or always show, as in :func:`clipsam.train.captions.builtin_concepts`)."""
    roles: dict[str, tuple[set[str], set[str]]] = {}
    for name, concept in concepts.items():
        roles.setdefault(concept.target, (set(), set()))[0].add(name)
    for own, excluded in roles.values():
        excluded.update(name for name, c in concepts.items()
                        if own & {*c.may_show, *c.always_shows})
    return roles


def presence_curves(rows: Sequence[dict[str, Any]], concepts: Mapping[str, Any],
                    points: Mapping[str, dict[str, float]], thresholds: Sequence[float]
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The presence curve of every target scored in ``rows`` (:func:`presence_curve`, one
    ``concept`` column) and a summary per target: its images with and without the target, the
    AUC against each group and their mean, and each operating point's figures. ``points``:
    per target, the model's threshold of each operating point it has."""
    roles = set_roles(concepts)
    scored = sorted({r["concept"] for r in rows if not r.get("error")} & set(roles))
    curve, summary = [], {}
    for target in scored:
        own, excluded = roles[target]
        positives, groups = concept_scores(rows, target, own, excluded)
        mine = points.get(target, {})
        lines = presence_curve(positives, groups, thresholds, mine)
        curve += [{"concept": target, **line} for line in lines]
        summary[target] = {
            "sets": sorted(own), "left_out_sets": sorted(excluded),
            "n_present": int(positives.size), "n_empty": int(groups[0].size),
            "n_other_sets": int(groups[1].size),
            "auc_empty": rounded(auc(positives, groups[0])),
            "auc_other_sets": rounded(auc(positives, groups[1])),
            "auc": rounded(group_auc(positives, groups)),
            "points": {p: {k: rounded(v) for k, v in line.items() if k != "point"}
                       for p in mine for line in lines if line["threshold"] == mine[p]}}
    return curve, summary


def rounded(value: float | None) -> float | None:
    """A figure as reports keep it: 4 decimals (None stays None)."""
    return None if value is None else round(float(value), 4)
