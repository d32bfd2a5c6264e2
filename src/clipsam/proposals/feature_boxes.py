"""Box prompts from the image embedding itself: regions of similar encoder features.

Decoding a box costs a full pass of the mask decoder, so box-only segmenters cannot afford a
dense box grid on a CPU. The encoder's feature map (one 256-d vector per 16x16 input pixels)
already separates the image into regions; clustering it at a few granularities and boxing each
connected region gives a few dozen object-aligned boxes, the kind of tight box LiteMedSAM and
MedSAM were trained to answer. Label-free, deterministic (seeded k-means++).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from clipsam.models.segmenter import ImageEmbedding
from clipsam.proposals.nms import box_nms


@dataclass(frozen=True)
class FeatureBoxConfig:
    """``clusters``: k of each k-means run (coarse to fine), on the unit feature vectors, or on
    their projection onto the first ``components`` principal axes if set (faster, but on 12
    development images across 4 sets 16 axes gave a lower best-mask IoU, 0.73 vs 0.77);
    ``min_cells``: smallest region, in feature-grid
    cells, that gets a box; at most ``max_boxes`` boxes, larger regions first, after merging
    boxes that overlap by more than ``merge_iou``."""

    clusters: tuple[int, ...] = (2, 4, 6, 8)
    components: int | None = None
    min_cells: int = 4
    max_boxes: int = 48
    merge_iou: float = 0.8
    iterations: int = 15
    seed: int = 0


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
    boxes, areas = [], []
    points = cells.reshape(-1, cells.shape[-1])
    if config.components is not None:
        points = principal_components(points, config.components)
    for k in config.clusters:
        labels = kmeans_labels(points, k, config.iterations, config.seed).reshape(gh, gw)
        for cluster in range(k):
            regions, _ = ndimage.label(labels == cluster, structure=np.ones((3, 3)))
            sizes = np.bincount(regions.ravel())
            for index, found in enumerate(ndimage.find_objects(regions), start=1):
                if found is None or sizes[index] < config.min_cells:
                    continue
                rows, cols = found
                boxes.append([cols.start * cell_x, rows.start * cell_y,
                              cols.stop * cell_x, rows.stop * cell_y])
                areas.append(sizes[index])
    if not boxes:
        return np.zeros((0, 4), np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    keep = box_nms(boxes, np.asarray(areas, dtype=np.float64), config.merge_iou)
    return boxes[keep[: config.max_boxes]]
