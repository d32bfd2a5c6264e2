"""One entry point for every supported image format: :func:`read_image`."""

from __future__ import annotations

import os
from pathlib import Path

from clipsam.errors import InputError
from clipsam.io.image import MedicalImage
from clipsam.io.limits import max_pixels_default

SUPPORTED = "PNG, JPEG, TIFF, DICOM, NIfTI"
_EXTENSIONS = {
    ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff",
    ".dcm": "dicom", ".dicom": "dicom", ".nii": "nifti", ".nii.gz": "nifti",
}


def read_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> MedicalImage:
    """Read a PNG, JPEG, TIFF, DICOM or NIfTI file (format from its content, else its name), or a
    folder of DICOM slices of one series as a volume.

    ``max_pixels`` bounds the pixel count (all slices together) and defaults to
    ``$CLIPSAM_MAX_PIXELS`` or 2**27. Any failure raises :class:`InputError` with one line
    naming the file and the problem.
    """
    path = Path(path)
    limit = max_pixels_default() if max_pixels is None else max_pixels
    if path.is_dir():
        from clipsam.io.dicom import read_dicom_series  # each format's library loads on use

        try:
            return read_dicom_series(path, limit)
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read {path} as a DICOM series: {one_line(exc)}") from exc
    if not path.is_file():
        raise InputError(f"cannot read {path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"cannot read {path}: the file is empty (0 bytes)")
    kind = detect_format(path)
    try:
        if kind in ("png", "jpeg", "tiff"):
            from clipsam.io.raster import read_pillow, read_tiff

            return read_tiff(path, limit) if kind == "tiff" else read_pillow(path, kind, limit)
        if kind == "dicom":
            from clipsam.io.dicom import read_dicom

            return read_dicom(path, limit)
        from clipsam.io.nifti import read_nifti

        return read_nifti(path, limit)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {path} as {kind}: {one_line(exc)}") from exc


def detect_format(path: Path) -> str:
    """'png', 'jpeg', 'tiff', 'dicom' or 'nifti' from the file's magic bytes or its name."""
    try:
        with path.open("rb") as handle:
            head = handle.read(352)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {one_line(exc)}") from exc
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    if head[344:348] in (b"n+1\x00", b"n+2\x00") or head[4:8] in (b"n+2\x00",):
        return "nifti"
    name = path.name.lower()
    for extension, kind in _EXTENSIONS.items():
        if name.endswith(extension):
            return kind
    raise InputError(f"cannot read {path}: not a supported image format ({SUPPORTED})")


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its first message line, else its class name."""
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    return (first[:200] if first else exc.__class__.__name__)
