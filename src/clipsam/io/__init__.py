"""Reading medical images and writing masks, overlays and run records.

The public names below are imported on first use, so importing :mod:`clipsam.io.atomic` alone
stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsam.io.image import MedicalImage, segmenter_input
    from clipsam.io.masks import read_mask, write_mask_png
    from clipsam.io.nifti import write_mask_nifti
    from clipsam.io.overlay import write_overlay_png
    from clipsam.io.read import read_image
    from clipsam.io.record import write_record_json

_EXPORTS = {
    "MedicalImage": "clipsam.io.image",
    "segmenter_input": "clipsam.io.image",
    "read_image": "clipsam.io.read",
    "read_mask": "clipsam.io.masks",
    "write_mask_png": "clipsam.io.masks",
    "write_mask_nifti": "clipsam.io.nifti",
    "write_overlay_png": "clipsam.io.overlay",
    "write_record_json": "clipsam.io.record",
}
__all__ = [
    "MedicalImage",
    "read_image",
    "read_mask",
    "segmenter_input",
    "write_mask_nifti",
    "write_mask_png",
    "write_overlay_png",
    "write_record_json",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'clipsam.io' has no attribute {name!r}")
