"""PNG / JPEG (Pillow) and TIFF (tifffile) readers that keep the native bit depth."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic
from clipsam.io.image import MedicalImage
from clipsam.io.limits import check_pixel_count

_STACK_AXES = set("ZQITRE")


def read_pillow(path: Path, source_format: str, max_pixels: int) -> MedicalImage:
    """Gray stays (H, W), colour becomes (H, W, 3) (alpha dropped); 16-bit gray stays uint16.

    PNG/JPEG resolution tags are not trusted as physical sizes, so ``spacing`` is None.
    """
    with Image.open(path) as image:
        width, height = image.size
        check_pixel_count(path, (height, width), max_pixels)
        image.load()
        pixels = _pillow_pixels(image)
    return MedicalImage(pixels=pixels, spacing=None, source_format=source_format, path=path)


def _pillow_pixels(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        pixels = np.asarray(image)
        if mode.startswith("I;16"):
            pixels = pixels.astype(np.uint16, copy=False)
        return pixels
    if mode in ("1", "LA", "La"):
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGB"))


def read_tiff(path: Path, max_pixels: int) -> MedicalImage:
    """A gray or RGB page, or a stack of gray pages as a volume; any dtype, no truncation.

    ``spacing`` comes from the resolution tags only when their unit is the centimetre
    (inch-based resolutions are screen defaults in practice, not physical sizes).
    """
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"cannot read {path}: the TIFF holds no image")
        series = tif.series[0]
        axes, shape = series.axes, tuple(series.shape)
        spatial = tuple(n for a, n in zip(axes, shape, strict=True) if a not in "SC")
        check_pixel_count(path, spatial, max_pixels)
        pixels = series.asarray()
        spacing = _tiff_spacing(tif.pages[0])
    pixels, is_volume = _tiff_layout(path, pixels, axes)
    return MedicalImage(pixels=pixels, spacing=spacing, source_format="tiff", path=path,
                        is_volume=is_volume)


def _tiff_layout(path: Path, pixels: np.ndarray, axes: str) -> tuple[np.ndarray, bool]:
    """Reorder to (H, W), (H, W, 3) or (S, H, W) from tifffile's axes string."""
    squeezed = "".join(a for a, n in zip(axes, pixels.shape, strict=True) if n > 1 or a in "YX")
    pixels = pixels.reshape([n for a, n in zip(axes, pixels.shape, strict=True)
                             if n > 1 or a in "YX"])
    if squeezed == "YX":
        return pixels, False
    if squeezed in ("YXS", "SYX", "CYX", "YXC"):
        if squeezed[0] in "SC":
            pixels = np.moveaxis(pixels, 0, -1)
        if pixels.shape[-1] == 2:
            return pixels[..., 0], False
        if pixels.shape[-1] in (3, 4):
            return pixels[..., :3], False
    if len(squeezed) == 3 and squeezed.endswith("YX") and squeezed[0] in _STACK_AXES:
        return pixels, True
    raise InputError(f"cannot read {path}: unsupported TIFF layout (axes {axes}, "
                     f"shape {tuple(pixels.shape)})")


def _tiff_spacing(page: tifffile.TiffPage) -> tuple[float, float] | None:
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    if unit is None or int(unit.value) != 3:
        return None
    try:
        xres, yres = (tags[name].value for name in ("XResolution", "YResolution"))
        col = 10.0 * xres[1] / xres[0]
        row = 10.0 * yres[1] / yres[0]
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    return (row, col) if row > 0 and col > 0 else None


def write_map_tiff(path: str | os.PathLike[str], values: np.ndarray) -> Path:
    """Write an (H, W) float map as a float32 TIFF, atomically."""
    values = np.asarray(values, np.float32)
    if values.ndim != 2:
        raise InputError(f"cannot write {path}: a map must be (H, W), got {values.shape}")
    return write_atomic(path, lambda tmp: tifffile.imwrite(tmp, values))
