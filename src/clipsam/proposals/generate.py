"""Segment everything: decode a grid of prompts against one image embedding, keep good masks.

The procedure is SAM's automatic mask generator (Kirillov et al., "Segment Anything", ICCV 2023,
appendix): a grid of prompts decoded in batches, masks filtered by the predicted IoU and by the
stability score, near-duplicates removed by greedy NMS, optionally small islands and holes
cleaned. Segmenters that take points get SAM's point grid; box-only segmenters (LiteMedSAM,
whose point prompts give empty masks) get boxes around regions of similar encoder features
(:mod:`clipsam.proposals.feature_boxes`) or multi-scale box grids, serving the same role.

Every decoded prompt costs a full mask-decoder pass (for LiteMedSAM on a CPU about a twentieth
of an encoder pass), so box-only proposals default to a dozen feature boxes rather than a grid,
all decoded in one segmenter call (prompts go to the segmenter ``batch_size`` at a time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from clipsam.config import ProposalConfig
from clipsam.errors import InputError
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.postprocess.boxes import expand_boxes, masks_to_boxes
from clipsam.postprocess.components import drop_specks, fill_holes
from clipsam.proposals.feature_boxes import feature_boxes
from clipsam.proposals.nms import box_nms, mask_nms
from clipsam.proposals.prompts import box_grid, point_grid
from clipsam.proposals.quality import stability_score
from clipsam.proposals.result import Proposals

# Box-only defaults: LiteMedSAM's IoU head and logits are less confident than SAM's (on a handful
# of development images its best-matching masks scored 0.80-0.98 predicted IoU and 0.77-0.98
# stability, medians 0.7 and 0.65), so SAM's 0.88 / 0.95 would discard nearly every mask.
# Each box is also decoded grown by 20 % per side: feature regions often stop inside an organ's
# boundary (the brain inside the fetal skull), and LiteMedSAM, trained on loose boxes, answers
# the grown box with the whole organ (docs/BENCHMARKS.md, "SaLIP rules", chosen on training
# images).
BOX_PROMPT_DEFAULTS = ProposalConfig(pred_iou_threshold=0.75, stability_threshold=0.75,
                                     box_margins=(0.0, 0.2))


def defaults_for(supports_points: bool) -> ProposalConfig:
    """SAM's defaults for point-capable segmenters, :data:`BOX_PROMPT_DEFAULTS` otherwise."""
    return ProposalConfig() if supports_points else BOX_PROMPT_DEFAULTS


def default_config(segmenter: PromptableSegmenter) -> ProposalConfig:
    """:func:`defaults_for` the segmenter."""
    return defaults_for(segmenter.supports_points)


def prompt_kind(segmenter: PromptableSegmenter, config: ProposalConfig) -> str:
    """``"points"`` or ``"boxes"``: what ``config`` asks for, resolved against the segmenter."""
    if config.prompts == "auto":
        return "points" if segmenter.supports_points else "boxes"
    if config.prompts == "points" and not segmenter.supports_points:
        raise InputError(f"segmenter {segmenter.name} does not take point prompts; use boxes")
    if config.prompts not in ("points", "boxes"):
        raise InputError(f"unknown prompt kind {config.prompts!r}; use auto, points or boxes")
    return config.prompts


def _decode_batch(
    segmenter: PromptableSegmenter,
    embedding: ImageEmbedding,
    prompts: np.ndarray,
    kind: str,
    config: ProposalConfig,
) -> Proposals:
    if kind == "points":
        pred = segmenter.predict(embedding, points=prompts[:, None, :],
                                 point_labels=np.ones((len(prompts), 1), np.int64))
    else:
        pred = segmenter.predict(embedding, boxes=prompts)
    masks = np.asarray(pred.masks, dtype=bool)
    scores = np.asarray(pred.scores, dtype=np.float32)
    stability = stability_score(pred.low_res_logits, config.mask_threshold,
                                config.stability_offset)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    keep = ((scores >= config.pred_iou_threshold) & (stability >= config.stability_threshold)
            & (areas > 0) & (areas <= config.max_area_fraction * masks[0].size))
    index = np.flatnonzero(keep)
    return Proposals(masks[index], masks_to_boxes(masks[index]), scores[index],
                     stability[index], areas[index].astype(np.int64))


def _suppress(proposals: Proposals, config: ProposalConfig) -> Proposals:
    if len(proposals) == 0:
        return proposals
    if config.nms == "mask":
        keep = mask_nms(proposals.masks, proposals.scores, config.nms_threshold)
    else:
        keep = box_nms(proposals.boxes, proposals.scores, config.nms_threshold)
    return proposals.take(keep)


def _clean_regions(proposals: Proposals, min_fraction: float) -> Proposals:
    """Remove small islands and holes from every (of at least one) mask; drop masks left empty."""
    masks = np.stack([
        fill_holes(drop_specks(mask, min_fraction, relative_to="image"), max_fraction=min_fraction)
        for mask in proposals.masks
    ])
    areas = masks.reshape(len(masks), -1).sum(axis=1).astype(np.int64)
    cleaned = replace(proposals, masks=masks, boxes=masks_to_boxes(masks), areas=areas)
    return cleaned.take(areas > 0)


def generate_proposals(
    segmenter: PromptableSegmenter,
    embedding: ImageEmbedding,
    config: ProposalConfig | None = None,
    relevant: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Proposals:
    """Candidate masks of everything in the image encoded as ``embedding``, best score first.

    The embedding is reused for every batch; nothing is re-encoded. Without ``config``,
    :func:`default_config` picks one for the segmenter. ``relevant`` maps (N, 4) box prompts
    to an (N,) bool of those worth decoding (box prompts only; a caller that can tell which
    boxes its retrieval could never pick saves their decoder passes).
    """
    config = config or default_config(segmenter)
    if config.batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {config.batch_size}")
    if config.nms not in ("box", "mask"):
        raise InputError(f"unknown NMS kind {config.nms!r}; use box or mask")
    if config.box_source not in ("features", "grid"):
        raise InputError(f"unknown box source {config.box_source!r}; use features or grid")
    kind = prompt_kind(segmenter, config)
    if kind == "boxes" and (not config.box_margins or min(config.box_margins) <= -0.5):
        raise InputError(f"box_margins must hold at least one margin above -0.5 (0: the box "
                         f"itself), got {config.box_margins}")
    size = tuple(embedding.geometry.original_size)
    if kind == "points":
        prompts = point_grid(size, config.points_per_side)
    elif config.box_source == "features":
        prompts = feature_boxes(embedding, config.feature_boxes)
    else:
        prompts = box_grid(size, config.box_grid)
    if kind == "boxes":
        prompts = np.concatenate([expand_boxes(prompts, size, fraction=margin)
                                  for margin in config.box_margins])
        if relevant is not None and len(prompts):
            prompts = prompts[np.asarray(relevant(prompts), bool)]
    parts = [
        _decode_batch(segmenter, embedding, prompts[start:start + config.batch_size], kind, config)
        for start in range(0, len(prompts), config.batch_size)
    ]
    proposals = _suppress(Proposals.concatenate(parts, size), config)
    if config.min_region_fraction > 0 and len(proposals):
        proposals = _suppress(_clean_regions(proposals, config.min_region_fraction), config)
    return proposals
