"""read_image for every format (small files written here), and every bad-input case."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from clipsam.errors import InputError
from clipsam.io.image import segmenter_input
from clipsam.io.read import read_image

RNG = np.random.default_rng(0)


def write_dicom(path, stored: np.ndarray, **attributes) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape[-2:] if stored.ndim == 2 else stored.shape[:2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_png_gray_8_and_16_bit_keep_values(tmp_path):
    gray8 = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    gray16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(gray8).save(tmp_path / "a.png")
    Image.fromarray(gray16).save(tmp_path / "b.png")
    a, b = read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png")
    assert a.source_format == "png" and a.spacing is None and a.size == (20, 30)
    np.testing.assert_array_equal(a.pixels, gray8)
    assert b.pixels.dtype == np.uint16
    np.testing.assert_array_equal(b.pixels, gray16)


def test_png_rgba_and_palette_become_rgb(tmp_path):
    rgba = RNG.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    np.testing.assert_array_equal(image.pixels, rgba[..., :3])
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").pixels.shape == (8, 9, 3)


def test_jpeg_rgb_and_gray(tmp_path):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.jpeg", quality=95)
    colour, gray = read_image(tmp_path / "c.jpg"), read_image(tmp_path / "g.jpeg")
    assert colour.source_format == "jpeg" and colour.pixels.shape == (16, 24, 3)
    assert abs(int(colour.pixels[..., 0].mean()) - 200) <= 2
    assert gray.pixels.shape == (16, 24)


def test_tiff_16_bit_float_rgb_planar_and_stack(tmp_path):
    gray16 = RNG.integers(0, 65536, (12, 10), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", gray16, resolution=(20.0, 10.0),
                     resolutionunit="CENTIMETER")
    image = read_image(tmp_path / "g.tif")
    assert image.pixels.dtype == np.uint16 and image.pixels.max() == gray16.max()
    np.testing.assert_array_equal(image.pixels, gray16)
    assert image.spacing == pytest.approx((1.0, 0.5))  # 10 px/cm rows, 20 px/cm cols
    floats = RNG.normal(size=(5, 6)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", floats)
    np.testing.assert_array_equal(read_image(tmp_path / "f.tiff").pixels, floats)
    rgb = RNG.integers(0, 256, (7, 8, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif").pixels, rgb)
    stack = RNG.integers(0, 4000, (4, 6, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    volume = read_image(tmp_path / "stack.tif")
    assert volume.is_volume and volume.num_slices == 4 and volume.size == (6, 5)
    np.testing.assert_array_equal(volume.slice(2).pixels, stack[2])


def test_dicom_rescale_spacing_and_no_window(tmp_path):
    stored = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024,
                PixelSpacing=[0.7, 0.5])
    image = read_image(tmp_path / "ct.dcm")
    assert image.source_format == "dicom" and image.pixels.dtype == np.float32
    np.testing.assert_allclose(image.pixels, stored * 2.0 - 1024)
    assert image.spacing == pytest.approx((0.7, 0.5))


def test_dicom_window_clips_and_monochrome1_inverts(tmp_path):
    stored = np.array([[0, 100, 200, 300]], dtype=np.uint16)
    write_dicom(tmp_path / "w.dcm", stored, WindowCenter=150.5, WindowWidth=101)
    np.testing.assert_allclose(read_image(tmp_path / "w.dcm").pixels, [[100, 100, 200, 200]])
    write_dicom(tmp_path / "m1.dcm", stored, PhotometricInterpretation="MONOCHROME1",
                ImagerPixelSpacing=[0.2, 0.2])
    inverted = read_image(tmp_path / "m1.dcm")
    np.testing.assert_allclose(inverted.pixels, [[300, 200, 100, 0]])
    assert inverted.spacing == pytest.approx((0.2, 0.2))


def test_dicom_without_preamble_is_read_by_name(tmp_path):
    write_dicom(tmp_path / "x.dcm", np.ones((2, 2), np.uint16))
    raw = (tmp_path / "x.dcm").read_bytes()[132:]
    (tmp_path / "bare.dcm").write_bytes(raw)
    assert read_image(tmp_path / "bare.dcm").size == (2, 2)


def test_nifti_2d_and_3d_keep_affine_header_and_orientation(tmp_path):
    data = RNG.normal(size=(6, 4, 3)).astype(np.float32)  # (i, j, k)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    volume = read_image(tmp_path / "v.nii.gz")
    assert volume.is_volume and volume.num_slices == 3 and volume.size == (4, 6)
    np.testing.assert_allclose(volume.slice(1).pixels, data[:, :, 1].T)
    np.testing.assert_allclose(volume.affine, affine)
    assert volume.spacing == pytest.approx((0.9, 0.8))
    assert tuple(volume.header.get_data_shape()) == (6, 4, 3)
    flat = RNG.normal(size=(5, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(flat, np.eye(4)), tmp_path / "flat.nii")
    image = read_image(tmp_path / "flat.nii")
    assert not image.is_volume and image.size == (7, 5)
    np.testing.assert_allclose(image.pixels, flat.T)


def test_segmenter_input_is_float_and_refuses_volumes(tmp_path):
    data = np.zeros((3, 3, 2), np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii")
    volume = read_image(tmp_path / "v.nii")
    with pytest.raises(InputError, match="slice by slice"):
        segmenter_input(volume)
    pixels = segmenter_input(volume.slice(0))
    assert pixels.dtype == np.float32 and np.isfinite(pixels).all()


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_bad_inputs_raise_one_line_naming_the_file(tmp_path):
    assert "no such file" in one_line_error(tmp_path / "missing.png")
    assert "holds no DICOM series" in one_line_error(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in one_line_error(tmp_path / "empty.png")
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a supported image format" in one_line_error(tmp_path / "notes.txt")
    (tmp_path / "fake.png").write_text("not really a png")
    one_line_error(tmp_path / "fake.png")
    Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    one_line_error(tmp_path / "cut.png")
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(b"\0" * 100))
    one_line_error(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 40)
    one_line_error(tmp_path / "junk.dcm")


@pytest.mark.filterwarnings("ignore:.*zero-size array")
def test_zero_size_and_too_many_pixels(tmp_path):
    tifffile.imwrite(tmp_path / "zero.tif", np.zeros((0, 5), np.uint8))
    assert "zero size" in one_line_error(tmp_path / "zero.tif")
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    assert "exceed the limit" in one_line_error(tmp_path / "big.png", max_pixels=9_999)
    assert read_image(tmp_path / "big.png", max_pixels=10_000).size == (100, 100)


def test_dicom_without_pixels_and_4d_nifti_are_refused(tmp_path):
    write_dicom(tmp_path / "p.dcm", np.ones((2, 2), np.uint16))
    ds = pydicom.dcmread(tmp_path / "p.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    assert "no pixel data" in one_line_error(tmp_path / "nopix.dcm")
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), tmp_path / "t.nii")
    assert "not supported" in one_line_error(tmp_path / "t.nii")


def test_dicom_series_folder_is_one_volume_in_position_order(tmp_path):
    from dicom_series import phantom, write_ct_series

    volume = phantom()
    oblique = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal: rows along +y, columns along -z
    paths = write_ct_series(tmp_path / "series", volume, orientation=oblique, slice_step=3.0,
                            names=["b.dcm", "d.dcm", "a.dcm", "c.dcm"])
    image = read_image(tmp_path / "series")
    assert image.is_volume and image.pixels.shape == (4, 40, 60)
    np.testing.assert_array_equal(image.pixels, volume)  # file names do not decide the order
    assert list(image.metadata["dicom_files"]) == paths
    assert image.spacing == (0.7, 0.8)
    for k, path in enumerate(paths):  # voxel (column 0, row 0, slice k) is the slice's position
        position = [float(v) for v in pydicom.dcmread(path).ImagePositionPatient]
        ras = image.affine @ [0, 0, k, 1]
        np.testing.assert_allclose(ras[:3], [-position[0], -position[1], position[2]])
    np.testing.assert_allclose(image.affine[:3, 0], [0, -0.8, 0])  # LPS +y is RAS -y


def test_dicom_folder_with_two_series_is_refused(tmp_path):
    from dicom_series import phantom, write_ct_series

    write_ct_series(tmp_path / "mixed", phantom(2), names=["a1.dcm", "a2.dcm"])
    write_ct_series(tmp_path / "mixed", phantom(2), names=["b1.dcm", "b2.dcm"])
    assert "2 DICOM series" in one_line_error(tmp_path / "mixed")
