"""The in-memory image every reader returns, and what segmenters are given from it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clipsam.errors import InputError


@dataclass(frozen=True)
class MedicalImage:
    """An image as read from disk, in its native numeric range.

    ``pixels`` is (H, W) for gray, (H, W, 3) for RGB, or (S, H, W) for a volume of S gray slices
    (``is_volume``; (S, H, W, 3) for the RGB frames of a colour cine). Raster files (PNG, JPEG,
    TIFF) keep their own dtype (uint8, uint16, ...); DICOM and NIfTI are float32 physical values
    (after rescale slope/intercept).
    ``spacing`` is the (row, col) pixel size in mm, or None when the file does not say.
    ``affine`` and ``header`` are kept for NIfTI so outputs can be written in the same space;
    a DICOM series gets the NIfTI-style ``affine`` of its geometry (no header).
    """

    pixels: np.ndarray
    spacing: tuple[float, float] | None
    source_format: str
    path: Path | None = None
    is_volume: bool = False
    affine: np.ndarray | None = None
    header: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of one image or slice."""
        shape = self.pixels.shape
        return (shape[1], shape[2]) if self.is_volume else (shape[0], shape[1])

    @property
    def num_slices(self) -> int:
        return self.pixels.shape[0] if self.is_volume else 1

    @property
    def voxel_spacing(self) -> tuple[float, float, float] | None:
        """(slice, row, col) voxel size in mm: the lengths of the affine's (slice, row, column)
        steps; None when the file gives no pixel spacing or no affine (a raster image)."""
        if self.affine is None or self.spacing is None:
            return None
        steps = np.linalg.norm(np.asarray(self.affine, np.float64)[:3, :3], axis=0)
        if not (steps > 0).all():
            return None
        return float(steps[2]), float(steps[1]), float(steps[0])

    def slice(self, index: int) -> MedicalImage:
        """Slice ``index`` of a volume as a 2-D image (a 2-D image returns itself for 0)."""
        if not 0 <= index < self.num_slices:
            raise InputError(f"slice {index} is out of range for {self.path or 'image'} "
                             f"({self.num_slices} slices)")
        if not self.is_volume:
            return self
        return replace(self, pixels=self.pixels[index], is_volume=False,
                       metadata={**self.metadata, "slice_index": index})

    def slices(self) -> Iterator[MedicalImage]:
        """Every 2-D image in order: one for a 2-D image, S for a volume."""
        for index in range(self.num_slices):
            yield self.slice(index)


def segmenter_input(image: MedicalImage) -> np.ndarray:
    """The (H, W) or (H, W, 3) float32 array a segmenter encodes, from a 2-D image.

    Segmenters normalise intensity themselves, so the native range is kept; non-finite values
    (NaN in some NIfTI files) are replaced by the smallest finite value.
    """
    if image.is_volume:
        raise InputError(f"{image.path or 'image'} is a volume of {image.num_slices} slices: "
                         "segment it slice by slice")
    pixels = np.asarray(image.pixels, dtype=np.float32)
    finite = np.isfinite(pixels)
    if not finite.all():
        if not finite.any():
            raise InputError(f"{image.path or 'image'} has no finite pixel values")
        pixels = np.where(finite, pixels, pixels[finite].min())
    return pixels
