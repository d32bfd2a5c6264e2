"""Box prompts from the image embedding itself: regions of similar encoder features.

Decoding a box costs a full pass of the mask decoder, so box-only segmenters cannot afford a
dense box grid on a CPU. The encoder's feature map (one 256-d vector per 16x16 input pixels)
already separates the image into regions; clustering it at a few granularities and boxing each
connected region gives a few dozen object-aligned boxes, the kind of tight box LiteMedSAM and
MedSAM were trained to answer. Label-free, deterministic (seeded k-means++).
"""

from __future__ import annotations

import numpy as np

from clipsam.config import FeatureBoxConfig
from clipsam.models.segmenter import ImageEmbedding
from clipsam.postprocess.boxes import clip_boxes, label_boxes
from clipsam.postprocess.components import label_components
from clipsam.proposals.nms import box_nms


def valid_features(embedding: ImageEmbedding) -> np.ndarray:
    """(gh, gw, C) unit feature vectors of the grid cells covering the image (not the padding)."""
    features = np.asarray(embedding.features[0], dtype=np.float32)
    grid = features.shape[-1]
    geometry = embedding.geometry
    gh, gw = (max(1, int(np.ceil(side / geometry.input_size * grid)))
              for side in geometry.resized_size)
    cells = np.moveaxis(features[:, :gh, :gw], 0, -1)
    norms = np.linalg.norm(cells, axis=-1, keepdims=True)
    return cells / np.maximum(norms, 1e-8)


def principal_components(points: np.ndarray, count: int) -> np.ndarray:
    """(N, count) coordinates of the centred rows of ``points`` on their main principal axes."""
    centred = points - points.mean(axis=0)
    _, axes = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return centred @ axes[:, ::-1][:, :count]


def kmeans_labels(points: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """(N,) cluster index of each row of ``points`` after k-means++ seeding and Lloyd steps."""
    rng = np.random.default_rng(seed)
    k = min(k, len(points))
    centres = [points[rng.integers(len(points))]]
    nearest = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        pick = rng.choice(len(points), p=nearest / total) if total > 0 else 0
        centres.append(points[pick])
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    centres = np.stack(centres)
    labels = None
    for _ in range(iterations):
        dist = (centres**2).sum(axis=1)[None] - 2 * points @ centres.T
        new = np.argmin(dist, axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        members = np.eye(k, dtype=points.dtype)[labels]
        counts = members.sum(axis=0)
        sums = members.T @ points
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return labels


def feature_boxes(
    embedding: ImageEmbedding, config: FeatureBoxConfig = FeatureBoxConfig()
) -> np.ndarray:
    """(N, 4) float32 xyxy boxes (original pixels) around connected regions of feature clusters,
    larger regions first."""
    cells = valid_features(embedding)
    gh, gw, _ = cells.shape
    geometry = embedding.geometry
    grid = embedding.features.shape[-1]
    height, width = geometry.original_size
    # Original pixels per grid cell along y and x.
    cell_y = geometry.input_size / grid * height / geometry.resized_size[0]
    cell_x = geometry.input_size / grid * width / geometry.resized_size[1]
    scale = np.array([cell_x, cell_y, cell_x, cell_y])
    boxes, areas = [], []
    points = cells.reshape(-1, cells.shape[-1])
    if config.components is not None:
        points = principal_components(points, config.components)
    for k in config.clusters:
        labels = kmeans_labels(points, k, config.iterations, config.seed).reshape(gh, gw)
        for cluster in range(k):
            regions, sizes = label_components(labels == cluster)
            large = sizes >= config.min_cells
            boxes.append(label_boxes(regions)[large] * scale)
            areas.append(sizes[large])
    boxes = clip_boxes(np.concatenate(boxes), (height, width))
    if len(boxes) == 0:
        return boxes
    keep = box_nms(boxes, np.concatenate(areas).astype(np.float64), config.merge_iou)
    return boxes[keep[: config.max_boxes]]
