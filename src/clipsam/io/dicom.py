"""DICOM reader (pydicom): physical values, display window, MONOCHROME1, pixel spacing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from clipsam.errors import InputError
from clipsam.io.image import MedicalImage
from clipsam.io.limits import check_pixel_count


def read_dicom(path: Path, max_pixels: int) -> MedicalImage:
    """Read one DICOM file as float32 values.

    Gray images get RescaleSlope/RescaleIntercept, then, when the file gives one, the first VOI
    window (WindowCenter/WindowWidth, DICOM PS3.3 C.11.2.1.2 linear function) as a clip to its
    range, keeping the rescaled units. MONOCHROME1 images are inverted within their range
    (window or data range) so that brighter always means higher signal. Multi-frame files are
    volumes of frames. ``spacing`` is PixelSpacing, else ImagerPixelSpacing, else None.
    """
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, force=True)
    if "PixelData" not in ds:
        raise InputError(f"cannot read {path}: the DICOM file holds no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    check_pixel_count(path, (frames, rows, cols), max_pixels)
    samples = int(ds.get("SamplesPerPixel", 1))
    pixels = np.asarray(ds.pixel_array)
    metadata: dict[str, object] = {"photometric": str(ds.get("PhotometricInterpretation", ""))}
    if samples == 1:
        pixels, metadata["window"] = _gray_values(ds, pixels)
    else:
        pixels = pixels[..., :3].astype(np.float32)
    is_volume = frames > 1
    if is_volume and samples != 1:
        raise InputError(f"cannot read {path}: multi-frame colour DICOM is not supported")
    return MedicalImage(pixels=pixels, spacing=_spacing(ds), source_format="dicom", path=path,
                        is_volume=is_volume, metadata=metadata)


def _gray_values(ds: pydicom.Dataset, stored: np.ndarray) -> tuple[np.ndarray, object]:
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    values = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    window = _window(ds)
    if window is not None:
        values = np.clip(values, *window)
        low, high = window
    else:
        low, high = float(values.min()), float(values.max())
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = np.float32(low + high) - values
    return values.astype(np.float32, copy=False), window


def _window(ds: pydicom.Dataset) -> tuple[float, float] | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    center = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
    width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
    if width < 1:
        return None
    return center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2


def _spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            row, col = float(value[0]), float(value[1])
            if row > 0 and col > 0:
                return row, col
    return None
