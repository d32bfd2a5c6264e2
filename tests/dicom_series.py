"""Small synthetic DICOM files for the reader and DICOM SEG tests (pydicom only): a CT series,
and 2-D images of the kinds users bring (radiographs, ultrasound, photographs) with the attributes
such files carry and without those they usually lack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    VLEndoscopicImageStorage,
    generate_uid,
)

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
        path = folder / name
        ds = _new_file(path, CTImageStorage, "CT", study, series)
        ds.FrameOfReferenceUID = frame
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
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


def _new_file(path: Path, sop_class: str, modality: str, study: str | None = None,
              series: str | None = None) -> FileDataset:
    """A dataset of ``sop_class`` with the patient, study, series and equipment attributes every
    image carries (a new study and series unless given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName, ds.PatientID = "Test^Phantom", "PHANTOM-1"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101500", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, 1
    ds.Manufacturer = "synthetic"
    if modality not in ("CT", "DX", "CR"):
        ds.Laterality, ds.PatientOrientation = "", ""  # type 2C, for paired body parts
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int,
            photometric: str | None = None) -> None:
    """Store ``pixels`` ((H, W), (F, H, W) frames, (H, W, 3) RGB or (F, H, W, 3) RGB frames) as
    unsigned integers."""
    colour = pixels.ndim in (3, 4) and pixels.shape[-1] == 3
    frames = pixels.shape[0] if pixels.ndim == 4 or (pixels.ndim == 3 and not colour) else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else (photometric or "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = 0
    allocated = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint8 if allocated == 8 else np.uint16).tobytes()


def _ultrasound_region(ds: Dataset) -> None:
    """The calibration ultrasound gives instead of PixelSpacing (0.01 cm a pixel)."""
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 3, 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.01, 0.01
    ds.SequenceOfUltrasoundRegions = [region]


def write_image(path: Path, kind: str, pixels: np.ndarray) -> Path:
    """Write ``pixels`` as a DICOM image of ``kind``, with the attributes such files carry:

    ``dx``: digital radiograph (MONOCHROME2, 14 of 16 bits) with a frame of reference, plane
    position and orientation and PixelSpacing, but no SliceThickness; ``cr``: computed
    radiograph (MONOCHROME1, 12 bits) with only ImagerPixelSpacing, no frame of reference;
    ``us``: ultrasound (8 bits, region calibration, no frame of reference); ``us-cine``:
    multi-frame ultrasound ((F, H, W) ``pixels``, frame time, no frame of reference);
    ``us-cine-colour``: the same in RGB ((F, H, W, 3), as colour Doppler cines are); ``sc``:
    secondary capture of an RGB photograph ((H, W, 3) ``pixels``, e.g. dermoscopy); ``es``: VL
    endoscopic RGB image. Returns ``path``.
    """
    if kind == "dx":
        ds = _new_file(path, DigitalXRayImageStorageForPresentation, "DX")
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = generate_uid(), ""
        ds.ImagePositionPatient = [-170.0, 0.0, 200.0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]  # PA chest: L, F
        ds.PatientOrientation = ["L", "F"]
        ds.PixelSpacing, ds.ImagerPixelSpacing = [0.139, 0.139], [0.15, 0.15]
        ds.BodyPartExamined, ds.ViewPosition, ds.ImageLaterality = "CHEST", "PA", "U"
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = (
            "51185008", "SCT", "Thorax")
        ds.AnatomicRegionSequence, ds.AcquisitionContextSequence = [region], []
        ds.DetectorType, ds.PositionerType, ds.LossyImageCompression = "SCINTILLATOR", "", "00"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
        ds.PresentationLUTShape, ds.BurnedInAnnotation = "IDENTITY", "NO"
        ds.WindowCenter, ds.WindowWidth = 8192, 16384
        _pixels(ds, pixels, 14)
    elif kind == "cr":
        ds = _new_file(path, ComputedRadiographyImageStorage, "CR")
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.BodyPartExamined, ds.ViewPosition = "CHEST", "AP"
        ds.PatientOrientation = ["R", "F"]
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        _pixels(ds, pixels, 12, "MONOCHROME1")
    elif kind in ("us", "us-cine", "us-cine-colour"):
        cine = kind.startswith("us-cine")
        ds = _new_file(path, UltrasoundMultiFrameImageStorage if cine else UltrasoundImageStorage,
                       "US")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", ""]
        _pixels(ds, pixels, 8)
        if cine:
            ds.FrameTime, ds.FrameIncrementPointer = 33.3, 0x00181063  # -> FrameTime
        _ultrasound_region(ds)
    elif kind == "sc":
        ds = _new_file(path, SecondaryCaptureImageStorage, "XC")
        ds.ConversionType = "DI"
        _pixels(ds, pixels, 8)
    elif kind == "es":
        ds = _new_file(path, VLEndoscopicImageStorage, "ES")
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.AcquisitionContextSequence = []
        ds.LossyImageCompression = "00"
        _pixels(ds, pixels, 8)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    ds.save_as(path, enforce_file_format=True)
    return path
