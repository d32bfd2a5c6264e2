"""DICOM Segmentation (SEG) output with highdicom (the optional extra ``clipsam[dicom]``).

One binary SEG object per image or series, one segment per mask, referencing the source
instances the masks were made from (study, series, frame of reference when there is one and,
frame by frame, the source image or frame): viewers such as OHIF or 3D Slicer show it over the
original images.

How the SEG places its frames depends on what the source says (DICOM PS3.3 A.51.5.1):

- sources with a full plane geometry (frame of reference, ImagePositionPatient and
  ImageOrientationPatient, PixelSpacing, SliceThickness: CT, MR, an enhanced multi-frame
  image) give a SEG whose frames carry their position, orientation and pixel measures;
- any other single-frame image (radiographs, ultrasound, endoscopy, secondary captures and
  photographs, which rarely carry a slice thickness or a patient frame of reference) gives a
  SEG aligned pixel for pixel with its source frame through the per-frame source reference;
  its frame of reference and pixel spacing are the source's when it has them, never made up
  (see :func:`_pixel_aligned`);
- a multi-frame image without functional groups (ultrasound cine, ...) gives one SEG frame per
  segment and source frame where the mask is not empty, each referencing its source frame and
  indexed by it (highdicom does not build this case, see :func:`_frame_indexed_seg`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsam.errors import InputError, require
from clipsam.io.atomic import write_atomic
from clipsam.io.image import MedicalImage


@dataclass(frozen=True)
class CodedTerm:
    """A coded concept: code value, coding scheme (``SCT`` for SNOMED CT), code meaning."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class Segment:
    """One segment: its label (the prompt), its coded property category and type, an optional
    anatomic region, and its mask ((H, W), or (S, H, W) for a volume)."""

    label: str
    category: CodedTerm
    property_type: CodedTerm
    mask: np.ndarray
    region: CodedTerm | None = None


@dataclass(frozen=True)
class Algorithm:
    """What made the masks (the SEG's Algorithm Identification): name, version, parameters."""

    name: str
    version: str
    parameters: Mapping[str, str]


def write_dicom_seg(path: str | os.PathLike[str], image: MedicalImage,
                    segments: Sequence[Segment], algorithm: Algorithm) -> Path:
    """Write a binary DICOM SEG of ``segments`` over the DICOM ``image`` they were made from.

    ``image`` must come from :func:`clipsam.io.read_image` on a DICOM file or series folder
    (its ``metadata["dicom_files"]`` are the source instances, in slice order). Empty segments
    (targets not found) are kept in the segment list; when some mask is not empty, frames with
    nothing in them are left out.
    """
    require("dicom", "DICOM SEG output")
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    files = image.metadata.get("dicom_files")
    if image.source_format != "dicom" or not files:
        raise InputError(f"cannot write a DICOM SEG for {image.path or 'this image'}: "
                         "it was not read from DICOM files")
    if not segments:
        raise InputError(f"cannot write {path}: no segment to write")
    frames = image.num_slices
    shape = (frames, *image.size)
    masks = []
    for segment in segments:
        mask = np.asarray(segment.mask, dtype=bool)
        if mask.size != np.prod(shape):
            raise InputError(f"cannot write {path}: the mask of {segment.label!r} has shape "
                             f"{mask.shape}, the image {shape}")
        masks.append(mask.reshape(shape))
    sources = [_with_type2_attributes(pydicom.dcmread(f, stop_before_pixels=True))
               for f in files]
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version, parameters=dict(algorithm.parameters))
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=segment.label[:64],
            segmented_property_category=_code(segment.category),
            segmented_property_type=_code(segment.property_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
            anatomic_regions=[_code(segment.region)] if segment.region else None)
        for number, segment in enumerate(segments, start=1)]
    settings = dict(
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=_series_number(sources[0]),
        sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=algorithm.name, manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version, device_serial_number=algorithm.version,
        series_description=f"{algorithm.name}: {', '.join(s.label for s in segments)}"[:64])
    placed = all(_has_plane_geometry(source) for source in sources)
    if len(sources) > 1 and not placed:
        missing = sorted({k for source in sources for k in PLANE_GEOMETRY if not source.get(k)})
        raise InputError(f"cannot write a DICOM SEG for {image.path}: its slices lack "
                         f"{', '.join(missing)}, which a SEG of a series needs")
    pixels = np.stack(masks, axis=-1).astype(np.uint8)  # (F, H, W, segments)
    omit_empty = bool(pixels.any())
    try:
        if _frames_without_functional_groups(sources[0]):
            seg = _frame_indexed_seg(sources[0], pixels, omit_empty, settings)
        elif placed:
            seg = hd.seg.Segmentation(source_images=sources, pixel_array=pixels,
                                      omit_empty_frames=omit_empty, **settings)
        else:
            seg = hd.seg.Segmentation(source_images=[_pixel_aligned(sources[0])],
                                      pixel_array=pixels, omit_empty_frames=omit_empty,
                                      **settings)
            _add_patient_orientation(seg, sources[0])
    except (AttributeError, TypeError, ValueError) as exc:  # highdicom's checks of the sources
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot write a DICOM SEG for {image.path}: {message}") from exc
    return write_atomic(path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))


PLANE_GEOMETRY = ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient",
                  "PixelSpacing", "SliceThickness")
"""What a single-frame source needs for a SEG whose frames carry their plane position,
orientation and pixel measures (highdicom takes them from the source)."""


