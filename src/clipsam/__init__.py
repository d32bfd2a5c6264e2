"""clipsam: text-prompted medical image segmentation (SaLIP and MedCLIP-SAM cascades).

``clipsam.segment`` and ``clipsam.Segmenter`` are imported on first use, so ``import clipsam``
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsam.api import Segmenter, segment

__all__ = ["Segmenter", "segment"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from clipsam import api

        return getattr(api, name)
    raise AttributeError(f"module 'clipsam' has no attribute {name!r}")
