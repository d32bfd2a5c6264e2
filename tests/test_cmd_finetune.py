"""``clipsam finetune`` end to end on tiny sets, from segmentation folders and a caption table.

A stand-in segmenter gives embeddings whose features mark the bright target, so the heads have
something real to learn and the test stays fast."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clipsam.apps import cli
from clipsam.models.grounding import load_grounding_model
from clipsam.models.segmenter import Geometry, ImageEmbedding


class BrightFeatureSegmenter:
    name = "bright-features"
    supports_points = False

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        h, w = image.shape[:2]
        scale = 256 / max(h, w)
        geometry = Geometry((h, w), (round(h * scale), round(w * scale)), 256)
        small = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize(
            (geometry.resized_size[1] // 4, geometry.resized_size[0] // 4)), np.float32) / 255
        grid = np.zeros((64, 64), np.float32)
        grid[:small.shape[0], :small.shape[1]] = small
        rng = np.random.default_rng(0)
        features = rng.normal(0, 0.1, (1, 256, 64, 64)).astype(np.float32)
        features[0, :32] += grid * 2
        return ImageEmbedding(features, geometry, self.name)


def make_set(root, count: int = 6):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    for index in range(count):
        cy, cx = rng.uniform(20, 44, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 100
        Image.fromarray(np.where(disc, 220, 40).astype(np.uint8)).save(
            root / "images" / f"{index}.png")
        Image.fromarray(disc.astype(np.uint8) * 255).save(root / "masks" / f"{index}.png")
    return root


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    monkeypatch.setattr("clipsam.models.sam.load_litemedsam",
                        lambda *a, **k: BrightFeatureSegmenter())
    return tmp_path / "cache"


def test_finetune_from_segmentation_sets_writes_a_loadable_model(tmp_path, stand_in):
    data = make_set(tmp_path / "discs")
    out = tmp_path / "model"
    code = cli.main(["-q", "finetune", "--data", str(data), "--prompt", "bright disc",
                     "--out", str(out), "--epochs", "2", "--cache", str(stand_in)])
    assert code == 0
    model = load_grounding_model(out)
    embedding = BrightFeatureSegmenter().encode(
        np.asarray(Image.open(data / "images" / "0.png")))
    probability = model.similarity_map(embedding, "bright disc")
    mask = np.asarray(Image.open(data / "masks" / "0.png")) > 0
    cells = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((16, 16))) > 0
    # the map is higher on the disc than off it
    assert probability[:16, :16][cells].mean() > probability[:16, :16][~cells].mean()


def test_finetune_from_a_caption_table(tmp_path, stand_in):
    data = make_set(tmp_path / "discs", count=4)
    table = tmp_path / "captions.tsv"
    lines = ["filepath\ttitle"] + [f"{data / 'images' / f'{i}.png'}\ta bright disc on dark"
                                   for i in range(4)]
    table.write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    code = cli.main(["-q", "finetune", "--captions", str(table), "--csv-separator", "\t",
                     "--out", str(out), "--epochs", "1", "--cache", str(stand_in)])
    assert code == 0
    assert (out / "heads.safetensors").is_file() and (out / "config.json").is_file()


def test_finetune_needs_a_prompt_for_an_unknown_set(tmp_path, stand_in, capsys):
    data = make_set(tmp_path / "unknown_set", count=2)
    code = cli.main(["-q", "finetune", "--data", str(data), "--out", str(tmp_path / "m"),
                     "--cache", str(stand_in)])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "unknown_set" in error and "give --prompt" in error and "\n" not in error
