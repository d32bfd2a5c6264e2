"""From a grounding probability map to box prompts for the segmenter."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clipsam.models.grounding.grid import grid_box_to_image
from clipsam.models.segmenter import Geometry


def map_to_boxes(
    prob: np.ndarray, geometry: Geometry, threshold: float = 0.5, keep_fraction: float = 0.3
) -> np.ndarray:
    """(K, 4) xyxy boxes in original pixels around the large connected regions of ``prob``.

    Cells >= ``threshold`` are grouped into 8-connected components; every component with at
    least ``keep_fraction`` of the largest one's probability mass gets a box. When no cell
    reaches the threshold, half the map's peak is used instead, so the peak region is boxed.
    """
    prob = np.asarray(prob, np.float32)
    if prob.max() <= 0:
        return np.zeros((0, 4), np.float32)
    level = threshold if prob.max() >= threshold else 0.5 * float(prob.max())
    labels, count = ndimage.label(prob >= level, structure=np.ones((3, 3)))
    mass = ndimage.sum(prob, labels, index=np.arange(1, count + 1))
    boxes = []
    for index in np.flatnonzero(mass >= keep_fraction * mass.max()):
        rows, cols = np.nonzero(labels == index + 1)
        boxes.append(grid_box_to_image(np.array([cols.min(), rows.min(), cols.max() + 1,
                                                 rows.max() + 1]), geometry, prob.shape[-1]))
    return np.asarray(boxes, np.float32)
