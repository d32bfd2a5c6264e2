"""Small synthetic DICOM CT series for the reader and DICOM SEG tests (pydicom only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

AXIAL_FEET_FIRST = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_ct_series(
    folder: Path,
    volume: np.ndarray,
    spacing: tuple[float, float] = (0.7, 0.8),
    slice_step: float = -2.5,
    origin: tuple[float, float, float] = (-120.0, -90.5, 40.0),
    orientation: tuple[float, ...] = AXIAL_FEET_FIRST,
    names: list[str] | None = None,
) -> list[Path]:
    """Write ``volume`` ((S, H, W) Hounsfield units) as S single-frame CT files of one series.

    Slice ``k`` sits at ``origin + k * slice_step * normal`` (normal = row x column direction).
    ``names`` (default ``slice_000.dcm``...) lets a test store slices under shuffled names.
    Returns the paths in writing order (``volume``'s order; a reader sorts slices along the
    normal, so a negative ``slice_step`` reverses them).
    """
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    names = names or [f"slice_{k:03d}.dcm" for k in range(len(volume))]
    paths = []
    for k, (plane, name) in enumerate(zip(volume, names, strict=True)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / name
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = "Test^Phantom", "PHANTOM-1"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101500", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, k + 1
        ds.Manufacturer = "synthetic"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin)
                                   + k * slice_step * normal]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(spacing)
        ds.SliceThickness = abs(slice_step)
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.asarray(plane) + 1024).astype(np.int16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def phantom(slices: int = 4, height: int = 40, width: int = 60) -> np.ndarray:
    """(S, H, W) HU values: air around a bone-bright block that moves from slice to slice."""
    volume = np.full((slices, height, width), -1000.0)
    for k in range(slices):
        volume[k, 10:25, 10 + 5 * k:30 + 5 * k] = 900.0
    return volume
