"""Image-text models by name: a small registry of loaders."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from clipsam.errors import InputError
from clipsam.models.clip.biomedclip import load_biomedclip
from clipsam.models.clip.openai_clip import load_openai_clip
from clipsam.models.clip.sources import (
    CLIP_VIT_B16,
    CLIP_VIT_B32,
    CLIP_VIT_L14,
    CLIP_VIT_L14_336,
)
from clipsam.models.image_text import ImageTextModel

Loader = Callable[[str | os.PathLike[str] | None], ImageTextModel]

IMAGE_TEXT_MODELS: dict[str, Loader] = {
    "clip-vit-b32": partial(load_openai_clip, CLIP_VIT_B32, "clip-vit-b32"),
    "clip-vit-b16": partial(load_openai_clip, CLIP_VIT_B16, "clip-vit-b16"),
    "clip-vit-l14": partial(load_openai_clip, CLIP_VIT_L14, "clip-vit-l14"),
    "clip-vit-l14-336": partial(load_openai_clip, CLIP_VIT_L14_336, "clip-vit-l14-336"),
    "biomedclip": load_biomedclip,
}


def load_image_text_model(
    name: str, weights_dir: str | os.PathLike[str] | None = None
) -> ImageTextModel:
    """Load a registered model (``weights_dir`` first, then the usual weights lookup)."""
    try:
        loader = IMAGE_TEXT_MODELS[name]
    except KeyError:
        raise InputError(f"unknown image-text model {name!r}; choose one of "
                         f"{', '.join(sorted(IMAGE_TEXT_MODELS))}") from None
    return loader(weights_dir)
