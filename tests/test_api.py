"""The Python API: results, one cached embedding per image, options, volumes and errors.

``FakeEncoder``/``FakePipeline`` stand in for the real models (they are reused by the CLI, server
and Ray tests): the pipeline thresholds the image at its mean ("bright ..." prompts) or below it
("dark ..." prompts) and reports "absent ..." prompts as not found.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import clipsam
from clipsam.api import Segmenter, load_planes, run_config
from clipsam.config import RunConfig
from clipsam.errors import InputError
from clipsam.io.image import MedicalImage
from clipsam.io.masks import read_mask
from clipsam.models.segmenter import Geometry, ImageEmbedding
from clipsam.pipelines.base import PipelineResult
from clipsam.postprocess.boxes import mask_to_box


def gray(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2) if image.ndim == 3 else image.astype(float)


class FakeEncoder:
    name = "fake-encoder"
    supports_points = False

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.calls += 1
        h, w = image.shape[:2]
        scale = 64 / max(h, w)
        geometry = Geometry((h, w), (round(h * scale), round(w * scale)), 64)
        return ImageEmbedding(np.full((1, 1, 4, 4), gray(image).mean(), np.float32),
                              geometry, self.name)


class FakePipeline:
    name = "fake"

    def __init__(self) -> None:
        self.seen: list[ImageEmbedding | None] = []

    def run(self, image, prompt, embedding=None, keep_intermediates=False):
        self.seen.append(embedding)
        values = gray(np.asarray(image))
        level = float(embedding.features.mean()) if embedding is not None else values.mean()
        mask = values < level if prompt.startswith("dark") else values > level
        if prompt.startswith("absent"):
            mask = np.zeros_like(mask)
        box = mask_to_box(mask)
        boxes = np.zeros((0, 4), np.float32) if box is None else box[None]
        extra = {"saliency": values / max(values.max(), 1)} if keep_intermediates else {}
        return PipelineResult(mask=mask, found=bool(mask.any()), boxes=boxes,
                                  scores=np.ones(len(boxes), np.float32), prompt=prompt,
                                  method=self.name, timings={"decode": 0.001},
                                  intermediates=extra)


def fake_segmenter(config: RunConfig | None = None) -> Segmenter:
    return Segmenter(config, pipeline=FakePipeline(), encoder=FakeEncoder())


def sample_image(h: int = 40, w: int = 60) -> np.ndarray:
    image = np.zeros((h, w), np.uint8)
    image[10:25, 20:45] = 200
    return image


def test_prompts_share_one_embedding_and_get_their_own_masks():
    seg = fake_segmenter()
    image = sample_image()
    bright, dark = seg.segment(image, ["bright square", "dark background"])
    assert seg.encoder.calls == 1
    assert seg.pipeline.seen[0] is seg.pipeline.seen[1] is not None
    assert bright.mask.shape == image.shape and bright.mask.dtype == bool
    assert bright.mask.sum() == 15 * 25
    assert np.array_equal(dark.mask, ~bright.mask)
    assert bright.boxes.tolist() == [[20, 10, 45, 25]]
    assert bright.geometry.original_size == (40, 60)
    seg.segment(image, "bright again")
    assert seg.encoder.calls == 1
    seg.segment(image[::-1].copy(), "bright flipped")
    assert seg.encoder.calls == 2


def test_record_is_json_with_provenance():
    result = fake_segmenter().segment(sample_image(), "absent thing")[0]
    record = json.loads(json.dumps(result.to_record()))
    assert record["found"] is False and record["mask_pixels"] == 0
    assert record["provenance"]["segmenter"] == "fake-encoder"
    assert "numpy" in record["provenance"]["versions"]
    assert record["provenance"]["config"]["method"] == "medclipsam"
    assert set(record["provenance"]["timings"]) >= {"encode", "decode", "total"}


def test_volume_is_segmented_slice_by_slice():
    pixels = np.stack([sample_image(), np.zeros((40, 60), np.uint8), sample_image()])
    volume = MedicalImage(pixels, None, "nifti", is_volume=True)
    result = fake_segmenter().segment(volume, "bright")[0]
    assert result.mask.shape == (3, 40, 60)
    assert result.found and not result.mask[1].any()
    assert result.boxes.shape == (2, 5) and result.boxes[:, 0].tolist() == [0, 2]


def test_intermediates_kept_only_when_asked():
    assert not fake_segmenter().segment(sample_image(), "bright")[0].intermediates
    kept = fake_segmenter(RunConfig(keep_intermediates=True)).segment(sample_image(), "bright")
    assert "saliency" in kept[0].intermediates


def test_bad_inputs_raise_input_error():
    seg = fake_segmenter()
    with pytest.raises(InputError, match="prompt"):
        seg.segment(sample_image(), "   ")
    with pytest.raises(InputError, match="no prompt"):
        seg.segment(sample_image(), [])
    with pytest.raises(InputError, match="shape"):
        load_planes(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="shape"):
        load_planes(np.zeros((0, 5)))


def test_run_config_routes_options():
    config = run_config("salip", runtime="onnx", top_k=2, keep_intermediates=True)
    assert config.method == "salip" and config.models.runtime == "onnx"
    assert config.salip.top_k == 2 and config.keep_intermediates
    with pytest.raises(InputError, match="unknown option 'top_k'"):
        run_config("medclipsam", top_k=2)


def test_package_exports_are_lazy():
    assert clipsam.Segmenter is Segmenter
    assert callable(clipsam.segment)


@pytest.mark.slow
def test_real_models_through_the_registry(shared_data):
    hc18 = shared_data / "hc18"
    image = sorted((hc18 / "images").glob("*.png"))[0]
    result = clipsam.segment(image, "fetal head", method="whole-box", runtime="onnx")
    reference = read_mask(hc18 / "masks" / image.name)
    assert result.mask.shape == reference.shape and result.found
    assert result.provenance["segmenter"] == "litemedsam"
    assert result.provenance["runtime"] == "onnx"
    assert result.provenance["timings"]["encode"] > 0
