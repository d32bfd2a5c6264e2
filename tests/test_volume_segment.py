"""``clipsam segment`` on volumes: the mask on the input's voxel grid and affine, the target's
volume in the record, the quick-look grid, progress per slice, resume by volume mode."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import clipsam.api
from clipsam.apps.batch import SegmentJob, collect_inputs, run_local
from clipsam.apps.cli import main
from clipsam.config import RunConfig, VolumeConfig
from clipsam.io.nifti import slices_to_nifti
from clipsam.io.read import read_image
from clipsam.pipelines.provenance import run_identity
from synthetic_volume import (
    BLOB_SLICE,
    DIM_SLICE,
    PROMPT,
    bright_segmenter,
    object_mask,
    volume_pixels,
)

OBLIQUE = np.array([[0.0, -0.9, 0.1, 12.0], [1.1, 0.0, 0.0, -30.0], [0.0, 0.05, 2.5, 7.5],
                    [0.0, 0.0, 0.0, 1.0]])


def oblique_volume(path: Path) -> Path:
    """The synthetic volume under an oblique affine with voxels of about 1.1 x 0.9 x 2.5 mm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(slices_to_nifti(volume_pixels()).astype(np.int16), OBLIQUE), path)
    return path


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(clipsam.api, "Segmenter", bright_segmenter)  # read by cmd_segment.run
    return lambda *argv: main(["segment", "-q", *argv])


def test_the_mask_lands_on_the_input_grid_with_the_volume_in_the_record(cli, tmp_path):
    scan = oblique_volume(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    assert cli(str(scan), "-p", PROMPT, "-o", str(out)) == 0
    written = nib.load(out / "scan_mask.nii.gz")
    np.testing.assert_allclose(written.affine, OBLIQUE)
    assert written.shape == (64, 64, 16) and written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(read_image(out / "scan_mask.nii.gz").pixels > 0, object_mask())
    result = json.loads((out / "scan.json").read_text())["results"][0]
    spacing = read_image(scan).voxel_spacing
    steps = np.linalg.norm(OBLIQUE[:3, :3], axis=0)  # along columns, rows, slices
    assert spacing == pytest.approx(tuple(steps[::-1]))
    voxels = int(object_mask().sum())
    assert result["volume"] == {"voxels": voxels,
                                "ml": round(voxels * float(np.prod(spacing)) / 1000, 4),
                                "voxel_mm": list(spacing)}
    assert result["decisions"]["volume"]["propagated_slices"] == [DIM_SLICE]
    assert result["boxes"][0][0] == 2 and len(result["boxes"][0]) == 5
    grid = np.asarray(Image.open(out / result["slices_file"]))
    assert grid.shape == (3 * 64, 3 * 64, 3)  # 7 slices in a 3 x 3 grid
    assert (out / "scan_overlay.png").is_file()

    # the same settings: skipped; another volume mode: other settings, redone
    assert cli(str(scan), "-p", PROMPT, "-o", str(out)) == 0
    assert cli(str(scan), "-p", PROMPT, "-o", str(out), "--volume-mode", "slices") == 0
    again = json.loads((out / "scan.json").read_text())["results"][0]
    assert again["provenance"]["settings"] != result["provenance"]["settings"]
    assert again["decisions"]["volume"] == {"mode": "slices"}
    assert read_image(out / "scan_mask.nii.gz").pixels[BLOB_SLICE].any()


def test_a_volume_not_found_writes_no_grid_and_an_empty_mask(cli, tmp_path):
    pixels = volume_pixels()
    pixels[:BLOB_SLICE] = pixels[0]
    path = tmp_path / "in" / "empty.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(slices_to_nifti(pixels), np.eye(4)), path)
    assert cli(str(path), "-p", PROMPT, "-o", str(tmp_path / "out")) == 0
    result = json.loads((tmp_path / "out" / "empty.json").read_text())["results"][0]
    assert result["found"] is False and result["slices_file"] is None
    assert result["volume"]["voxels"] == 0 and not (tmp_path / "out" / "empty_slices.png").exists()


def test_the_local_engine_follows_the_slices(tmp_path, monkeypatch):
    from clipsam.io.progress import SliceBar

    scan = oblique_volume(tmp_path / "in" / "scan.nii.gz")
    config = RunConfig(volume=VolumeConfig())
    seen = []
    monkeypatch.setattr(SliceBar, "update", lambda bar, done, total: seen.append((done, total)))
    summary = run_local(collect_inputs([str(scan)]),
                        SegmentJob((PROMPT,), tmp_path / "out", run_identity(config).key),
                        lambda: bright_segmenter(config), progress=lambda images, total: images)
    assert summary.done == 1 and seen == [(z + 1, 16) for z in range(16)]


def test_a_volume_setting_on_the_command_line_replaces_the_calibrated_one(cli, tmp_path):
    scan = oblique_volume(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    assert cli(str(scan), "-p", PROMPT, "-o", str(out), "--volume-setting", "cleanup=false",
               "--volume-setting", "reach=0") == 0
    volume = json.loads((out / "scan.json").read_text())["results"][0]["decisions"]["volume"]
    assert volume["cleanup"] is False and volume["reach"] == 0
    assert volume["from"]["cleanup"] == volume["from"]["reach"] == "config"
    assert volume["from"]["smoothing"] != "config"
    assert volume["propagated_slices"] == []  # reach 0: the dim slice takes no box
    assert not read_image(out / "scan_mask.nii.gz").pixels[DIM_SLICE].any()


@pytest.mark.parametrize(("argv", "message"), [
    (["--volume-setting", "depth=3"], "--volume-setting takes NAME=VALUE with NAME one of"),
    (["--volume-setting", "reach"], "--volume-setting takes NAME=VALUE"),
    (["--volume-setting", "cleanup=maybe"], "volume setting cleanup is true or false"),
    (["--volume-setting", "reach=1.5"], "volume setting reach is a whole number"),
    (["--volume-setting", "min_component=2"], "volume min_component must lie in [0.0, 1.0]"),
    (["--volume-setting", "hold=1", "--volume-mode", "slices"], "not slices"),
])
def test_a_bad_volume_setting_is_a_one_line_error(cli, tmp_path, capsys, argv, message):
    scan = oblique_volume(tmp_path / "in" / "scan.nii.gz")
    assert cli(str(scan), "-p", PROMPT, "-o", str(tmp_path / "out"), *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "scan_mask.nii.gz").exists()
