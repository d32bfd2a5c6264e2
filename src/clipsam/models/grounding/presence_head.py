"""The image-level presence read-out: a linear score of pooled encoder features per concept.

The map statistic (mean of the top-k cell logits) sees a target only where a few cells light
up; a target that changes the whole image a little (a global shift of the features) escapes it.
The read-out sees the whole image: for one concept, its input (:func:`head_input`) is

* the mean, maximum and standard deviation of each encoder feature channel over the image's
  cells (padding excluded): ``3 C`` values, the same for every concept;
* the mean feature vector weighted by the concept's map (``sigmoid`` of its cell logits):
  ``C`` values;
* the mean of the top 1, 4 and 16 cell logits of the concept's map (:data:`TOP_KS`).

A head is one (F + 1,) vector (weights, then the bias; F = 4 C + 3) and its presence score is
``sigmoid(weights . input + bias)``; the weights fold in the standardisation of the inputs it
was fitted with (:mod:`clipsam.train.presence_head`).
"""

from __future__ import annotations

import numpy as np

TOP_KS = (1, 4, 16)
LAYOUT = "mean,max,std,map-mean,top-1-4-16"
"""The input layout (recorded in a model's config.json; a model with another is refused)."""


def input_size(channels: int) -> int:
    """F, the length of a head's input for ``channels`` encoder feature channels."""
    return 4 * channels + len(TOP_KS)


def pooled_features(features: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(3 C,) mean, maximum and standard deviation of each channel of (C, h, w) ``features``
    over the ``valid`` (h, w) cells."""
    cells = np.asarray(features, np.float32)[:, np.asarray(valid, bool)].astype(np.float64)
    return np.concatenate([cells.mean(axis=1), cells.max(axis=1), cells.std(axis=1)])


def map_features(features: np.ndarray, logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(C + 3,) the map-weighted mean of the (C, h, w) ``features`` and the mean of the top
    1, 4 and 16 of the (h, w) ``logits`` over the ``valid`` cells."""
    valid = np.asarray(valid, bool)
    values = np.asarray(logits, np.float64)[valid]
    weights = 1.0 / (1.0 + np.exp(-values))
    cells = np.asarray(features, np.float32)[:, valid].astype(np.float64)
    weighted = cells @ weights / max(float(weights.sum()), 1e-6)
    ordered = np.sort(values)[::-1]
    tops = [ordered[:min(k, ordered.size)].mean() for k in TOP_KS]
    return np.concatenate([weighted, tops])


def head_input(pooled: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """(F,) a head's input from :func:`pooled_features` and :func:`map_features`."""
    return np.concatenate([pooled, mapped])


def head_score(head: np.ndarray, x: np.ndarray) -> float:
    """``sigmoid(weights . x + bias)`` of a (F + 1,) head on its (F,) input."""
    z = float(np.dot(np.asarray(head[:-1], np.float64), x) + head[-1])
    return float(1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0))))
