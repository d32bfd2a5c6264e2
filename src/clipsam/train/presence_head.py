"""Fitting the image-level presence heads (:mod:`clipsam.models.grounding.presence_head`).

For each concept, an L2-penalised logistic regression on the training part (never on the
calibration subjects, which then decide whether the head replaces the map statistic,
:func:`clipsam.train.calibrate.calibrate_presence`): images with the target (its own labelled
ones and those that certainly show it) against images without it, with hard negatives: the
concept's own set's empty images count ``empty_weight`` times as much as another set's image,
and both sides weigh the same in total. Images where the target may be visible unlabelled are
left out. Inputs are standardised for the fit; the head folds the standardisation back in.

The penalty is chosen by cross-fitting over subject folds (:func:`clipsam.io.splits.fold_of`):
each image is scored by a head fitted without its subject, and the penalty with the lowest
weighted out-of-fold log loss is kept; the final head is fitted on the whole training part.
The out-of-fold AUC is reported. The map inputs of training images come from heads trained on
them, so they look better there than on new images: the calibration subjects, not this
figure, decide whether a head is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from clipsam.eval.presence import group_auc, rounded
from clipsam.io.splits import fold_of
from clipsam.models.grounding.grid import valid_mask
from clipsam.models.grounding.model import GroundingModel
from clipsam.models.grounding.presence_head import head_input, map_features, pooled_features
from clipsam.train.region_data import RegionData


@dataclass(frozen=True)
class PresenceHeadConfig:
    """``folds``: subject folds of the cross-fitting; ``penalties``: the L2 strengths compared
    (on standardised inputs, against the weighted mean log loss); ``empty_weight``: how much
    an empty image of the concept's own set counts against another set's image among the
    images without the target; ``max_iterations`` of each L-BFGS fit."""

    folds: int = 5
    penalties: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    empty_weight: float = 4.0
    max_iterations: int = 500

    def __post_init__(self) -> None:
        if self.folds < 2 or not self.penalties or min(self.penalties) <= 0:
            raise ValueError("cross-fitting needs at least 2 folds and positive penalties")


def head_inputs(model: GroundingModel, data: RegionData) -> np.ndarray:
    """(N, C, F) the presence-head input of every image for every concept's target name."""
    names = [c.target for c in data.concepts]
    rows = []
    for i in range(len(data)):
        embedding = data.embedding(i)
        features = embedding.features[0]
        valid = valid_mask(embedding.geometry, features.shape[-1])
        pooled = pooled_features(features, valid)
        rows.append([head_input(pooled, map_features(features, model.logit_map(embedding, n),
                                                     valid)) for n in names])
    return np.asarray(rows, np.float64)


def sample_weights(present: np.ndarray, empty: np.ndarray, others: np.ndarray,
                   empty_weight: float) -> np.ndarray:
    """(N,) weights summing to 1: half on the images with the target, half on those without
    (own empty images ``empty_weight`` times another set's image); 0 elsewhere."""
    weights = np.zeros(present.shape, np.float64)
    negative = np.where(empty, empty_weight, 0.0) + others.astype(np.float64)
    if present.any():
        weights[present] = 0.5 / present.sum()
    if negative.sum() > 0:
        weights += 0.5 * negative / negative.sum()
    return weights / weights.sum()


def fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, penalty: float,
                 max_iterations: int = 500) -> np.ndarray:
    """(F + 1,) weights and bias of a logistic regression of ``y`` (N,) bool on ``x`` (N, F),
    minimising the ``weights``-weighted log loss plus ``penalty / 2`` times the squared
    weights of the standardised inputs (bias free); returned for the raw inputs."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    target = y.astype(np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logits = z @ theta[:-1] + theta[-1]
        value = np.sum(weights * (np.logaddexp(0.0, logits) - target * logits))
        residual = weights * (1.0 / (1.0 + np.exp(-logits)) - target)
        grad = np.concatenate([z.T @ residual + penalty * theta[:-1], [residual.sum()]])
        return float(value + 0.5 * penalty * theta[:-1] @ theta[:-1]), grad

    theta = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B",
                     options={"maxiter": max_iterations}).x
    slope = theta[:-1] / scale
    return np.concatenate([slope, [theta[-1] - slope @ mean]])


def logistic_scores(head: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(N,) ``sigmoid`` of a (F + 1,) head on (N, F) inputs."""
    return 1.0 / (1.0 + np.exp(-np.clip(x @ head[:-1] + head[-1], -60, 60)))


def _log_loss(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    return float(np.sum(weights * -(y * np.log(p) + (1 - y) * np.log(1 - p))) / weights.sum())


def cross_fit(x: np.ndarray, y: np.ndarray, weights: np.ndarray, folds: np.ndarray,
              config: PresenceHeadConfig) -> tuple[float, np.ndarray, dict[float, float]]:
    """The penalty with the lowest out-of-fold weighted log loss, its out-of-fold scores (NaN
    where a fold could not be fitted: no image with or without the target outside it), and
    every penalty's loss. Rows with weight 0 are left out."""
    used = weights > 0
    losses, scores = {}, {}
    for penalty in config.penalties:
        oof = np.full(len(y), np.nan)
        for fold in np.unique(folds[used]):
            fit = used & (folds != fold)
            if y[fit].all() or not y[fit].any():
                continue
            w = weights[fit] / weights[fit].sum()
            head = fit_logistic(x[fit], y[fit], w, penalty, config.max_iterations)
            rows = used & (folds == fold)
            oof[rows] = logistic_scores(head, x[rows])
        scored = used & ~np.isnan(oof)
        losses[penalty] = (_log_loss(oof[scored], y[scored], weights[scored])
                           if scored.any() else np.inf)
        scores[penalty] = oof
    best = min(config.penalties, key=lambda p: (losses[p], p))
    return best, scores[best], losses


def fit_presence_heads(model: GroundingModel, data: RegionData,
                       config: PresenceHeadConfig) -> tuple[dict[str, np.ndarray], dict]:
    """Per concept with images with and without its target in ``data`` (the training part):
    its fitted (F + 1,) head, and a report (penalty chosen, out-of-fold log loss per penalty
    and AUC against the concept's own empty images and other sets' images)."""
    inputs = head_inputs(model, data)
    present, known = data.labels()
    own = np.zeros_like(present)
    own[np.arange(len(data)), data.concept_index] = True
    folds = np.array([fold_of(s, config.folds) for s in data.samples])
    heads, report = {}, {}
    for c, concept in enumerate(data.concepts):
        y = present[:, c]
        empty, others = own[:, c] & ~y & known[:, c], ~own[:, c] & ~y & known[:, c]
        entry = {"n_present": int(y.sum()), "n_empty": int(empty.sum()),
                 "n_other_sets": int(others.sum())}
        report[concept.target] = entry
        if not y.any() or not (empty | others).any():
            entry["note"] = "no training image with or without the target: no head"
            continue
        weights = sample_weights(y, empty, others, config.empty_weight)
        penalty, oof, losses = cross_fit(inputs[:, c], y, weights, folds, config)
        heads[concept.target] = fit_logistic(inputs[:, c], y, weights, penalty,
                                             config.max_iterations)
        scored = ~np.isnan(oof)
        entry.update(penalty=penalty,
                     oof_log_loss={str(p): round(v, 4) for p, v in losses.items()},
                     oof_auc=rounded(group_auc(oof[y & scored],
                                              [oof[empty & scored], oof[others & scored]])))
    return heads, report

