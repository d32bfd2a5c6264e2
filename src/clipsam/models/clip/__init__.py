"""CLIP-family image-text backends: OpenAI CLIP ViTs and BiomedCLIP, loaded from upstream files."""

from clipsam.models.clip.backend import ClipBackend
from clipsam.models.clip.biomedclip import BiomedClip, load_biomedclip
from clipsam.models.clip.factory import IMAGE_TEXT_MODELS, load_image_text_model
from clipsam.models.clip.openai_clip import OpenAIClip, load_openai_clip
from clipsam.models.clip.preprocess import ClipPreprocess, to_rgb_uint8

__all__ = [
    "IMAGE_TEXT_MODELS",
    "BiomedClip",
    "ClipBackend",
    "ClipPreprocess",
    "OpenAIClip",
    "load_biomedclip",
    "load_image_text_model",
    "load_openai_clip",
    "to_rgb_uint8",
]
