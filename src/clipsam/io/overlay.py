"""Pictures for people: the image in 8-bit with the mask outline and prompt boxes drawn on it."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from clipsam.errors import InputError
from clipsam.io.atomic import write_atomic
from clipsam.io.image import MedicalImage, segmenter_input

MASK_COLOUR = (0, 255, 0)
BOX_COLOUR = (255, 64, 64)
REFERENCE_COLOUR = (255, 220, 0)


def to_display(pixels: np.ndarray, low_percentile: float = 0.5,
               high_percentile: float = 99.5) -> np.ndarray:
    """(H, W, 3) uint8 from any numeric range: clip to the given percentiles, scale to 0..255.

    uint8 input is shown unchanged; other ranges are stretched (a constant image turns black).
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        values = pixels.astype(np.float32)
        finite = values[np.isfinite(values)]
        low, high = (np.percentile(finite, [low_percentile, high_percentile])
                     if finite.size else (0.0, 0.0))
        scaled = (np.clip(np.nan_to_num(values, nan=low), low, high) - low) / max(high - low, 1e-12)
        pixels = np.round(scaled * 255).astype(np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def _outline(mask: np.ndarray, size: tuple[int, int] | None = None,
               thickness: int = 1) -> np.ndarray:
    """The ``thickness``-pixel inner outline of a bool mask, after resizing it (nearest) to
    ``size`` = (width, height) when given."""
    shape = np.asarray(mask, bool)
    if size is not None:
        shape = np.asarray(Image.fromarray(shape).resize(size, Image.Resampling.NEAREST))
    return shape & ~ndimage.binary_erosion(shape, iterations=thickness, border_value=0)


def write_overlay_png(
    path: str | os.PathLike[str],
    image: MedicalImage | np.ndarray,
    mask: np.ndarray,
    boxes: np.ndarray | None = None,
) -> Path:
    """Write the image with ``mask``'s outline (green) and xyxy ``boxes`` (red) as an RGB PNG."""
    pixels = segmenter_input(image) if isinstance(image, MedicalImage) else np.asarray(image)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != pixels.shape[:2]:
        raise InputError(f"cannot write {path}: mask shape {mask.shape} does not match the "
                         f"image shape {pixels.shape[:2]}")
    canvas = to_display(pixels).copy()
    thickness = max(1, round(min(mask.shape) / 256))
    canvas[_outline(mask, thickness=thickness)] = MASK_COLOUR
    picture = Image.fromarray(canvas)
    if boxes is not None and len(boxes):
        draw = ImageDraw.Draw(picture)
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=float).reshape(-1, 4):
            draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=BOX_COLOUR,
                           width=thickness)
    return write_atomic(path, lambda tmp: picture.save(tmp, format="PNG"))


def write_slice_grid_png(
    path: str | os.PathLike[str],
    volume: MedicalImage,
    mask: np.ndarray,
    max_tiles: int = 24,
    tile_size: int = 256,
) -> Path | None:
    """A quick look at a volume's result: the slices that hold ``mask`` ((Z, H, W) bool) in a
    grid, each with the mask's outline (green) and its slice number, as an RGB PNG (gray
    slices, or the RGB frames of a colour cine).

    At most ``max_tiles`` slices, evenly spread over those holding the mask; each tile is
    shrunk to at most ``tile_size`` pixels a side; the levels are stretched once for the
    whole volume so tiles compare. Writes nothing and returns None when the mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (volume.num_slices, *volume.size):
        raise InputError(f"cannot write {path}: mask shape {mask.shape} does not match the "
                         f"volume ({volume.num_slices} x {volume.size[0]} x {volume.size[1]})")
    held = np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))
    if held.size == 0:
        return None
    shown = held[np.unique(np.round(np.linspace(0, held.size - 1, min(max_tiles, held.size)))
                           .astype(int))]
    pixels = np.asarray(volume.pixels, np.float32)
    finite = pixels[np.isfinite(pixels)]
    low, high = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 0.0)
    scale = min(1.0, tile_size / max(volume.size))
    height, width = (max(1, round(n * scale)) for n in volume.size)
    columns = math.ceil(math.sqrt(len(shown)))
    rows = math.ceil(len(shown) / columns)
    sheet = Image.new("RGB", (columns * width, rows * height))
    for tile, index in enumerate(shown):
        plane = np.clip(np.nan_to_num(pixels[index], nan=low), low, high)
        levels = np.round((plane - low) / max(high - low, 1e-12) * 255).astype(np.uint8)
        levels = np.asarray(Image.fromarray(levels).resize((width, height),
                                                           Image.Resampling.BILINEAR))
        canvas = (levels.copy() if levels.ndim == 3  # the RGB frames of a colour cine
                  else np.repeat(levels[..., None], 3, axis=-1))
        canvas[_outline(mask[index], (width, height))] = MASK_COLOUR
        picture = Image.fromarray(canvas)
        ImageDraw.Draw(picture).text((3, 2), str(int(index)), fill=MASK_COLOUR)
        sheet.paste(picture, ((tile % columns) * width, (tile // columns) * height))
    return write_atomic(path, lambda tmp: sheet.save(tmp, format="PNG"))


def case_picture(pixels: np.ndarray, mask: np.ndarray, reference: np.ndarray,
                 boxes: np.ndarray, size: int = 256) -> np.ndarray:
    """(S, S', 3) uint8 of one evaluated image, at most ``size`` pixels a side: the image with
    the reference's outline (yellow), the answer's outline (green) and its box prompts (red)."""
    canvas = to_display(pixels)
    scale = min(1.0, size / max(canvas.shape[:2]))
    height, width = (max(1, round(n * scale)) for n in canvas.shape[:2])
    canvas = np.asarray(Image.fromarray(canvas).resize((width, height),
                                                       Image.Resampling.BILINEAR)).copy()
    for outlined, colour in ((reference, REFERENCE_COLOUR), (mask, MASK_COLOUR)):
        canvas[_outline(outlined, (width, height))] = colour
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4) * scale:
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=BOX_COLOUR)
    return np.asarray(picture)


def write_sheet_png(path: str | os.PathLike[str], pictures: list[np.ndarray],
                    captions: list[str], columns: int = 4) -> Path:
    """The RGB ``pictures`` in a grid of ``columns``, each with its caption above it, as a
    PNG."""
    if not pictures or len(pictures) != len(captions):
        raise InputError(f"cannot write {path}: {len(pictures)} pictures and "
                         f"{len(captions)} captions")
    cell_h = max(p.shape[0] for p in pictures) + 14
    cell_w = max(p.shape[1] for p in pictures)
    rows = math.ceil(len(pictures) / columns)
    sheet = Image.new("RGB", (min(columns, len(pictures)) * cell_w, rows * cell_h))
    draw = ImageDraw.Draw(sheet)
    for index, (picture, caption) in enumerate(zip(pictures, captions, strict=True)):
        x, y = (index % columns) * cell_w, (index // columns) * cell_h
        draw.text((x + 2, y + 1), caption, fill=(255, 255, 255))
        sheet.paste(Image.fromarray(picture), (x, y + 14))
    return write_atomic(path, lambda tmp: sheet.save(tmp, format="PNG"))
