"""clipsam's built-in offline text-grounding model (the default text stage).

The torch heads (``GroundingHeads``, ``HeadsConfig``) are imported on first use, so loading a
model for the ONNX path does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from clipsam.models.grounding.model import (
    GroundingModel,
    PresenceRule,
    builtin_model_dir,
    load_grounding_model,
)
from clipsam.models.grounding.text_encoder import SentenceEncoder

if TYPE_CHECKING:
    from clipsam.models.grounding.heads import GroundingHeads, HeadsConfig

__all__ = ["GroundingHeads", "GroundingModel", "HeadsConfig", "PresenceRule", "SentenceEncoder",
           "builtin_model_dir", "load_grounding_model"]


def __getattr__(name: str) -> Any:
    if name in ("GroundingHeads", "HeadsConfig"):
        return getattr(import_module("clipsam.models.grounding.heads"), name)
    raise AttributeError(f"module 'clipsam.models.grounding' has no attribute {name!r}")
