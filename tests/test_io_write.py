"""Mask PNG / NIfTI writers round-trip through read_image; overlays and JSON records."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from clipsam.errors import InputError
from clipsam.io import (
    read_image,
    read_mask,
    write_mask_nifti,
    write_mask_png,
    write_overlay_png,
    write_record_json,
)
from clipsam.io.overlay import BOX_COLOUR, MASK_COLOUR, to_display


def square_mask(shape=(20, 30)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[5:12, 8:20] = True
    return mask


def test_mask_png_is_8_bit_0_255_and_round_trips(tmp_path):
    mask = square_mask()
    write_mask_png(tmp_path / "out" / "m.png", mask)
    with Image.open(tmp_path / "out" / "m.png") as image:
        assert image.mode == "L"
        assert set(np.unique(np.asarray(image))) == {0, 255}
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "m.png"), mask)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m.png"]  # no temporary left
    with pytest.raises(InputError):
        write_mask_png(tmp_path / "bad.png", np.zeros((2, 3, 4)))


def test_mask_nifti_uses_the_input_affine_and_voxel_order(tmp_path):
    data = np.random.default_rng(1).normal(size=(6, 4, 3)).astype(np.float32)
    affine = np.array([[0, -0.8, 0, 10], [0.9, 0, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    source = nib.Nifti1Image(data, affine)
    source.header.set_slope_inter(2.0, 1.0)
    nib.save(source, tmp_path / "img.nii.gz")
    image = read_image(tmp_path / "img.nii.gz")
    masks = np.stack([s.pixels > 0 for s in image.slices()])
    write_mask_nifti(tmp_path / "mask.nii.gz", masks, like=image)
    written = nib.load(tmp_path / "mask.nii.gz")
    np.testing.assert_allclose(written.affine, affine)
    assert written.get_data_dtype() == np.uint8
    expected = (image.pixels > 0).transpose(2, 1, 0)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)
    with pytest.raises(InputError, match="does not match"):
        write_mask_nifti(tmp_path / "x.nii", masks[:2], like=image)


def test_mask_nifti_for_a_2d_image_keeps_its_shape(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((5, 7), np.float32), np.diag([2, 3, 1, 1])),
             tmp_path / "flat.nii")
    image = read_image(tmp_path / "flat.nii")
    mask = np.zeros(image.size, bool)
    mask[1, 4] = True
    write_mask_nifti(tmp_path / "m.nii", mask, like=image)
    written = nib.load(tmp_path / "m.nii")
    assert written.shape == (5, 7) and np.asarray(written.dataobj)[4, 1] == 1


def test_mask_nifti_from_a_png_gets_an_affine_from_spacing(tmp_path):
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    write_mask_nifti(tmp_path / "m.nii.gz", np.ones((4, 6), bool), like=image)
    assert nib.load(tmp_path / "m.nii.gz").shape == (6, 4, 1)


def test_overlay_draws_outline_and_boxes_on_any_range(tmp_path):
    pixels = np.linspace(-1000, 3000, 20 * 30, dtype=np.float32).reshape(20, 30)
    mask = square_mask()
    write_overlay_png(tmp_path / "o.png", pixels, mask, boxes=np.array([[1, 1, 6, 4]]))
    drawn = np.asarray(Image.open(tmp_path / "o.png"))
    assert drawn.shape == (20, 30, 3) and drawn.dtype == np.uint8
    assert tuple(drawn[5, 10]) == MASK_COLOUR  # top edge of the mask
    assert tuple(drawn[8, 12]) != MASK_COLOUR  # inside: not painted
    assert tuple(drawn[1, 3]) == BOX_COLOUR
    with pytest.raises(InputError):
        write_overlay_png(tmp_path / "bad.png", pixels, mask[:5])


def test_to_display_stretches_and_keeps_uint8():
    display = to_display(np.array([[0.0, 0.5], [1.0, np.nan]]), 0, 100)
    assert display.shape == (2, 2, 3)
    assert display[0, 0, 0] == 0 and display[1, 0, 0] == 255
    gray = np.array([[3, 7]], np.uint8)
    np.testing.assert_array_equal(to_display(gray)[..., 1], gray)


def test_record_json_serialises_numpy_and_adds_versions(tmp_path):
    record = {"boxes": np.array([[1, 2, 3, 4]], np.float32), "score": np.float32(0.5),
              "found": np.bool_(True), "n": np.int64(3), "hd95": float("nan"),
              "path": tmp_path / "x.png", "spacing": (0.1, 0.2)}
    write_record_json(tmp_path / "r.json", record)
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["boxes"] == [[1.0, 2.0, 3.0, 4.0]] and loaded["score"] == 0.5
    assert loaded["found"] is True and loaded["n"] == 3 and loaded["hd95"] is None
    assert loaded["path"].endswith("x.png") and loaded["spacing"] == [0.1, 0.2]
    assert loaded["versions"]["clipsam"] and "torch" in loaded["versions"]
