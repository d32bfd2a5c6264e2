"""Binary masks on disk: 8-bit 0/255 PNG, and NIfTI in the space of the input image."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic
from clipsam.io.image import MedicalImage
from clipsam.io.nifti import slices_to_nifti
from clipsam.io.read import read_image


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """(H, W) bool mask from an image file: any non-zero pixel (any channel) is target."""
    image = read_image(path)
    if image.is_volume:
        raise InputError(f"cannot use {path} as a mask: it is a volume, not a 2-D image")
    pixels = np.asarray(image.pixels)
    return (pixels != 0).any(axis=-1) if pixels.ndim == 3 else pixels != 0


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write an (H, W) mask as an 8-bit PNG: 0 background, 255 target."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise InputError(f"cannot write {path}: a PNG mask must be a non-empty (H, W) array, "
                         f"got shape {mask.shape}")
    pixels = np.where(mask.astype(bool), 255, 0).astype(np.uint8)
    return write_atomic(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def write_mask_nifti(
    path: str | os.PathLike[str], mask_or_volume: np.ndarray, like: MedicalImage
) -> Path:
    """Write an (H, W) mask or (S, H, W) stack of slice masks as uint8 0/1 NIfTI (.nii/.nii.gz).

    ``like`` is the image the masks were made from; its affine and header are reused (data type
    set to uint8, scaling removed). Without a header (a DICOM series) its affine is used, and
    without either an affine from its pixel spacing.
    """
    masks = np.asarray(mask_or_volume).astype(bool)
    masks = masks[None] if masks.ndim == 2 else masks
    if masks.ndim != 3 or masks.shape[1:] != like.size or masks.shape[0] != like.num_slices:
        raise InputError(f"cannot write {path}: mask shape {np.shape(mask_or_volume)} does not "
                         f"match the image ({like.num_slices} x {like.size[0]} x {like.size[1]})")
    data = slices_to_nifti(masks.astype(np.uint8))
    if like.affine is not None and like.header is not None:
        header = like.header.copy()
        if data.size == np.prod(header.get_data_shape()):
            data = data.reshape(header.get_data_shape())
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        image = _image_class(header)(data, like.affine, header=header)
    else:
        row, col = like.spacing or (1.0, 1.0)
        affine = like.affine if like.affine is not None else np.diag([col, row, 1.0, 1.0])
        image = nib.Nifti1Image(data, affine)
        image.set_data_dtype(np.uint8)
    return write_atomic(path, lambda tmp: nib.save(image, tmp))


def _image_class(header: nib.Nifti1Header) -> type[nib.Nifti1Image]:
    """The NIfTI image class that goes with ``header`` (NIfTI-2 or NIfTI-1)."""
    return nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
