"""A synthetic volume with a known 3-D object, and fake models that see it exactly.

The volume is 16 slices of 64 x 64 pixels: a bright square object on slices 2-8 that drifts one
pixel per slice (the truth), drawn dim on slice 5 (the map misses it there), and a bright blob
on slice 13 alone, far from the object (not part of the truth). ``examples/volume`` holds it as
NIfTI (written by :func:`write_example`).

:class:`BrightSegmenter` encodes a plane as its brightness on a 16 x 16 grid (4 pixels a cell)
and decodes a box as the pixels inside it brighter than ``DECODE_LEVEL`` (largest component);
:class:`BrightGrounding` reads the same grid as the target's probability map, with presence the
map's peak against threshold 0.5 (recorded in each answer's decisions, as the built-in model's
concept match is), and may carry a calibrated ``volume`` block.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from clipsam.api import Segmenter
from clipsam.models.grounding.words import ConceptMatch
from clipsam.models.segmenter import Geometry, ImageEmbedding, MaskPrediction
from clipsam.pipelines.medclipsam import MedClipSamPipeline

SLICES, SIZE = 16, 64
OBJECT_SLICES = range(2, 9)
DIM_SLICE, BLOB_SLICE = 5, 13
BRIGHT, DIM = 230, 90
DECODE_LEVEL = 60
SPACING_MM = (3.0, 1.0, 1.0)  # (slice, row, col) of the example NIfTI
PROMPT = "bright thing"


def object_mask() -> np.ndarray:
    """(Z, H, W) the 3-D object: a 16-pixel square on slices 2-8, one pixel right per slice."""
    truth = np.zeros((SLICES, SIZE, SIZE), bool)
    for z in OBJECT_SLICES:
        shift = z - OBJECT_SLICES[0]
        truth[z, 20:36, 18 + shift:34 + shift] = True
    return truth


def volume_pixels() -> np.ndarray:
    """(Z, H, W) uint8: the object (dim on slice 5), the far blob, a little texture."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 20, (SLICES, SIZE, SIZE)).astype(np.uint8)
    truth = object_mask()
    pixels[truth] = BRIGHT
    pixels[DIM_SLICE][truth[DIM_SLICE]] = DIM
    pixels[BLOB_SLICE, 48:56, 48:56] = BRIGHT
    return pixels


class BrightSegmenter:
    """Encodes a 64 x 64 plane as its mean brightness (0..1) per 4 x 4 cell; decodes a box as
    the largest component of the pixels inside it brighter than ``DECODE_LEVEL``. Counts its
    encoder passes and decoded boxes."""

    name = "bright"
    supports_points = False

    def __init__(self) -> None:
        self.encoded = 0
        self.decoded = 0

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.encoded += 1
        gray = np.asarray(image, np.float32)
        grid = gray.reshape(16, SIZE // 16, 16, SIZE // 16).mean(axis=(1, 3)) / 255
        return ImageEmbedding(grid[None, None].astype(np.float32),
                              Geometry((SIZE, SIZE), (SIZE, SIZE), SIZE), self.name,
                              {"image": gray})

    def predict(self, embedding, boxes=None, points=None, point_labels=None) -> MaskPrediction:
        image = embedding.extras["image"]
        masks = []
        for x1, y1, x2, y2 in np.asarray(boxes, float).reshape(-1, 4):
            inside = np.zeros(image.shape, bool)
            inside[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = True
            labels, count = ndimage.label(inside & (image > DECODE_LEVEL))
            sizes = np.bincount(labels.ravel())[1:]
            masks.append(labels == sizes.argmax() + 1 if count else np.zeros_like(inside))
        self.decoded += len(masks)
        masks = np.array(masks, bool).reshape(-1, SIZE, SIZE)
        return MaskPrediction(masks, np.zeros((len(masks), 16, 16), np.float32),
                              np.full(len(masks), 0.9, np.float32))


class BrightGrounding:
    """Dense grounding: the cell brightness is the target's probability; present when the map's
    peak reaches 0.5. ``volume``: a calibrated volume block (None: none)."""

    name = "bright-grounding"

    def __init__(self, volume: dict | None = None) -> None:
        if volume is not None:
            self.volume = volume

    def encode_text(self, texts):
        return np.ones((len(texts), 2), np.float32) / np.sqrt(2)

    def encode_images(self, images):
        return np.ones((len(images), 2), np.float32) / np.sqrt(2)

    def similarity_map(self, embedding: ImageEmbedding, text: str) -> np.ndarray:
        return np.asarray(embedding.features[0, 0], np.float32)

    def region_scores(self, embedding, masks, texts):
        raise NotImplementedError

    def presence_score(self, embedding: ImageEmbedding, text: str) -> float:
        return float(embedding.features.max())

    def threshold_for(self, text: str) -> float:
        return 0.5

    def is_present(self, embedding: ImageEmbedding, text: str) -> bool:
        return self.presence_score(embedding, text) >= self.threshold_for(text)

    def reach(self, embedding: ImageEmbedding, text: str, point: str = "recall") -> ConceptMatch:
        """The prompt as its own concept, scored on this image (presence and threshold)."""
        return ConceptMatch(text, text, 1.0, text, text,
                            presence=self.presence_score(embedding, text),
                            threshold=self.threshold_for(text), point=point, statistic="map")


CALIBRATED = {"smoothing": 1.0, "hold": 0.0, "reach": 2, "margin": 0.1, "cleanup": True,
              "min_component": 0.0}


def write_example(root: Path) -> Path:
    """The example volume set: ``images/phantom.nii.gz``, ``masks/phantom.nii.gz`` (the
    object) with voxels of :data:`SPACING_MM`, and ``meta.csv``."""
    import nibabel as nib

    from clipsam.io.nifti import slices_to_nifti

    root = Path(root)
    affine = np.diag([SPACING_MM[2], SPACING_MM[1], SPACING_MM[0], 1.0])
    for folder, data in (("images", volume_pixels()), ("masks", object_mask().astype(np.uint8))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        image = nib.Nifti1Image(slices_to_nifti(data), affine)
        image.header.set_xyzt_units("mm")
        nib.save(image, root / folder / "phantom.nii.gz")
    (root / "meta.csv").write_text("id,subject\nphantom,phantom\n")
    return root


class MarginGrounding(BrightGrounding):
    """:class:`BrightGrounding` whose boxes grow by a quarter per side, so each slice's own box
    holds its whole square; calibrated like :data:`CALIBRATED`."""

    def __init__(self, volume: dict | None = CALIBRATED) -> None:
        super().__init__(volume)

    def box_margin_for(self, text):
        return 0.25


def bright_segmenter(config=None):
    """A :class:`clipsam.api.Segmenter` of ``config`` (any) on the fake models (picklable, for
    the CLI and Ray tests)."""
    segmenter = BrightSegmenter()
    return Segmenter(config, pipeline=MedClipSamPipeline(segmenter, MarginGrounding()),
                     encoder=segmenter)
