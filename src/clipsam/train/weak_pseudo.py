"""Pseudo-masks: the text-prompted cascade's answer on each unlabelled training image, cached.

Masks go to ``<model_dir>/pseudo/<id>.png`` (0/255) as each image finishes, beside
``<id>_unsure.png``: the pixels where the teacher's own map disagrees with its mask (the
coarse mask of MedCLIP-SAM's saliency map against the segmenter's mask; empty for a method
without such a map). ``pseudo/source.json`` names the prompt, the method and the settings key
of the run that made them; a rerun with the same ones reuses every mask already there. An image
whose target the cascade reports as not found gets an empty mask (what training makes of it is
the not-found rule of :class:`clipsam.config.WeakTrainConfig`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clipsam.errors import InputError
from clipsam.io.atomic import write_text_atomic
from clipsam.io.image import segmenter_input
from clipsam.io.masks import read_mask, write_mask_png
from clipsam.io.read import read_image
from clipsam.models.segmenter import ImageEmbedding, PromptableSegmenter
from clipsam.pipelines.base import Pipeline, PipelineResult

PSEUDO_DIR = "pseudo"
SOURCE_NAME = "source.json"


@dataclass(frozen=True)
class UnlabelledImage:
    """A training image, its id (its path relative to the image folder, without suffix) and
    its subject (the person it shows, from the folder's ``meta.csv``; None: unknown, the image
    is its own subject)."""

    id: str
    path: Path
    subject: str | None = None


def load_plane(path: Path) -> np.ndarray:
    """The 2-D (H, W) or (H, W, 3) float32 image in a file (volumes are refused)."""
    return segmenter_input(read_image(path))


def pseudo_mask_path(model_dir: Path, image_id: str) -> Path:
    return Path(model_dir) / PSEUDO_DIR / f"{image_id}.png"


def unsure_mask_path(model_dir: Path, image_id: str) -> Path:
    return Path(model_dir) / PSEUDO_DIR / f"{image_id}_unsure.png"


def teacher_disagreement(result: PipelineResult) -> np.ndarray:
    """(H, W) bool: where the teacher's coarse map mask and its final mask differ (all False
    when the method keeps no coarse mask, or found nothing). A coarse mask of another shape
    than the mask is an error of the teacher (ValueError)."""
    mask = np.asarray(result.mask, bool) & bool(result.found)
    coarse = result.intermediates.get("coarse_mask")
    if coarse is None or not result.found:
        return np.zeros(mask.shape, bool)
    if np.shape(coarse) != mask.shape:
        raise ValueError(f"the teacher {result.method!r} gave a coarse mask of shape "
                         f"{np.shape(coarse)} for a mask of shape {mask.shape}")
    return np.asarray(coarse, bool) != mask


def _check_source(model_dir: Path, prompt: str, method: str, teacher: str) -> None:
    source = Path(model_dir) / PSEUDO_DIR / SOURCE_NAME
    wanted = {"prompt": prompt, "method": method, "teacher": teacher}
    if source.is_file():
        cached = json.loads(source.read_text(encoding="utf-8"))
        if cached != wanted:
            raise InputError(f"{source.parent} holds pseudo-masks for prompt "
                             f"{cached.get('prompt')!r} by {cached.get('method')!r} with settings "
                             f"{cached.get('teacher')!r}: use another output folder or delete it")
    else:
        write_text_atomic(source, json.dumps(wanted))


def make_pseudo_masks(
    images: Sequence[UnlabelledImage],
    pipeline: Pipeline,
    prompt: str,
    model_dir: Path,
    encoder: PromptableSegmenter | None = None,
    progress: bool = True,
    teacher: str = "",
    keep: dict[str, ImageEmbedding] | None = None,
) -> dict[str, bool]:
    """Run ``pipeline`` on every image lacking a cached mask; return id -> target found.

    ``encoder`` (the pipeline's segmenter) encodes each image first when given, so the pipeline
    gets the embedding it would get from :class:`clipsam.api.Segmenter`; with ``keep``, each
    such embedding is also stored there by image id, its features as float16 (a head network
    trains on them without encoding again). ``teacher``: the settings key of the run
    behind ``pipeline``; cached masks of other settings are refused.
    """
    _check_source(model_dir, prompt, pipeline.name, teacher)
    found = {}
    for item in tqdm(images, desc="pseudo-masks", unit="image", disable=not progress):
        target = pseudo_mask_path(model_dir, item.id)
        unsure = unsure_mask_path(model_dir, item.id)
        if not (target.is_file() and unsure.is_file()):
            plane = load_plane(item.path)
            embedding = encoder.encode(plane) if encoder is not None else None
            if keep is not None and embedding is not None:
                keep[item.id] = replace(embedding, features=embedding.features.astype(np.float16))
            result = pipeline.run(plane, prompt, embedding=embedding, keep_intermediates=True)
            mask = np.asarray(result.mask, dtype=bool) & bool(result.found)
            if mask.shape != plane.shape[:2]:
                raise InputError(f"{pipeline.name} returned a {mask.shape} mask for "
                                 f"{item.path} of size {plane.shape[:2]}")
            write_mask_png(unsure, teacher_disagreement(result))
            write_mask_png(target, mask)
        found[item.id] = bool(read_mask(target).any())
    return found