def _has_plane_geometry(source) -> bool:  # pydicom.Dataset
    """True when ``source`` carries all of :data:`PLANE_GEOMETRY` (always for an enhanced
    multi-frame image, whose functional groups hold them)."""
    return ("PerFrameFunctionalGroupsSequence" in source
            or all(source.get(keyword) for keyword in PLANE_GEOMETRY))


def _frames_without_functional_groups(source) -> bool:  # pydicom.Dataset
    """True for a multi-frame image of the older kind (ultrasound cine, multi-frame secondary
    capture, X-ray angiography...): NumberOfFrames but no per-frame functional groups."""
    return "NumberOfFrames" in source and "PerFrameFunctionalGroupsSequence" not in source


def _pixel_aligned(source):  # pydicom.Dataset in and out
    """A copy of ``source`` without its plane position and orientation, so that highdicom
    aligns the SEG with it pixel for pixel (by reference) instead of placing it in space.

    The frame of reference stays (highdicom copies it), and so does PixelSpacing (copied as
    the SEG's pixel measures) unless the source has a frame of reference but no SliceThickness
    (a radiograph): pixel measures in a SEG with a frame of reference must give both, and a
    thickness is not made up; the pixel size stays in the source the SEG references.
    """
    aligned = copy.deepcopy(source)
    unsaid = ["ImagePositionPatient", "ImageOrientationPatient"]
    if source.get("FrameOfReferenceUID") and not source.get("SliceThickness"):
        unsaid.append("PixelSpacing")
    for keyword in unsaid:
        if keyword in aligned:
            delattr(aligned, keyword)
    return aligned


def _add_patient_orientation(seg, source) -> None:  # pydicom.Dataset, pydicom.Dataset
    """PatientOrientation (type 2C: required when a frame has no ImageOrientationPatient) of
    a SEG aligned with its source: the source's, or empty when it gives none."""
    seg.PatientOrientation = source.get("PatientOrientation", "")


def _frame_indexed_seg(source, pixels: np.ndarray, omit_empty: bool, settings: dict):
    """A SEG over every frame of a multi-frame ``source`` that has no functional groups.

    highdicom refuses a multi-frame source without a frame of reference (it has no index for
    its frames) and reads the geometry of any multi-frame source from functional groups these
    images do not have. So highdicom builds the SEG of a single frame (a copy of ``source``
    presented as a single-frame secondary capture, one frame per segment), whose modules stay
    as they are; its frames are then repeated for each source frame: each references the
    source's SOP class, instance and frame number (Derivation Image), and a second dimension,
    Temporal Position Index (Frame Content), holds the source frame number, as these images
    are sequences of frames in time. ``pixels`` is (F, H, W, segments) of 0/1.
    """
    import highdicom as hd
    from pydicom.multival import MultiValue
    from pydicom.pixels import pack_bits
    from pydicom.uid import SecondaryCaptureImageStorage

    single = _pixel_aligned(source)
    del single.NumberOfFrames
    single.SOPClassUID = SecondaryCaptureImageStorage
    frames, _, _, count = pixels.shape
    seg = hd.seg.Segmentation(source_images=[single], pixel_array=np.ones_like(pixels[:1]),
                              omit_empty_frames=False, **settings)
    templates = list(seg.PerFrameFunctionalGroupsSequence)  # one per segment
    items, planes = [], []
    for segment in range(count):
        for frame in range(frames):
            if omit_empty and not pixels[frame, ..., segment].any():
                continue
            item = copy.deepcopy(templates[segment])
            reference = item.DerivationImageSequence[0].SourceImageSequence[0]
            reference.ReferencedFrameNumber = frame + 1
            content = item.FrameContentSequence[0]
            content.TemporalPositionIndex = frame + 1
            before = content.DimensionIndexValues  # highdicom's: the segment number
            content.DimensionIndexValues = [
                *(before if isinstance(before, MultiValue) else [before]), frame + 1]
            items.append(item)
            planes.append(pixels[frame, ..., segment])
    dimension = copy.deepcopy(seg.DimensionIndexSequence[0])
    dimension.DimensionIndexPointer = 0x00209128  # TemporalPositionIndex
    dimension.FunctionalGroupPointer = 0x00209111  # FrameContentSequence
    dimension.DimensionDescriptionLabel = "Source Frame"
    seg.DimensionIndexSequence.append(dimension)
    seg.PerFrameFunctionalGroupsSequence = items
    seg.NumberOfFrames = len(items)
    seg.PixelData = pack_bits(np.stack(planes))
    seg.walk(_restore_sop_class(single.SOPClassUID, source.SOPClassUID))
    _add_patient_orientation(seg, source)
    return seg


def _restore_sop_class(stand_in: str, original: str):
    """A :meth:`pydicom.Dataset.walk` callback that gives every reference to the stand-in SOP
    class the source's own."""
    def restore(_dataset, element) -> None:
        if element.keyword == "ReferencedSOPClassUID" and element.value == stand_in:
            element.value = original
    return restore


TYPE2_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")
"""Patient and study attributes a DICOM object must carry but may leave empty (type 2); some
files omit them, and the SEG copies them from its source."""


def _with_type2_attributes(header):  # pydicom.Dataset in and out
    for keyword in TYPE2_ATTRIBUTES:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def _code(term: CodedTerm):  # -> pydicom.sr.coding.Code (pydicom is imported lazily)
    from pydicom.sr.coding import Code

    return Code(term.value, term.scheme, term.meaning)


def _series_number(source) -> int:
    """The SEG's series number: the source series' number plus 1000 (1000 when it has none),
    so viewers list it next to its source."""
    return 1000 + int(source.get("SeriesNumber", 0) or 0)
