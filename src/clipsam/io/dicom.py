"""DICOM reader (pydicom): physical values, display window, MONOCHROME1, pixel spacing; a file,
or a folder holding one series of slices read as a volume."""

from __future__ import annotations

from collections.abc import Sequence
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
    (window or data range) so that brighter always means higher signal. Colour images (RGB, or
    YCbCr, which pydicom converts to RGB) are (H, W, 3). Multi-frame files are volumes of frames
    ((F, H, W), or (F, H, W, 3) for a colour cine). ``spacing`` is PixelSpacing, else
    ImagerPixelSpacing, else None.
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
    metadata["dicom_files"] = (path,)
    return MedicalImage(pixels=pixels, spacing=_spacing(ds), source_format="dicom", path=path,
                        is_volume=is_volume, metadata=metadata)


DICOM_SUFFIXES = (".dcm", ".dicom")
_GEOMETRY_TAGS = ("SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                  "NumberOfFrames", "Rows", "Columns")


def series_uid(path: Path) -> str | None:
    """The SeriesInstanceUID of a single-frame DICOM image that has a position and orientation
    (a slice of a 3-D series), else None (also for unreadable files)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_GEOMETRY_TAGS),
                             force=True)
    except Exception:  # pydicom raises many types on junk; such a file is simply not a slice
        return None
    if int(ds.get("NumberOfFrames", 1) or 1) != 1 or not all(
            ds.get(tag) for tag in _GEOMETRY_TAGS if tag != "NumberOfFrames"):
        return None
    return str(ds.SeriesInstanceUID)


def series_slices(folder: Path) -> list[Path] | None:
    """The files (in name order) of the one series of at least two slices among the DICOM files
    (by suffix) directly inside ``folder``; None when there is no such series.

    Other DICOM files there (single images, a SEG, a series of one slice) are not part of it.
    Raises :class:`InputError` when the folder holds several series of slices.
    """
    groups: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(DICOM_SUFFIXES):
            uid = series_uid(path)
            if uid is not None:
                groups.setdefault(uid, []).append(path)
    series = [files for files in groups.values() if len(files) > 1]
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series: put each series in its own "
                         "folder")
    return series[0] if series else None


def read_dicom_series(folder: Path, max_pixels: int) -> MedicalImage:
    """Read the slices of the DICOM series in ``folder`` (:func:`series_slices`) as an
    (S, H, W) float32 volume.

    Slices are ordered by their ImagePositionPatient along the slice normal (the cross product
    of ImageOrientationPatient's row and column directions), whatever their file names. Each
    slice gets the values of :func:`read_dicom`. ``affine`` maps (column, row, slice) indices
    to NIfTI RAS+ millimetres, so a NIfTI mask lands on the series; ``metadata["dicom_files"]``
    lists the files in slice order.
    """
    files = series_slices(folder)
    if files is None:
        raise InputError(f"cannot read {folder}: the folder holds no DICOM series (two or more "
                         ".dcm slices with a position and orientation)")
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    row_dir, col_dir = _orientation(folder, headers)
    normal = np.cross(row_dir, col_dir)
    depth = np.array([np.dot(normal, [float(v) for v in h.ImagePositionPatient])
                      for h in headers])
    order = np.argsort(depth, kind="stable")
    if len(files) > 1 and np.min(np.diff(depth[order])) < 1e-4:
        raise InputError(f"cannot read {folder} as one DICOM series: two slices share one "
                         "position (several echoes, phases or acquisitions?)")
    shapes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(shapes) != 1:
        raise InputError(f"cannot read {folder} as one DICOM series: slices of different "
                         f"sizes {sorted(shapes)}")
    check_pixel_count(folder, (len(files), *shapes.pop()), max_pixels)
    slices = [read_dicom(files[i], max_pixels) for i in order]
    if any(s.is_volume or s.pixels.ndim != 2 for s in slices):
        raise InputError(f"cannot read {folder} as one DICOM series: only single-frame gray "
                         "slices can form a volume")
    first = headers[order[0]]
    spacing = slices[0].spacing
    positions = [[float(v) for v in headers[i].ImagePositionPatient] for i in order]
    return MedicalImage(
        pixels=np.stack([s.pixels for s in slices]), spacing=spacing, source_format="dicom",
        path=folder, is_volume=len(slices) > 1,
        affine=_ras_affine(row_dir, col_dir, positions, spacing,
                           float(first.get("SliceThickness", 1.0) or 1.0)),
        metadata={**slices[0].metadata, "dicom_files": tuple(files[i] for i in order)})


def _orientation(folder: Path,
                 headers: Sequence[pydicom.Dataset]) -> tuple[np.ndarray, np.ndarray]:
    """The unit row and column directions shared by every slice."""
    cosines = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if cosines.shape[1] != 6 or np.abs(cosines - cosines[0]).max() > 1e-4:
        raise InputError(f"cannot read {folder} as one DICOM series: its slices do not share "
                         "one orientation")
    row_dir, col_dir = cosines[0, :3], cosines[0, 3:]
    if min(np.linalg.norm(row_dir), np.linalg.norm(col_dir)) < 1e-6:
        raise InputError(f"cannot read {folder} as one DICOM series: zero ImageOrientationPatient")
    return row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)


def _ras_affine(row_dir: np.ndarray, col_dir: np.ndarray, positions: list[list[float]],
                spacing: tuple[float, float] | None, thickness: float) -> np.ndarray:
    """The 4x4 affine from (column, row, slice) indices to RAS+ mm (DICOM PS3.3 C.7.6.2.1.1,
    with LPS turned into RAS)."""
    row_step, col_step = spacing or (1.0, 1.0)
    first = np.asarray(positions[0])
    if len(positions) > 1:
        slice_step = (np.asarray(positions[-1]) - first) / (len(positions) - 1)
    else:
        slice_step = np.cross(row_dir, col_dir) * thickness
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_step  # along a row: the column index grows
    lps[:3, 1] = col_dir * row_step
    lps[:3, 2] = slice_step
    lps[:3, 3] = first
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


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
