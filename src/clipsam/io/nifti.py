"""NIfTI reader (nibabel): 2-D images and 3-D volumes as slices, keeping affine and header.

Array order: a NIfTI array is indexed (i, j, k); slice k is shown with rows along j and columns
along i, i.e. ``pixels[k] = data[:, :, k].T``. No flips are applied, so writing a mask back with
:func:`slices_to_nifti` lands exactly on the input's voxels.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic
from clipsam.io.image import MedicalImage
from clipsam.io.limits import check_pixel_count


def read_nifti(path: Path, max_pixels: int) -> MedicalImage:
    """Read a .nii / .nii.gz file as float32 values (scl_slope/scl_inter applied)."""
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"cannot read {path}: not a NIfTI-1/2 image")
    shape = _spatial_shape(path, tuple(image.shape))
    check_pixel_count(path, shape, max_pixels)
    if image.get_data_dtype().fields is not None:
        raise InputError(f"cannot read {path}: NIfTI colour (structured dtype) is not supported")
    data = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
    volume = nifti_to_slices(data)
    zooms = image.header.get_zooms()
    spacing = (float(zooms[1]), float(zooms[0])) if len(zooms) >= 2 else None
    is_volume = volume.shape[0] > 1
    return MedicalImage(
        pixels=volume if is_volume else volume[0],
        spacing=spacing if spacing and min(spacing) > 0 else None,
        source_format="nifti",
        path=path,
        is_volume=is_volume,
        affine=np.asarray(image.affine, dtype=np.float64),
        header=image.header.copy(),
    )


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(I, J, K) after dropping trailing singleton dimensions; 2-D files get K = 1."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        return shape[0], shape[1], 1
    if len(shape) != 3:
        raise InputError(f"cannot read {path}: {len(shape)}-D NIfTI {shape} is not supported "
                         "(2-D images and 3-D volumes only)")
    return shape


def nifti_to_slices(data: np.ndarray) -> np.ndarray:
    """(I, J, K) NIfTI array -> (K, J, I) stack of 2-D slices."""
    return np.transpose(data, (2, 1, 0))


def slices_to_nifti(slices: np.ndarray) -> np.ndarray:
    """(K, J, I) stack of slices (or one (J, I) slice) -> (I, J, K) NIfTI array."""
    slices = slices[None] if slices.ndim == 2 else slices
    return np.transpose(slices, (2, 1, 0))


def write_mask_nifti(
    path: str | os.PathLike[str], mask_or_volume: np.ndarray, like: MedicalImage
) -> Path:
    """Write an (H, W) mask or (S, H, W) stack of slice masks as uint8 0/1 NIfTI
    (.nii/.nii.gz) over ``like``'s voxels (:func:`write_volume_nifti`)."""
    return write_volume_nifti(path, np.asarray(mask_or_volume).astype(np.uint8), like)


def write_volume_nifti(path: str | os.PathLike[str], slices: np.ndarray,
                       like: MedicalImage) -> Path:
    """Write an (H, W) plane or (S, H, W) stack (uint8 or float32, kept) as NIfTI.

    ``like`` is the image the planes were made from; its affine and header are reused (data
    type set to the planes', scaling removed). Without a header (a DICOM series) its affine is
    used, and without either an affine from its pixel spacing.
    """
    planes = np.asarray(slices)
    planes = planes[None] if planes.ndim == 2 else planes
    if planes.ndim != 3 or planes.shape[1:] != like.size or planes.shape[0] != like.num_slices:
        raise InputError(f"cannot write {path}: shape {np.shape(slices)} does not match the "
                         f"image ({like.num_slices} x {like.size[0]} x {like.size[1]})")
    data = slices_to_nifti(planes)
    if like.affine is not None and like.header is not None:
        header = like.header.copy()
        if data.size == np.prod(header.get_data_shape()):
            data = data.reshape(header.get_data_shape())
        header.set_data_dtype(planes.dtype)
        header.set_slope_inter(1.0, 0.0)
        image = _image_class(header)(data, like.affine, header=header)
    else:
        row, col = like.spacing or (1.0, 1.0)
        affine = like.affine if like.affine is not None else np.diag([col, row, 1.0, 1.0])
        image = nib.Nifti1Image(data, affine)
        image.set_data_dtype(planes.dtype)
    return write_atomic(path, lambda tmp: nib.save(image, tmp))


def _image_class(header: nib.Nifti1Header) -> type[nib.Nifti1Image]:
    """The NIfTI image class that goes with ``header`` (NIfTI-2 or NIfTI-1)."""
    return nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
