"""Augmented training views: re-encoded crops and intensity changes of labelled images.

The encoder stays locked, so augmentation that the cached grid cannot express (a crop that
changes the scale at which the target is seen, a change of contrast) needs the view encoded
again. Each view is written once as an 8-bit PNG with its mask under ``<views_dir>/<set>/``
and becomes a :class:`~clipsam.io.labelled_sets.Sample` of the same set and subject, so it is
cached, trained on and split like any other image; a view is drawn from a seed made of the
image id and the view number, so a rerun writes the same files, and its id carries a digest
of the settings that drew it, so other settings never reuse its file or its cached embedding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clipsam.io.atomic import write_atomic
from clipsam.io.labelled_sets import Sample
from clipsam.io.masks import read_mask, write_mask_png
from clipsam.io.read import read_image


@dataclass(frozen=True)
class ViewConfig:
    """``per_image`` views of each training image (of the ``sets`` named; every set when
    empty): a crop keeping ``min_side``-1 of each side at a random place; a resolution change
    (down by a factor uniform in ``min_scale``-1 and back up); a Gaussian blur of standard
    deviation uniform in 0-``blur`` pixels; intensity ``x ** gamma`` (on the image scaled to
    [0, 1]) with ``log gamma`` uniform in +-``log_gamma``; contrast around mid-grey scaled by
    ``exp(u)``, u uniform in +-``log_contrast``; Gaussian noise of standard deviation up to
    ``noise`` (same scale); a border of up to ``border`` of each side in one random grey
    (mask background there). ``channel``: keep only that channel of an RGB image, as a gray
    view (a slice showing several MRI sequences as RGB seen as one sequence alone, as
    single-sequence files show it; None keeps the image as it is). The defaults draw a crop,
    gamma and noise only; the other changes remove a source's look (film, scanner, resolution,
    frame) from its anatomy."""

    per_image: int = 1
    min_side: float = 0.7
    log_gamma: float = 0.4
    noise: float = 0.03
    min_scale: float = 1.0
    blur: float = 0.0
    log_contrast: float = 0.0
    border: float = 0.0
    channel: int | None = None
    sets: tuple[str, ...] = ()


_SOURCE_CUES = ("min_scale", "blur", "log_contrast", "border", "channel")


def settings_tag(config: ViewConfig) -> str:
    """8 hex digits naming the settings that draw a view (not how many views are drawn, nor
    of which sets); settings at their defaults leave the tag of earlier views unchanged."""
    key = f"{config.min_side}/{config.log_gamma}/{config.noise}"
    defaults = ViewConfig()
    key += "".join(f"/{name}={getattr(config, name)}" for name in _SOURCE_CUES
                   if getattr(config, name) != getattr(defaults, name))
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _rng(sample: Sample, view: int) -> np.random.Generator:
    key = f"view/{sample.set_name}/{sample.image_id}/{view}".encode()
    return np.random.default_rng(int(hashlib.sha256(key).hexdigest()[:16], 16))


def augment(pixels: np.ndarray, mask: np.ndarray, config: ViewConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One view of (H, W[, 3]) pixels and their (H, W) bool mask: (h, w[, 3]) uint8 pixels and
    the (h, w) bool mask cut the same way."""
    from scipy.ndimage import gaussian_filter

    if config.channel is not None and pixels.ndim == 3:
        pixels = pixels[..., config.channel]
    h, w = mask.shape
    ch = max(1, round(h * rng.uniform(config.min_side, 1.0)))
    cw = max(1, round(w * rng.uniform(config.min_side, 1.0)))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = np.asarray(pixels[y:y + ch, x:x + cw], np.float64)
    low, high = float(crop.min()), float(crop.max())
    unit = (crop - low) / (high - low) if high > low else np.zeros_like(crop)
    if config.min_scale < 1.0:
        unit = _rescaled(unit, rng.uniform(config.min_scale, 1.0))
    if config.blur > 0:
        sigma = rng.uniform(0.0, config.blur)
        unit = gaussian_filter(unit, sigma=(sigma, sigma, 0)[:unit.ndim])
    unit = np.clip(unit, 0.0, 1.0) ** float(np.exp(rng.uniform(-config.log_gamma,
                                                                config.log_gamma)))
    if config.log_contrast > 0:
        unit = 0.5 + (unit - 0.5) * float(np.exp(rng.uniform(-config.log_contrast,
                                                              config.log_contrast)))
    unit = unit + rng.normal(0.0, rng.uniform(0.0, config.noise), size=unit.shape)
    cut = mask[y:y + ch, x:x + cw]
    if config.border > 0:
        unit, cut = _framed(unit, cut, config.border, rng)
    out = np.clip(np.round(unit * 255), 0, 255).astype(np.uint8)
    return out, cut


def _rescaled(unit: np.ndarray, factor: float) -> np.ndarray:
    """``unit`` (values in [0, 1]) down by ``factor`` and back to its size (bilinear)."""
    h, w = unit.shape[:2]
    small = (max(1, round(w * factor)), max(1, round(h * factor)))
    planes = unit[..., None] if unit.ndim == 2 else unit
    out = [np.asarray(Image.fromarray(planes[..., c].astype(np.float32), mode="F")
                      .resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR))
           for c in range(planes.shape[-1])]
    stacked = np.stack(out, axis=-1).astype(np.float64)
    return stacked[..., 0] if unit.ndim == 2 else stacked


def _framed(unit: np.ndarray, mask: np.ndarray, border: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A frame of random width (up to ``border`` of each side, per side) in one random grey
    around ``unit``; the mask is background there."""
    h, w = mask.shape
    top, bottom = (int(rng.integers(0, round(h * border) + 1)) for _ in range(2))
    left, right = (int(rng.integers(0, round(w * border) + 1)) for _ in range(2))
    pad = ((top, bottom), (left, right)) + (((0, 0),) if unit.ndim == 3 else ())
    framed = np.pad(unit, pad, constant_values=float(rng.choice([0.0, rng.uniform(), 1.0])))
    return framed, np.pad(mask, pad[:2], constant_values=False)


def _read_labelled(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(H, W[, 3]) pixels and the (H, W) bool mask of a sample."""
    pixels = np.asarray(read_image(sample.image_path).pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return pixels, read_mask(sample.mask_path)


def make_views(samples: Sequence[Sample], views_dir: Path, config: ViewConfig) -> list[Sample]:
    """Write (once) and return ``config.per_image`` augmented views of every sample, named
    ``<image id>~view<k>-<settings tag>``; a sample is read only if one of its views is
    missing, and once for all of them."""
    views, tag = [], settings_tag(config)
    for sample in samples:
        if config.sets and sample.set_name not in config.sets:
            continue
        folder = Path(views_dir) / sample.set_name
        source = None
        for k in range(config.per_image):
            view_id = f"{sample.image_id}~view{k}-{tag}"
            image_path = folder / "images" / f"{view_id}.png"
            mask_path = folder / "masks" / f"{view_id}.png"
            if not (image_path.is_file() and mask_path.is_file()):
                source = source or _read_labelled(sample)
                out, cut = augment(*source, config, _rng(sample, k))
                write_mask_png(mask_path, cut)
                write_atomic(image_path,
                             lambda p, a=out: Image.fromarray(a).save(p, format="PNG"))
            views.append(Sample(sample.set_name, view_id, sample.subject, image_path,
                                mask_path))
    return views
