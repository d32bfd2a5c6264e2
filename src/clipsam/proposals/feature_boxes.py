"""Box prompts from the image embedding itself: distinct regions of similar encoder features.

Decoding a box costs a full pass of the mask decoder (about a twentieth of an encoder pass for
LiteMedSAM on a CPU), so box-only segmenters get about a dozen boxes, not a dense grid. The
encoder's feature map (one 256-d vector per 4x4 model-input pixels) already separates the
image into regions: k-means at several k (coarse to fine) on its main principal axes gives a
pool of connected regions at every scale, each ranked by its distinctness: how much its mean
feature differs from that of the rest of its box grown by a few cells, times the square root
of its size. Whole organs and lesions come first; fragments of uniform tissue, background and
the thin strips the encoder leaves along the image border come last or not at all. The best
boxes are kept after box NMS: the kind of tight box LiteMedSAM and MedSAM were trained to
answer. Label-free, deterministic (seeded k-means++).
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


def principal_components(points: np.ndarray, count: int, step: int = 1) -> np.ndarray:
    """(N, count) coordinates of the centred rows of ``points`` on their main principal axes,
    estimated from every ``step``-th row."""
    sample = points[::step]
    mean = sample.mean(axis=0)
    centred = sample - mean
    _, axes = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    return (points - mean) @ axes[:, ::-1][:, :count]


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


def cluster_regions(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The connected regions of every cluster of a (gh, gw) map of cluster indices 0..k-1:
    a label image numbering them 1..R over all clusters, and their (R,) sizes in cells."""
    regions = np.zeros(labels.shape, np.int64)
    sizes = []
    for cluster in range(k):
        found, size = label_components(labels == cluster)
        regions[found > 0] = found[found > 0] + sum(len(s) for s in sizes)
        sizes.append(size)
    return regions, np.concatenate(sizes)


def integral_image(cells: np.ndarray) -> np.ndarray:
    """(gh + 1, gw + 1, C + 1) cumulative sums along both axes of the (gh, gw, C) cells with a
    count channel of ones appended, zero first row and column."""
    gh, gw, channels = cells.shape
    integral = np.zeros((gh + 1, gw + 1, channels + 1), np.float32)
    integral[1:, 1:, :channels] = cells
    integral[1:, 1:, channels] = 1.0
    return integral.cumsum(axis=0).cumsum(axis=1)


def distinctness(cells: np.ndarray, integral: np.ndarray, regions: np.ndarray,
                 boxes: np.ndarray, ring: int) -> np.ndarray:
    """(R,) how much each region 1..R of the (gh, gw) label image ``regions`` stands out among
    the (gh, gw, C) unit ``cells``: 1 - cosine between its mean feature and that of the other
    cells of its (R, 4) grid box grown by ``ring`` cells, times the square root of its size in
    cells (0 when the grown box holds nothing else). ``integral``: :func:`integral_image`."""
    gh, gw, channels = cells.shape
    onehot = regions.reshape(1, -1) == np.arange(1, len(boxes) + 1)[:, None]
    inside = onehot.astype(np.float32) @ cells.reshape(-1, channels)
    size = onehot.sum(axis=1)
    grown = np.clip(boxes.astype(np.int64) + np.array([-ring, -ring, ring, ring]), 0,
                    np.array([gw, gh, gw, gh]))
    x1, y1, x2, y2 = grown.T
    around = integral[y2, x2] - integral[y1, x2] - integral[y2, x1] + integral[y1, x1]
    outside = around[:, :channels] - inside
    norms = np.linalg.norm(inside, axis=1) * np.linalg.norm(outside, axis=1)
    cosine = (inside * outside).sum(axis=1) / np.maximum(norms, 1e-12)
    return np.where(around[:, channels] > size, (1.0 - cosine) * np.sqrt(size), 0.0)


def feature_boxes(
    embedding: ImageEmbedding, config: FeatureBoxConfig = FeatureBoxConfig()
) -> np.ndarray:
    """(N, 4) float32 xyxy boxes (original pixels) around the most distinct connected regions
    of feature clusters, most distinct first; N <= ``config.max_boxes``."""
    cells = valid_features(embedding)
    gh, gw, _ = cells.shape
    geometry = embedding.geometry
    grid = embedding.features.shape[-1]
    height, width = geometry.original_size
    # Original pixels per grid cell along y and x.
    cell_y = geometry.input_size / grid * height / geometry.resized_size[0]
    cell_x = geometry.input_size / grid * width / geometry.resized_size[1]
    points = cells.reshape(-1, cells.shape[-1])
    if config.components is not None:
        points = principal_components(points, config.components, step=4)
    integral = integral_image(cells)
    boxes, scores = [], []
    for k in config.clusters:
        labels = kmeans_labels(points, k, config.iterations, config.seed).reshape(gh, gw)
        regions, sizes = cluster_regions(labels, k)
        grid_boxes = label_boxes(regions)
        sides = (grid_boxes[:, 2:] - grid_boxes[:, :2]).min(axis=1)
        kept = ((sizes >= config.min_cells) & (sides >= config.min_side)
                & (sizes <= config.max_share * gh * gw))
        boxes.append(grid_boxes[kept])
        scores.append(distinctness(cells, integral, regions, grid_boxes, config.ring)[kept])
    boxes = clip_boxes(np.concatenate(boxes) * np.array([cell_x, cell_y, cell_x, cell_y]),
                       (height, width))
    if len(boxes) == 0:
        return boxes
    keep = box_nms(boxes, np.concatenate(scores), config.merge_iou)
    return boxes[keep[: config.max_boxes]]
