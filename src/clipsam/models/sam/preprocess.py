"""Image in, model input out (resize longest side, normalise, pad); low-res logits back to
full-resolution masks; prompts as labelled points in the model-input frame."""

from __future__ import annotations

import numpy as np

from clipsam.errors import InputError
from clipsam.models.resample import resize_bilinear
from clipsam.models.sam.architecture import (
    BOX_BOTTOM_RIGHT,
    BOX_TOP_LEFT,
    PAD_LABEL,
    Normalisation,
)
from clipsam.models.segmenter import Geometry

PREPROCESS_REVISION = 2  # 2: numpy resampling (clipsam.models.resample) instead of torch's
"""Part of a segmenter's identity for stored embeddings: bump when prepared inputs change."""

# SAM's ImageNet statistics on the 0-255 scale (segment_anything.modeling.Sam).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def resized_size(original: tuple[int, int], input_size: int) -> tuple[int, int]:
    """(h, w) with the longest side equal to ``input_size`` and the aspect ratio kept."""
    h, w = original
    scale = input_size / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def as_three_channels(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) with C in 1, 3, 4 -> finite float32 (H, W, 3); alpha is dropped."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = image[..., :3] if image.shape[2] != 1 else image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be (H, W) or (H, W, 1|3|4), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"image is empty (shape {image.shape})")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise InputError(f"image must be real-valued numbers, got dtype {image.dtype}")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise InputError("image contains NaN or infinite values")
    return image


def prepare_image(image: np.ndarray, input_size: int,
                  normalisation: Normalisation) -> tuple[np.ndarray, Geometry]:
    """The (1, 3, S, S) float32 model input and the geometry that maps results back.

    The image is resized (bilinear, antialiased) so its longest side is S, then normalised:
    "minmax" to [0, 1] over the whole resized image (a constant image becomes 0); "sam_pixel"
    keeps uint8 values (other types are min-max scaled to 0-255) and standardises with SAM's
    pixel mean/std. Padding (right and bottom) is zero after normalisation.
    """
    original_dtype = np.asarray(image).dtype
    rgb = as_three_channels(image)
    original = (rgb.shape[0], rgb.shape[1])
    size = resized_size(original, input_size)
    planes = resize_bilinear(rgb.transpose(2, 0, 1), size, antialias=True)
    if normalisation == "minmax" or original_dtype != np.uint8:
        low, high = planes.min(), planes.max()
        planes = (planes - low) / max(high - low, np.float32(1e-8))
    if normalisation == "sam_pixel":
        planes = np.clip(planes, 0, 255) if original_dtype == np.uint8 else planes * 255.0
        mean = np.asarray(SAM_PIXEL_MEAN, np.float32)[:, None, None]
        std = np.asarray(SAM_PIXEL_STD, np.float32)[:, None, None]
        planes = (planes - mean) / std
    padded = np.zeros((1, 3, input_size, input_size), np.float32)
    padded[0, :, :size[0], :size[1]] = planes
    return padded, Geometry(original, size, input_size)


def check_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) or (4,) xyxy boxes in original pixels -> validated float32 (N, 4)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim == 1 and boxes.shape[0] == 4:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"boxes must be (N, 4) xyxy, got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise InputError("boxes contain NaN or infinite values")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise InputError("boxes must be xyxy with x2 >= x1 and y2 >= y1")
    return boxes


def check_points(points: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, 2) xy points and (N, P) labels in {0, 1} -> validated float32 arrays."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim == 2 and points.shape[1] == 2:
        points = points[:, None, :]
    if points.ndim != 3 or points.shape[2] != 2 or points.shape[1] == 0:
        raise InputError(f"points must be (N, P, 2) xy, got shape {points.shape}")
    if labels is None:
        raise InputError("point_labels are required with points (1 foreground, 0 background)")
    labels = np.asarray(labels)
    if labels.shape != points.shape[:2] and labels.size == points.shape[0] * points.shape[1]:
        labels = labels.reshape(points.shape[:2])
    if labels.shape != points.shape[:2]:
        raise InputError(f"point_labels must be {points.shape[:2]}, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise InputError("point_labels must be 1 (foreground) or 0 (background)")
    if not np.isfinite(points).all():
        raise InputError("points contain NaN or infinite values")
    return points, labels.astype(np.float32)


def prompt_points(geometry: Geometry, boxes: np.ndarray | None,
                  points: np.ndarray | None,
                  labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validated prompts -> (N, P, 2) coordinates in the input frame and (N, P) labels:
    clicks first, then the two box corners; without a box a padding point is appended
    (as SAM's prompt encoder does)."""
    parts_xy: list[np.ndarray] = []
    parts_label: list[np.ndarray] = []
    n = None
    if points is not None:
        points, labels = check_points(points, labels)
        n = points.shape[0]
        parts_xy.append(geometry.points_to_input(points))
        parts_label.append(labels)
    if boxes is not None:
        boxes = check_boxes(boxes)
        if n is not None and boxes.shape[0] != n:
            raise InputError(f"got {boxes.shape[0]} boxes but {n} point sets; one of each "
                             "per prompt")
        n = boxes.shape[0]
        parts_xy.append(geometry.boxes_to_input(boxes).reshape(n, 2, 2))
        parts_label.append(np.tile(np.array([[BOX_TOP_LEFT, BOX_BOTTOM_RIGHT]], np.float32),
                                   (n, 1)))
    else:
        parts_xy.append(np.zeros((n, 1, 2), np.float32))
        parts_label.append(np.full((n, 1), PAD_LABEL, np.float32))
    return (np.concatenate(parts_xy, axis=1).astype(np.float32),
            np.concatenate(parts_label, axis=1).astype(np.float32))
