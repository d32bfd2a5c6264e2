"""Image-text models by name: a small registry of loaders."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from clipsam.errors import InputError
from clipsam.models.clip.backend import ClipBackend
from clipsam.models.clip.biomedclip import load_biomedclip
from clipsam.models.clip.openai_clip import load_openai_clip
from clipsam.models.clip.sources import (
    BIOMEDCLIP,
    CLIP_VIT_B16,
    CLIP_VIT_B32,
    CLIP_VIT_L14,
    CLIP_VIT_L14_336,
    ModelFiles,
    model_file_paths,
)
from clipsam.models.image_text import ImageTextModel

Loader = Callable[[str | os.PathLike[str] | None], ClipBackend]

IMAGE_TEXT_MODELS: dict[str, Loader] = {
    "clip-vit-b32": partial(load_openai_clip, CLIP_VIT_B32, "clip-vit-b32"),
    "clip-vit-b16": partial(load_openai_clip, CLIP_VIT_B16, "clip-vit-b16"),
    "clip-vit-l14": partial(load_openai_clip, CLIP_VIT_L14, "clip-vit-l14"),
    "clip-vit-l14-336": partial(load_openai_clip, CLIP_VIT_L14_336, "clip-vit-l14-336"),
    "biomedclip": load_biomedclip,
}
MODEL_FILES: dict[str, ModelFiles] = {
    "clip-vit-b32": CLIP_VIT_B32,
    "clip-vit-b16": CLIP_VIT_B16,
    "clip-vit-l14": CLIP_VIT_L14,
    "clip-vit-l14-336": CLIP_VIT_L14_336,
    "biomedclip": BIOMEDCLIP,
}


def _known(name: str) -> None:
    if name not in IMAGE_TEXT_MODELS:
        raise InputError(f"unknown image-text model {name!r}; choose one of "
                         f"{', '.join(sorted(IMAGE_TEXT_MODELS))}")


def load_image_text_model(
    name: str, weights_dir: str | os.PathLike[str] | None = None, device: str = "cpu"
) -> ImageTextModel:
    """Load a registered model (``weights_dir`` first, then the usual weights lookup) onto
    ``device`` ("cpu" or "cuda")."""
    _known(name)
    return IMAGE_TEXT_MODELS[name](weights_dir).to(device)


def image_text_files(name: str, weights_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The files :func:`load_image_text_model` reads for ``name`` (fetched if need be)."""
    _known(name)
    return model_file_paths(MODEL_FILES[name], weights_dir)
