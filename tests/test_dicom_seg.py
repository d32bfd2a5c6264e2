"""``clipsam segment --output-format dicom-seg``: a DICOM SEG over the source series, read back with
highdicom, matching the NIfTI/PNG masks of the same run."""

from __future__ import annotations

import json
from importlib import metadata

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

import clipsam.api
from clipsam.api import Segmenter
from clipsam.apps.batch import prompt_slug
from clipsam.apps.cli import main
from clipsam.apps.dicom_output import segment_codes
from clipsam.errors import InputError
from clipsam.io import read_image
from clipsam.io.dicom_seg import Algorithm, CodedTerm, Segment, write_dicom_seg
from dicom_series import phantom, write_ct_series, write_image
from test_api import FakeEncoder, FakePipeline

PROMPTS = ("left and right lungs", "absent thing")
TISSUE = CodedTerm("85756007", "SCT", "Tissue")
ALGORITHM = Algorithm("clipsam", "0.0", {"method": "test"})
KINDS = ("dx", "cr", "us", "us-cine", "us-cine-colour", "sc", "es")
CINE_FRAMES = 4


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(clipsam.api, "Segmenter",
                        lambda config: Segmenter(config, pipeline=FakePipeline(),
                                                 encoder=FakeEncoder()))
    return lambda *argv: main(["segment", "-q", *argv])


def run_seg(cli, inputs, out, prompts=PROMPTS) -> int:
    args = [str(i) for i in inputs]
    for prompt in prompts:
        args += ["-p", prompt]
    return cli(*args, "-o", str(out), "--output-format", "dicom-seg")


def segment_pixels(seg: hd.seg.Segmentation, sources: list[pydicom.Dataset]) -> np.ndarray:
    """(S, H, W, segments) as the SEG stores them, frame by frame for each source instance."""
    return seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.SOPInstanceUID for s in sources],
        segment_numbers=list(range(1, seg.number_of_segments + 1)))


def test_series_folder_gets_a_seg_that_references_it_and_matches_the_nifti_masks(cli, tmp_path):
    shuffled = ["IM0007.dcm", "IM0002.dcm", "IM0010.dcm", "IM0001.dcm"]
    files = write_ct_series(tmp_path / "in" / "chest_ct", phantom(), names=shuffled)
    out = tmp_path / "out"
    assert run_seg(cli, [tmp_path / "in"], out) == 0

    seg = hd.seg.segread(out / "chest_ct_seg.dcm")
    sources = [pydicom.dcmread(f) for f in files[::-1]]  # slice order: up the normal
    first = sources[0]
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.PatientID == first.PatientID and seg.SeriesInstanceUID != first.SeriesInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources}
    assert seg.number_of_segments == 2

    pixels = segment_pixels(seg, sources).astype(bool)
    for index, prompt in enumerate(PROMPTS):
        nifti = nib.load(out / f"chest_ct_{prompt_slug(prompt)}_mask.nii.gz")
        mask = np.transpose(np.asarray(nifti.dataobj), (2, 1, 0)).astype(bool)  # (S, H, W)
        assert np.array_equal(pixels[..., index], mask), prompt
        x, y, z = (float(v) for v in first.ImagePositionPatient)
        assert np.allclose(nifti.affine[:3, 3], [-x, -y, z])  # LPS -> RAS
    assert pixels[..., 0].any() and not pixels[..., 1].any()
    # the bright core moves between slices: every frame must sit on its own source slice
    assert len({pixels[k, ..., 0].tobytes() for k in range(len(sources))}) == len(sources)

    lungs, other = seg.SegmentSequence
    assert lungs.SegmentLabel == "left and right lungs"
    assert lungs.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    assert lungs.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert other.SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # generic Tissue
    algorithm = lungs.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "clipsam"
    assert algorithm.AlgorithmVersion == metadata.version("clipsam")
    assert "method=medclipsam" in algorithm.AlgorithmParameters
    assert "segmenter=fake-encoder" in algorithm.AlgorithmParameters
    record = json.loads((out / "chest_ct.json").read_text())
    assert record["seg_file"] == "chest_ct_seg.dcm" and record["input"].endswith("chest_ct")


def test_single_dicom_file_gets_a_seg_matching_the_png_mask(cli, tmp_path):
    volume = phantom(1)
    (path,) = write_ct_series(tmp_path, volume, names=["one.dcm"])
    out = tmp_path / "out"
    assert run_seg(cli, [path], out, prompts=("bright core",)) == 0
    seg = hd.seg.segread(out / "one_seg.dcm")
    source = pydicom.dcmread(path)
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    png = np.asarray(Image.open(out / "one_mask.png")) == 255
    assert png.any() and np.array_equal(segment_pixels(seg, [source])[0, ..., 0] == 1, png)


