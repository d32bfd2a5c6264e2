"""Tiny random checkpoints in the exact upstream layouts, and the loaders' tests on them.

Other test files import the ``write_tiny_*`` helpers from here.
"""

from __future__ import annotations

import json
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel

from clipsam.errors import InputError, WeightsError
from clipsam.models.clip import (
    BiomedClip,
    OpenAIClip,
    load_image_text_model,
)
from clipsam.models.image_text import ImageTextModel, SaliencyCapable

WORDS = ["lung", "lungs", "tumour", "head", "fetal", "polyp", "a", "the", "of", "photo", "x"]


def write_clip_bpe(folder: Path) -> int:
    """CLIP's byte-level BPE files (vocab.json, merges.txt) with a handful of merges."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    merges = ["#version: 0.2", "l u", "n g</w>", "lu ng</w>", "t h", "th e</w>"]
    for token in ("lu", "ng</w>", "lung</w>", "th", "the</w>", "<|startoftext|>",
                  "<|endoftext|>"):
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def write_tiny_openai_clip(folder: Path, image_size: int = 32, patch: int = 8,
                           layers: int = 3, seed: int = 0) -> Path:
    """A tiny ``openai/clip-vit-*`` folder: config.json, model.safetensors, vocab, merges."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_clip_bpe(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, bos_token_id=vocab_size - 2,
                         eos_token_id=2, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=2, image_size=image_size, patch_size=patch),
        projection_dim=16,
    )
    config.architectures = ["CLIPModel"]
    torch.manual_seed(seed)
    model = CLIPModel(config)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # the hub files still carry the position_ids buffers of older transformers versions
    tokens = (image_size // patch) ** 2 + 1
    state["vision_model.embeddings.position_ids"] = torch.arange(tokens)[None]
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(str(folder / "config.json"))
    return folder


def tiny_biomedclip_state(width: int = 128, depth: int = 2, patch: int = 16, image_size: int = 64,
                          text_width: int = 128, text_depth: int = 2, vocab: int = 16,
                          embed_dim: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the upstream open_clip BiomedCLIP key names and layout."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def norm(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return {prefix + "weight": 1 + rnd(dim), prefix + "bias": rnd(dim)}

    def linear(prefix: str, out: int, inp: int) -> dict[str, torch.Tensor]:
        return {prefix + "weight": rnd(out, inp, scale=inp ** -0.5), prefix + "bias": rnd(out)}

    grid = image_size // patch
    s = {"visual.trunk.cls_token": rnd(1, 1, width, scale=0.5),
         "visual.trunk.pos_embed": rnd(1, grid * grid + 1, width, scale=0.5),
         "visual.trunk.patch_embed.proj.weight": rnd(width, 3, patch, patch, scale=0.05),
         "visual.trunk.patch_embed.proj.bias": rnd(width)}
    for i in range(depth):
        b = f"visual.trunk.blocks.{i}."
        s |= norm(b + "norm1.", width) | norm(b + "norm2.", width)
        s |= linear(b + "attn.qkv.", 3 * width, width) | linear(b + "attn.proj.", width, width)
        s |= linear(b + "mlp.fc1.", 4 * width, width) | linear(b + "mlp.fc2.", width, 4 * width)
    s |= norm("visual.trunk.norm.", width)
    s["visual.head.proj.weight"] = rnd(embed_dim, width, scale=width ** -0.5)
    t = "text.transformer."
    s[t + "embeddings.word_embeddings.weight"] = rnd(vocab, text_width, scale=0.5)
    s[t + "embeddings.position_embeddings.weight"] = rnd(40, text_width, scale=0.5)
    s[t + "embeddings.token_type_embeddings.weight"] = rnd(2, text_width, scale=0.5)
    s |= norm(t + "embeddings.LayerNorm.", text_width)
    s[t + "embeddings.position_ids"] = torch.arange(40)[None]
    for i in range(text_depth):
        b = f"{t}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            s |= linear(f"{b}attention.self.{name}.", text_width, text_width)
        s |= linear(b + "attention.output.dense.", text_width, text_width)
        s |= norm(b + "attention.output.LayerNorm.", text_width)
        s |= linear(b + "intermediate.dense.", 4 * text_width, text_width)
        s |= linear(b + "output.dense.", text_width, 4 * text_width)
        s |= norm(b + "output.LayerNorm.", text_width)
    hidden = (text_width + embed_dim) // 2
    s["text.proj.0.weight"] = rnd(hidden, text_width, scale=text_width ** -0.5)
    s["text.proj.2.weight"] = rnd(embed_dim, hidden, scale=hidden ** -0.5)
    s["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return s


def write_tiny_biomedclip(folder: Path, seed: int = 0, **sizes: int) -> Path:
    """A tiny BiomedCLIP folder: open_clip_pytorch_model.bin, open_clip_config.json, vocab.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    state = tiny_biomedclip_state(seed=seed, **sizes)
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    config = {
        "model_cfg": {
            "embed_dim": state["visual.head.proj.weight"].shape[0],
            "vision_cfg": {"timm_model_name": "vit_base_patch16_224",
                           "timm_model_pretrained": False, "timm_pool": "",
                           "timm_proj": "linear", "image_size": sizes.get("image_size", 64)},
            "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                         "hf_tokenizer_name":
                             "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                         "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                         "context_length": 256},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPSAM_WEIGHTS_DIR", raising=False)

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    return tmp_path


@pytest.fixture
def tiny_clip(isolated) -> OpenAIClip:
    write_tiny_openai_clip(isolated / "weights" / "clip-vit-base-patch32")
    return load_image_text_model("clip-vit-b32", weights_dir=isolated / "weights")


@pytest.fixture
def tiny_biomed(isolated) -> BiomedClip:
    write_tiny_biomedclip(isolated / "w" / "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    return load_image_text_model("biomedclip", weights_dir=isolated / "w")


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 30), dtype=np.uint8),
            rng.integers(0, 256, (3, 50, 3), dtype=np.uint8),
            rng.random((17, 17)).astype(np.float32),
            rng.integers(0, 4000, (20, 64), dtype=np.uint16),
            rng.integers(0, 256, (25, 25, 1), dtype=np.uint8)]


@pytest.mark.parametrize("fixture", ["tiny_clip", "tiny_biomed"])
def test_backend_encodes_unit_vectors_for_any_image(fixture, request):
    model = request.getfixturevalue(fixture)
    assert isinstance(model, ImageTextModel) and isinstance(model, SaliencyCapable)
    emb = model.encode_images(images())
    text = model.encode_text(["the lung", "fetal head of a photo"])
    assert emb.shape == (5, 16) and text.shape == (2, 16)
    assert emb.dtype == np.float32 and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert not np.allclose(emb[0], emb[1]) and not np.allclose(text[0], text[1])
    one = model.encode_images(images()[:1])
    np.testing.assert_allclose(one[0], emb[0], atol=1e-5)  # batching does not change a result


@pytest.mark.parametrize("fixture", ["tiny_clip", "tiny_biomed"])
def test_text_embedding_does_not_depend_on_padding(fixture, request):
    model = request.getfixturevalue(fixture)
    alone = model.encode_text(["lung"])
    batched = model.encode_text(["lung", "the fetal head of a photo of the lungs"])
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)


@pytest.mark.parametrize("fixture", ["tiny_clip", "tiny_biomed"])
def test_hook_replaces_block_output(fixture, request):
    model = request.getfixturevalue(fixture)
    pixels = model.preprocess(images()[0])
    size = pixels.shape[-1]
    h, w = model.patch_grid
    assert h * model.patch_size == size
    seen = []

    def identity(hidden):
        seen.append(hidden.shape)
        return hidden

    plain = model.image_features(pixels)
    same = model.image_features(pixels, layer=model.num_layers - 2, hook=identity)
    torch.testing.assert_close(plain, same)
    assert seen[0][:2] == (1, 1 + h * w)
    changed = model.image_features(pixels, layer=0, hook=lambda x: torch.zeros_like(x))
    assert not torch.allclose(plain, changed)
    assert torch.allclose(model.image_features(pixels), plain)  # the hook was removed
    with pytest.raises(InputError):
        model.image_features(pixels, layer=model.num_layers, hook=identity)


def test_openai_clip_matches_transformers_reference(tiny_clip, isolated):
    """Our embeddings equal CLIPModel's own feature functions on the same inputs."""
    reference = CLIPModel.from_pretrained(isolated / "weights" / "clip-vit-base-patch32").eval()
    pixels = tiny_clip.preprocess(images()[1])
    tokens = tiny_clip.tokenizer(["the lung"], return_tensors="pt")
    with torch.no_grad():
        ref_image = reference.visual_projection(reference.vision_model(pixels).pooler_output)
        ref_text = reference.text_projection(reference.text_model(**tokens).pooler_output)
    torch.testing.assert_close(tiny_clip.image_features(pixels), F.normalize(ref_image, dim=-1))
    torch.testing.assert_close(tiny_clip.text_features(["the lung"]), F.normalize(ref_text, dim=-1))
    assert tiny_clip.transform.size == 32 and tiny_clip.num_layers == 3


def test_missing_weights_offline_names_file_source_and_place(isolated):
    with pytest.raises(WeightsError) as info:
        load_image_text_model("clip-vit-l14", weights_dir=isolated / "nowhere")
    message = str(info.value)
    assert "clip-vit-large-patch14/" in message and "huggingface.co/openai/" in message
    assert str(isolated / "nowhere") in message and "\n" not in message
    with pytest.raises(WeightsError, match="BiomedCLIP"):
        load_image_text_model("biomedclip")


def test_weights_dir_may_be_the_model_folder_itself(isolated):
    folder = write_tiny_openai_clip(isolated / "any-name")
    model = load_image_text_model("clip-vit-b16", weights_dir=folder)
    assert model.name == "clip-vit-b16"


def test_unknown_model_name(isolated):
    with pytest.raises(InputError, match="clip-vit-b32"):
        load_image_text_model("clip-vit-h99")


def test_openai_clip_missing_key_is_a_weights_error(isolated):
    folder = write_tiny_openai_clip(isolated / "clip")
    state = load_file(str(folder / "model.safetensors"))
    del state["vision_model.post_layernorm.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="post_layernorm"):
        OpenAIClip.from_folder(folder, "clip")


@pytest.mark.parametrize("fixture", ["tiny_clip", "tiny_biomed"])
def test_save_writes_the_upstream_layout_and_reloads(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    with torch.no_grad():  # make the saved model differ from the source files
        for param in model.vision_blocks[-1].parameters():
            param.add_(0.01)
    out = model.save(tmp_path / "saved")
    again = type(model).from_folder(out, model.name)
    np.testing.assert_allclose(again.encode_images(images()[:2]), model.encode_images(images()[:2]),
                               atol=1e-6)
    np.testing.assert_allclose(again.encode_text(["lung"]), model.encode_text(["lung"]), atol=1e-6)
    if isinstance(model, BiomedClip):
        saved = torch.load(out / "open_clip_pytorch_model.bin", weights_only=True)
        source = torch.load(model.folder / "open_clip_pytorch_model.bin", weights_only=True)
        assert set(saved) == set(source) - {"text.transformer.embeddings.position_ids"}
        torch.testing.assert_close(saved["text.proj.2.weight"], source["text.proj.2.weight"])
    else:
        assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= {
            p.name for p in out.iterdir()}
        assert "vision_model.post_layernorm.weight" in load_file(str(out / "model.safetensors"))


def timm_block(x: torch.Tensor, s: dict[str, torch.Tensor], prefix: str, heads: int):
    """A timm ViT block written directly from the upstream weights (fused qkv)."""
    b, n, c = x.shape
    y = F.layer_norm(x, (c,), s[prefix + "norm1.weight"], s[prefix + "norm1.bias"], eps=1e-6)
    qkv = F.linear(y, s[prefix + "attn.qkv.weight"], s[prefix + "attn.qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // heads), dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(b, n, c)
    x = x + F.linear(y, s[prefix + "attn.proj.weight"], s[prefix + "attn.proj.bias"])
    y = F.layer_norm(x, (c,), s[prefix + "norm2.weight"], s[prefix + "norm2.bias"], eps=1e-6)
    y = F.gelu(F.linear(y, s[prefix + "mlp.fc1.weight"], s[prefix + "mlp.fc1.bias"]))
    return x + F.linear(y, s[prefix + "mlp.fc2.weight"], s[prefix + "mlp.fc2.bias"])


def test_biomedclip_mapping_matches_timm_reference(tiny_biomed):
    state = torch.load(tiny_biomed.folder / "open_clip_pytorch_model.bin", weights_only=True)
    x = torch.randn(2, 17, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        block = tiny_biomed.vision_blocks[1](x)
        block = block[0] if isinstance(block, tuple) else block
    torch.testing.assert_close(block, timm_block(x, state, "visual.trunk.blocks.1.", heads=2),
                               atol=1e-5, rtol=1e-4)

    pixels = tiny_biomed.preprocess(images()[0])
    t = "visual.trunk."
    tokens = F.conv2d(pixels, state[t + "patch_embed.proj.weight"],
                      state[t + "patch_embed.proj.bias"], stride=16).flatten(2).transpose(1, 2)
    h = torch.cat([state[t + "cls_token"], tokens], dim=1) + state[t + "pos_embed"]
    for i in range(2):
        h = timm_block(h, state, f"{t}blocks.{i}.", heads=2)
    h = F.layer_norm(h, (128,), state[t + "norm.weight"], state[t + "norm.bias"], eps=1e-6)
    reference = F.normalize(h[:, 0] @ state["visual.head.proj.weight"].T, dim=-1)
    torch.testing.assert_close(tiny_biomed.image_features(pixels), reference,
                               atol=1e-5, rtol=1e-4)
    assert tiny_biomed.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)


def test_biomedclip_unexpected_or_missing_key_is_a_weights_error(isolated):
    folder = write_tiny_biomedclip(isolated / "bm")
    state = torch.load(folder / "open_clip_pytorch_model.bin", weights_only=True)
    state["visual.trunk.blocks.0.ls1.gamma"] = torch.ones(128)
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    with pytest.raises(WeightsError, match="ls1"):
        BiomedClip.from_folder(folder)
    del state["visual.trunk.blocks.0.ls1.gamma"], state["text.proj.2.weight"]
    torch.save(state, folder / "open_clip_pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"missing text.proj.2"):
        BiomedClip.from_folder(folder)
