"""CLIP-family image-text backends: OpenAI CLIP ViTs and BiomedCLIP, loaded from upstream files.

The names below are imported on first use (they load torch and transformers), so reading
:mod:`clipsam.models.clip.sources` alone stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsam.models.clip.backend import ClipBackend
    from clipsam.models.clip.biomedclip import BiomedClip, load_biomedclip
    from clipsam.models.clip.factory import IMAGE_TEXT_MODELS, load_image_text_model
    from clipsam.models.clip.openai_clip import OpenAIClip, load_openai_clip
    from clipsam.models.clip.preprocess import ClipPreprocess, to_rgb_uint8

_EXPORTS = {
    "ClipBackend": "clipsam.models.clip.backend",
    "BiomedClip": "clipsam.models.clip.biomedclip",
    "load_biomedclip": "clipsam.models.clip.biomedclip",
    "IMAGE_TEXT_MODELS": "clipsam.models.clip.factory",
    "load_image_text_model": "clipsam.models.clip.factory",
    "OpenAIClip": "clipsam.models.clip.openai_clip",
    "load_openai_clip": "clipsam.models.clip.openai_clip",
    "ClipPreprocess": "clipsam.models.clip.preprocess",
    "to_rgb_uint8": "clipsam.models.clip.preprocess",
}
__all__ = ["IMAGE_TEXT_MODELS", "BiomedClip", "ClipBackend", "ClipPreprocess", "OpenAIClip",
           "load_biomedclip", "load_image_text_model", "load_openai_clip", "to_rgb_uint8"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clipsam.models.clip' has no attribute {name!r}")