def test_resume_needs_the_seg_and_non_dicom_input_is_refused(cli, tmp_path, capsys):
    write_ct_series(tmp_path / "ct", phantom(2))
    out = tmp_path / "out"
    assert run_seg(cli, [tmp_path / "ct"], out) == 0
    capsys.readouterr()
    assert run_seg(cli, [tmp_path / "ct"], out) == 0
    assert "1 done with the same settings, skipped" in capsys.readouterr().out
    (out / "ct_seg.dcm").unlink()
    assert run_seg(cli, [tmp_path / "ct"], out) == 0
    assert "1 segmented" in capsys.readouterr().out and (out / "ct_seg.dcm").exists()

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "photo.png")
    assert run_seg(cli, [tmp_path / "photo.png"], out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs DICOM input" in err and "photo.png is png" in err


@pytest.mark.parametrize(("prompt", "category", "kind", "region"), [
    ("fetal head", "91723000", "69536005", None),
    ("breast tumor", "49755003", "108369006", "76752008"),
    ("thyroid nodule", "49755003", "27925004", "69748006"),
    ("Cell Nuclei", "91723000", "84640000", None),
    ("a left ventricle thrombus", "85756007", "85756007", None),
])
def test_prompts_get_the_codes_of_their_target(prompt, category, kind, region):
    got_category, got_type, got_region = segment_codes(prompt)
    assert (got_category.value, got_type.value) == (category, kind)
    assert (got_region.value if got_region else None) == region
    assert got_type.scheme == "SCT" and got_type.meaning


def kind_pixels(kind: str) -> np.ndarray:
    """Stored values for a :func:`write_image` of ``kind``: a bright block on a dim background
    ((H, W), (F, H, W) frames for ``us-cine`` with the block moving, (F, H, W, 3) for
    ``us-cine-colour``, (H, W, 3) for photos)."""
    top = {"dx": 12000, "cr": 3000}.get(kind, 220)
    cine = kind.startswith("us-cine")
    values = np.full((CINE_FRAMES if cine else 1, 40, 60), top // 10)
    for k in range(len(values)):
        values[k, 10:25, 10 + 5 * k:30 + 5 * k] = top
    if kind in ("sc", "es", "us-cine-colour"):
        values = np.stack([values, values // 2, values // 3], axis=-1)
    return values if cine else values[0]


def block_masks(image) -> tuple[np.ndarray, np.ndarray]:
    """(F, H, W) masks: a block that moves from frame to frame and is absent from frame 2 (of
    a multi-frame image), and an empty one."""
    target = np.zeros((image.num_slices, *image.size), bool)
    for k in range(image.num_slices):
        target[k, 5 + k:20, 8 + 3 * k:33] = k != 1
    return target, np.zeros_like(target)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_2d_dicom_gets_a_seg_of_its_masks_on_its_frames(kind, tmp_path):
    path = write_image(tmp_path / f"{kind}.dcm", kind, kind_pixels(kind))
    image = read_image(path)
    target, absent = block_masks(image)
    segments = [Segment("target", TISSUE, TISSUE, target if image.is_volume else target[0]),
                Segment("absent", TISSUE, TISSUE, absent if image.is_volume else absent[0])]
    write_dicom_seg(tmp_path / "seg.dcm", image, segments, ALGORITHM)

    seg = hd.seg.segread(tmp_path / "seg.dcm")
    source = pydicom.dcmread(path, stop_before_pixels=True)
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in referenced.ReferencedInstanceSequence] == [
        (source.SOPClassUID, source.SOPInstanceUID)]
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.number_of_segments == 2
    if image.is_volume:  # one SEG frame per source frame (and segment) with something in it
        assert image.num_slices == CINE_FRAMES
        pixels = seg.get_pixels_by_source_frame(
            source.SOPInstanceUID, source_frame_numbers=range(1, CINE_FRAMES + 1),
            assert_missing_frames_are_empty=True)
    else:
        pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID],
                                                   assert_missing_frames_are_empty=True)
    assert np.array_equal(pixels.astype(bool), np.stack([target, absent], axis=-1))
    frames = list(seg.PerFrameFunctionalGroupsSequence)
    assert seg.NumberOfFrames == len(frames) == (CINE_FRAMES - 1 if image.is_volume else 1)
    used = []
    for item in frames:
        (reference,) = item.DerivationImageSequence[0].SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        used.append(int(reference.get("ReferencedFrameNumber", 1)))
    assert used == ([1, 3, 4] if image.is_volume else [1])
    indices = [tuple(item.FrameContentSequence[0].DimensionIndexValues) if image.is_volume
               else item.FrameContentSequence[0].DimensionIndexValues for item in frames]
    assert len(set(indices)) == len(frames)  # the dimensions tell every frame apart

    # what the source does not say is not said: these SEGs are aligned with their source by
    # reference, with no plane position or orientation (the PatientOrientation they need
    # instead is the source's, or empty); a frame of reference only when the source has one,
    # and then no pixel measures without a slice thickness (DICOM asks for both)
    assert seg.get("FrameOfReferenceUID") == source.get("FrameOfReferenceUID")
    assert seg.PatientOrientation == source.get("PatientOrientation", "")
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert "PlanePositionSequence" not in frames[0] and "PlaneOrientationSequence" not in shared
    measures = shared.get("PixelMeasuresSequence")
    assert measures is None or "SliceThickness" in measures[0] or "FrameOfReferenceUID" not in seg


def test_a_ct_slice_without_slice_thickness_keeps_its_frame_of_reference(tmp_path):
    (path,) = write_ct_series(tmp_path, phantom(1), names=["one.dcm"])
    ds = pydicom.dcmread(path)
    del ds.SliceThickness
    ds.save_as(path)
    image = read_image(path)
    mask = image.pixels > 0
    write_dicom_seg(tmp_path / "seg.dcm", image, [Segment("bone", TISSUE, TISSUE, mask)],
                    ALGORITHM)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.FrameOfReferenceUID == ds.FrameOfReferenceUID
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]
    got = seg.get_pixels_by_source_instance([ds.SOPInstanceUID])[0, ..., 0]
    assert mask.any() and np.array_equal(got.astype(bool), mask)


