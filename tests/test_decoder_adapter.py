"""The decoder adapter: it learns what box prompts cannot say, starts as box prompts, is saved
tied to its decoder, and is a mask source of the MedCLIP-SAM pipeline chosen per concept."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from clipsam.errors import WeightsError
from clipsam.models.sam.architecture import SamArchitecture, ViTConfig
from clipsam.models.sam.model import SamModel
from clipsam.models.sam.prompt_adapter import (
    AdaptedDecoder,
    AdapterConfig,
    PromptAdapter,
    load_adapted_decoder,
    save_adapter,
)
from clipsam.train.decoder_adapter import AdapterCase, AdapterTraining, train_adapter

DIM, TEXT, GRID, INPUT = 32, 8, 16, 128
TINY = SamArchitecture(
    ViTConfig(img_size=INPUT, patch_size=INPUT // GRID, embed_dim=16, depth=1, num_heads=2,
              global_attn_indexes=(0,), window_size=4, out_chans=DIM),
    normalisation="minmax", multimask=False, supports_points=True, prompt_dim=DIM,
    mask_in_chans=8, decoder_heads=2, decoder_mlp_dim=64, iou_head_hidden=32)
WHOLE_BOX = np.array([[[0.0, 0.0], [INPUT - 1.0, INPUT - 1.0]]], np.float32)
BOX_LABELS = np.array([[2.0, 3.0]], np.float32)


def tiny_decoder(seed: int = 0) -> AdaptedDecoder:
    torch.manual_seed(seed)
    adapter = PromptAdapter(AdapterConfig(feature_dim=DIM, text_dim=TEXT, reduced=8, hidden=16))
    return AdaptedDecoder(SamModel(TINY), adapter, "tiny")


def square_case(rng: np.random.Generator, direction: np.ndarray, text: np.ndarray) -> AdapterCase:
    """Noise features with a bright square along ``direction``; the box covers the whole image
    and the map is flat, so only the features tell where the square is."""
    size = int(rng.integers(4, 8))
    y, x = rng.integers(0, GRID - size, size=2)
    square = np.zeros((GRID, GRID), bool)
    square[y:y + size, x:x + size] = True
    features = 0.5 * rng.standard_normal((1, DIM, GRID, GRID)).astype(np.float32)
    features[0] += 2.0 * direction[:, None, None] * square
    target = np.kron(square, np.ones((4, 4), bool))
    return AdapterCase("square", features, np.zeros((GRID, GRID), np.float32), text,
                       WHOLE_BOX, BOX_LABELS, target, np.ones_like(target), "s")


def test_adapter_learns_a_bright_square_the_box_cannot_say():
    rng = np.random.default_rng(0)
    direction = rng.standard_normal(DIM).astype(np.float32)
    direction /= np.linalg.norm(direction)
    text = rng.standard_normal(TEXT).astype(np.float32)
    train = [square_case(rng, direction, text) for _ in range(16)]
    held_out = [square_case(rng, direction, text) for _ in range(6)]
    decoder = tiny_decoder()
    record = train_adapter(decoder, train, held_out,
                           AdapterTraining(steps=240, learning_rate=1e-2, max_seconds=120),
                           log=lambda _: None)
    before = record["validation_dice_box_prompts"]["all"]
    after = record["validation_dice_adapter"]["all"]
    assert after > 0.8 and after > before + 0.3, record
    assert record["curve"][-1]["loss"] < record["curve"][0]["loss"]
    assert record["warnings"] == []


def test_untrained_adapter_decodes_as_box_prompts_and_warns():
    """Zero output layers: exactly the decoder's box answer; a run that cannot learn (zero
    learning rate) says so in its record."""
    decoder = tiny_decoder()
    rng = np.random.default_rng(1)
    features = torch.from_numpy(rng.standard_normal((1, DIM, GRID, GRID)).astype(np.float32))
    coords, labels = torch.from_numpy(WHOLE_BOX), torch.from_numpy(BOX_LABELS)
    adapted, _ = decoder.logits(features, coords, labels, torch.zeros(GRID, GRID),
                                torch.ones(TEXT))
    with torch.no_grad():
        plain, _ = decoder.model.decode(features, coords, labels)
    torch.testing.assert_close(adapted, plain[:, 0])
    case = square_case(rng, np.ones(DIM, np.float32) / np.sqrt(DIM), np.ones(TEXT, np.float32))
    record = train_adapter(decoder, [case], [case], AdapterTraining(steps=3, learning_rate=0.0),
                           log=lambda _: None)
    assert any("did not learn" in w for w in record["warnings"])


def test_adapter_saved_with_its_decoder_hash(tmp_path):
    decoder = tiny_decoder()
    with torch.no_grad():
        decoder.adapter.dense_out.bias.fill_(0.5)
    save_adapter(tmp_path, decoder, "abc", {"steps": 1})
    loaded = load_adapted_decoder(tmp_path, SamModel(TINY), "abc", "tiny")
    assert torch.equal(loaded.adapter.dense_out.bias, decoder.adapter.dense_out.bias)
    assert loaded.record == {"steps": 1}
    with pytest.raises(WeightsError, match="another"):
        load_adapted_decoder(tmp_path, SamModel(TINY), "other", "tiny")
    config = json.loads((tmp_path / "decoder_adapter.json").read_text())
    assert config["adapter"]["text_dim"] == TEXT


def test_decoder_source_needs_an_adapter_file(tmp_path):
    from clipsam.models.grounding.model import builtin_model_dir, load_grounding_model

    folder = tmp_path / "model"
    shutil.copytree(builtin_model_dir(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["mask_sources"]["polyp"] = "decoder"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="decoder_adapter"):
        load_grounding_model(folder)


def test_pipeline_decodes_a_concept_through_its_adapter(tmp_path, shared_data, litemedsam):
    """A concept whose calibrated source is ``decoder`` is decoded by the adapter and says so
    in its decisions; an untrained adapter gives the box route's mask, a changed one another;
    other concepts keep their source."""
    from clipsam.config import MedClipSamConfig
    from clipsam.eval.metrics import dice
    from clipsam.io.image import segmenter_input
    from clipsam.io.labelled_sets import list_samples
    from clipsam.io.read import read_image
    from clipsam.models.grounding.model import (
        builtin_model_dir,
        load_grounding_model,
        save_mask_sources,
    )
    from clipsam.models.sam.checkpoints import load_model
    from clipsam.models.sam.factory import LITEMEDSAM, segmenter_checkpoint
    from clipsam.models.weights import sha256_of
    from clipsam.pipelines.medclipsam import MedClipSamPipeline

    folder = tmp_path / "model"
    shutil.copytree(builtin_model_dir(), folder)
    base = load_grounding_model(folder)
    checkpoint = segmenter_checkpoint("litemedsam")
    decoder = AdaptedDecoder(
        load_model(LITEMEDSAM, checkpoint),
        PromptAdapter(AdapterConfig(text_dim=len(base.text_vector("polyp")))), "litemedsam")
    save_adapter(folder, decoder, sha256_of(checkpoint), {})
    save_mask_sources(folder, {**base.mask_sources, "polyp": "decoder"}, {"test": True})
    model = load_grounding_model(folder, segmenter=litemedsam)
    sample = sorted(list_samples(shared_data / "kvasir_polyp"), key=lambda s: s.image_id)[0]
    image = segmenter_input(read_image(sample.image_path))
    embedding = litemedsam.encode(image)
    routed = MedClipSamPipeline(litemedsam, model).run(image, "polyp", embedding=embedding)
    boxed = MedClipSamPipeline(litemedsam, model, MedClipSamConfig(mask_source="segmenter")).run(
        image, "polyp", embedding=embedding)
    assert routed.decisions["mask_source"] == "decoder"
    assert boxed.decisions["mask_source"] == "segmenter"
    assert routed.mask.any() and dice(routed.mask, boxed.mask) > 0.98
    with torch.no_grad():
        decoder.adapter.corner[2].bias.normal_(0.0, 3.0,
                                               generator=torch.Generator().manual_seed(0))
    save_adapter(folder, decoder, sha256_of(checkpoint), {})
    changed = MedClipSamPipeline(litemedsam, model).run(image, "polyp", embedding=embedding)
    assert not np.array_equal(changed.mask, routed.mask)
    other = MedClipSamPipeline(litemedsam, model).run(image, "fetal head", embedding=embedding)
    assert other.decisions.get("mask_source") in (None, "segmenter")


def test_exported_graph_decodes_as_the_torch_adapter(tmp_path, monkeypatch):
    """The ONNX graph the pipeline runs gives the torch adapter's logits, for any box count;
    its optimised form goes to the user cache, the model folder is only read (it may be a
    read-only install)."""
    from clipsam.models.sam.adapter_runtime import OnnxAdaptedDecoder
    from clipsam.models.segmenter import Geometry, ImageEmbedding

    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache"))
    decoder = tiny_decoder()
    with torch.no_grad():
        for parameter in decoder.adapter.parameters():
            parameter.normal_(0.0, 0.2)
    folder = tmp_path / "model"
    save_adapter(folder, decoder, "abc", {})
    written = sorted(p.name for p in folder.iterdir())
    onnx = OnnxAdaptedDecoder(folder, "tiny", {})
    assert sorted(p.name for p in folder.iterdir()) == written
    assert len(list((tmp_path / "cache" / "ort").glob("*.ort-*.onnx"))) == 1
    rng = np.random.default_rng(2)
    features = rng.standard_normal((1, DIM, GRID, GRID)).astype(np.float32)
    logits = rng.standard_normal((GRID, GRID)).astype(np.float32)
    text = rng.standard_normal(TEXT).astype(np.float32)
    boxes = np.array([[0, 0, 60, 60], [20, 30, 120, 100], [5, 5, 20, 40]], np.float32)
    geometry = Geometry((INPUT, INPUT), (INPUT, INPUT), INPUT)
    prediction = onnx.predict(ImageEmbedding(features, geometry, "tiny"), boxes, logits, text)
    coords = torch.from_numpy(boxes.reshape(3, 2, 2))
    with torch.no_grad():
        expected, iou = decoder.logits(torch.from_numpy(features), coords,
                                       torch.from_numpy(np.tile(BOX_LABELS, (3, 1))),
                                       torch.from_numpy(logits), torch.from_numpy(text))
    np.testing.assert_allclose(prediction.low_res_logits, expected.numpy(), atol=1e-3)
    np.testing.assert_allclose(prediction.scores, iou.numpy(), atol=1e-4)
