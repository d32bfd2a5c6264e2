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
from dicom_series import phantom, write_ct_series
from test_api import FakeEncoder, FakePipeline

PROMPTS = ("left and right lungs", "absent thing")


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