@pytest.mark.parametrize("kind", ["dx", "us-cine", "us-cine-colour"])
def test_cli_writes_the_seg_of_a_radiograph_and_of_a_cine(kind, cli, tmp_path):
    path = write_image(tmp_path / f"{kind}.dcm", kind, kind_pixels(kind))
    out = tmp_path / "out"
    assert run_seg(cli, [path], out) == 0
    seg = hd.seg.segread(out / f"{kind}_seg.dcm")
    source = pydicom.dcmread(path, stop_before_pixels=True)
    if kind == "dx":
        png = np.asarray(Image.open(out / f"{kind}_{prompt_slug(PROMPTS[0])}_mask.png")) == 255
        masks = png[None]
        pixels = seg.get_pixels_by_source_instance([source.SOPInstanceUID])
    else:
        nifti = nib.load(out / f"{kind}_{prompt_slug(PROMPTS[0])}_mask.nii.gz")
        masks = np.transpose(np.asarray(nifti.dataobj), (2, 1, 0)).astype(bool)  # (F, H, W)
        pixels = seg.get_pixels_by_source_frame(
            source.SOPInstanceUID, source_frame_numbers=range(1, CINE_FRAMES + 1))
    assert masks.any() and np.array_equal(pixels[..., 0].astype(bool), masks)
    assert not pixels[..., 1].any()
    assert seg.NumberOfFrames == len(masks)  # the target is in every frame, the other nowhere
    if kind != "dx":  # the quick look shows the frames as stored: coloured for a colour cine
        look = np.asarray(Image.open(out / f"{kind}_{prompt_slug(PROMPTS[0])}_slices.png"))
        tinted = (look[..., 0].astype(int) - look[..., 2]) > 20
        assert tinted.mean() > 0.05 if kind == "us-cine-colour" else not tinted.any()


def test_bad_inputs_get_one_line_errors(cli, tmp_path, capsys):
    path = write_image(tmp_path / "us.dcm", "us", kind_pixels("us"))
    image = read_image(path)
    wrong = np.zeros((image.size[0] + 1, image.size[1]), bool)
    with pytest.raises(InputError, match=r"mask of 'target' has shape \(41, 60\), the image "
                                         r"\(1, 40, 60\)"):
        write_dicom_seg(tmp_path / "seg.dcm", image, [Segment("target", TISSUE, TISSUE, wrong)],
                        ALGORITHM)
    assert not (tmp_path / "seg.dcm").exists()

    files = write_ct_series(tmp_path / "ct", phantom(2))
    for file in files:  # a series whose slices say no thickness cannot be placed
        ds = pydicom.dcmread(file)
        del ds.SliceThickness
        ds.save_as(file)
    series = read_image(tmp_path / "ct")
    with pytest.raises(InputError, match="its slices lack SliceThickness, which a SEG of a "
                                         "series needs"):
        write_dicom_seg(tmp_path / "seg.dcm", series,
                        [Segment("bone", TISSUE, TISSUE, series.pixels > 0)], ALGORITHM)

    report = pydicom.dcmread(path)  # a DICOM object without an image (e.g. a report)
    del report.PixelData
    report.save_as(tmp_path / "report.dcm")
    assert run_seg(cli, [tmp_path / "report.dcm"], tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no pixel data" in err and "Traceback" not in err


def test_a_colour_cine_in_ycbcr_reads_as_its_rgb_frames(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = kind_pixels("us-cine-colour").astype(np.uint8)
    path = write_image(tmp_path / "ybr.dcm", "us-cine-colour", rgb)
    ds = pydicom.dcmread(path)
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.save_as(path)
    image = read_image(path)
    assert image.is_volume and image.num_slices == CINE_FRAMES and image.size == (40, 60)
    assert np.abs(image.pixels - rgb).max() <= 1  # rounding of the colour conversion
