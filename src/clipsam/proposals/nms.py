"""Greedy non-maximum suppression over boxes or masks (numpy only).

Candidates are visited from the highest score down; each is kept unless its IoU with an already
kept candidate exceeds the threshold. Equal scores keep their input order.
"""

from __future__ import annotations

import numpy as np

from clipsam.postprocess.boxes import box_iou


def greedy_nms(iou: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS given the full (N, N) IoU matrix, best score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    suppressed = np.zeros(order.size, dtype=bool)
    keep = []
    for index in order:
        if suppressed[index]:
            continue
        keep.append(index)
        suppressed |= iou[index] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the (N, 4) xyxy boxes kept by greedy NMS, best score first."""
    return greedy_nms(box_iou(boxes, boxes), scores, iou_threshold)


def mask_iou(first: np.ndarray, second: np.ndarray, max_side: int | None = 128) -> np.ndarray:
    """(N, M) IoU of (N, H, W) and (M, H, W) bool masks; 0 where both are empty.

    With ``max_side`` the masks are subsampled (every k-th pixel) so their longer side is at most
    that, which bounds memory and time for many full-size masks at a small cost in precision.
    """
    a, b = np.asarray(first, bool), np.asarray(second, bool)
    if max_side is not None:
        step = max(1, -(-max(a.shape[1:]) // max_side))
        a, b = a[:, ::step, ::step], b[:, ::step, ::step]
    a = a.reshape(a.shape[0], -1).astype(np.float32)
    b = b.reshape(b.shape[0], -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mask_nms(
    masks: np.ndarray, scores: np.ndarray, iou_threshold: float, max_side: int | None = 128
) -> np.ndarray:
    """Indices of the (N, H, W) masks kept by greedy NMS on mask IoU, best score first."""
    return greedy_nms(mask_iou(masks, masks, max_side), scores, iou_threshold)
