"""BiomedCLIP (Zhang et al. 2023, arXiv:2303.00915) from its open_clip checkpoint, no open_clip.

Upstream files: ``open_clip_pytorch_model.bin`` (image tower: a timm ViT-B/16-224 under
``visual.trunk.*`` with a bias-free linear head ``visual.head.proj``; text tower: PubMedBERT
under ``text.transformer.*`` with a two-layer GELU projection ``text.proj.{0,2}``, CLS pooling;
``logit_scale``), ``open_clip_config.json`` and the PubMedBERT ``vocab.txt``. The timm ViT is
mapped onto ``transformers.ViTModel`` (the fused ``qkv`` projection split into query, key and
value) and PubMedBERT onto ``transformers.BertModel``; sizes are read from the weights.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTModel

from clipsam.errors import WeightsError
from clipsam.models.clip.backend import ClipBackend
from clipsam.models.clip.openai_clip import first_line
from clipsam.models.clip.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ClipPreprocess
from clipsam.models.clip.sources import BIOMEDCLIP, resolve_folder

WEIGHTS_FILE = "open_clip_pytorch_model.bin"
CONFIG_FILE = "open_clip_config.json"
VOCAB_FILE = "vocab.txt"
HEAD_DIM = 64  # every timm ViT and BERT size uses 64-wide attention heads
TRUNK, TEXT = "visual.trunk.", "text.transformer."
IGNORED_BUFFERS = ("position_ids", "token_type_ids")

# timm block parameter -> the same parameter in transformers' ViTLayer (v5 names, then v4).
_VIT_BLOCK_NAMES = {
    "norm1": ("layernorm_before",),
    "norm2": ("layernorm_after",),
    "attn.proj": ("attention.o_proj", "attention.output.dense"),
    "mlp.fc1": ("mlp.fc1", "intermediate.dense"),
    "mlp.fc2": ("mlp.fc2", "output.dense"),
    "attn.q": ("attention.q_proj", "attention.attention.query"),
    "attn.k": ("attention.k_proj", "attention.attention.key"),
    "attn.v": ("attention.v_proj", "attention.attention.value"),
}
_VIT_BLOCK_PREFIXES = ("layers.{}.", "encoder.layer.{}.")
_VIT_TOP_NAMES = {
    "cls_token": "embeddings.cls_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}


def _count_blocks(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(pattern, key))}
    return max(found) + 1 if found else 0


def vit_config_from_timm(state: dict[str, torch.Tensor]) -> ViTConfig:
    """A ViTConfig equal to the timm ViT whose ``visual.trunk.*`` weights are in ``state``."""
    width = state[TRUNK + "cls_token"].shape[-1]
    patch = state[TRUNK + "patch_embed.proj.weight"].shape[-1]
    grid = round((state[TRUNK + "pos_embed"].shape[1] - 1) ** 0.5)
    return ViTConfig(
        hidden_size=width,
        num_hidden_layers=_count_blocks(state, r"visual\.trunk\.blocks\.(\d+)\."),
        num_attention_heads=max(1, width // HEAD_DIM),
        intermediate_size=state[TRUNK + "blocks.0.mlp.fc1.weight"].shape[0],
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-6, image_size=grid * patch, patch_size=patch, num_channels=3,
        qkv_bias=TRUNK + "blocks.0.attn.qkv.bias" in state,
    )


def bert_config_from_state(state: dict[str, torch.Tensor]) -> BertConfig:
    """A BertConfig equal to the BERT whose ``text.transformer.*`` weights are in ``state``."""
    vocab, width = state[TEXT + "embeddings.word_embeddings.weight"].shape
    return BertConfig(
        vocab_size=vocab, hidden_size=width,
        num_hidden_layers=_count_blocks(state, r"text\.transformer\.encoder\.layer\.(\d+)\."),
        num_attention_heads=max(1, width // HEAD_DIM),
        intermediate_size=state[TEXT + "encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state[TEXT + "embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state[TEXT + "embeddings.token_type_embeddings.weight"].shape[0],
        hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12, pad_token_id=0,
    )


def timm_to_hf_names(vit: ViTModel, depth: int) -> dict[str, str]:
    """timm trunk key (with ``attn.q``/``attn.k``/``attn.v`` for the fused qkv) -> ViTModel key."""
    target = set(vit.state_dict())
    names = dict(_VIT_TOP_NAMES)
    for i in range(depth):
        for timm_name, candidates in _VIT_BLOCK_NAMES.items():
            for suffix in ("weight", "bias"):
                options = [p.format(i) + c + "." + suffix
                           for p in _VIT_BLOCK_PREFIXES for c in candidates]
                hit = next((o for o in options if o in target), None)
                if hit is not None:
                    names[f"blocks.{i}.{timm_name}.{suffix}"] = hit
    return names


def split_qkv(trunk: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace timm's fused ``attn.qkv`` (rows: all query heads, all key heads, all value
    heads) by separate ``attn.q``, ``attn.k``, ``attn.v`` entries."""
    out = {}
    for key, value in trunk.items():
        if ".attn.qkv." in key:
            for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[key.replace(".attn.qkv.", f".attn.{part}.")] = chunk.clone()
        else:
            out[key] = value
    return out


def fuse_qkv(trunk: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`split_qkv`."""
    out = {key: value for key, value in trunk.items()
           if not re.search(r"\.attn\.[qkv]\.", key)}
    for key in trunk:
        if ".attn.q." in key:
            parts = [trunk[key.replace(".attn.q.", f".attn.{p}.")] for p in "qkv"]
            out[key.replace(".attn.q.", ".attn.qkv.")] = torch.cat(parts, dim=0)
    return out


class BiomedClipNetwork(nn.Module):
    """BiomedCLIP's two towers as transformers modules plus its projections."""

    def __init__(self, vit_config: ViTConfig, bert_config: BertConfig, embed_dim: int,
                 text_proj_hidden: int):
        super().__init__()
        self.vision = ViTModel(vit_config, add_pooling_layer=False)
        self.visual_proj = nn.Linear(vit_config.hidden_size, embed_dim, bias=False)
        self.text = BertModel(bert_config, add_pooling_layer=False)
        self.text_proj = nn.Sequential(
            nn.Linear(bert_config.hidden_size, text_proj_hidden, bias=False), nn.GELU(),
            nn.Linear(text_proj_hidden, embed_dim, bias=False))
        self.logit_scale = nn.Parameter(torch.tensor(0.0))
        self.vit_names = timm_to_hf_names(self.vision, vit_config.num_hidden_layers)

    @classmethod
    def from_open_clip_state(cls, state: dict[str, torch.Tensor]) -> BiomedClipNetwork:
        """Build and fill from upstream keys; unknown, missing or misshapen keys raise."""
        state = {k: v for k, v in state.items() if not k.endswith(IGNORED_BUFFERS)}
        try:
            network = cls(vit_config_from_timm(state), bert_config_from_state(state),
                          embed_dim=state["visual.head.proj.weight"].shape[0],
                          text_proj_hidden=state["text.proj.0.weight"].shape[0])
        except KeyError as exc:
            raise WeightsError(f"not a BiomedCLIP checkpoint: no weight {exc}") from exc
        trunk = split_qkv({k[len(TRUNK):]: v for k, v in state.items() if k.startswith(TRUNK)})
        unknown = sorted(set(trunk) - set(network.vit_names))
        if unknown:
            raise WeightsError(f"BiomedCLIP image tower has unexpected weight {TRUNK}{unknown[0]}")
        mapped = {f"vision.{network.vit_names[k]}": v for k, v in trunk.items()}
        mapped |= {f"text.{k[len(TEXT):]}": v for k, v in state.items() if k.startswith(TEXT)}
        mapped["visual_proj.weight"] = state["visual.head.proj.weight"]
        rest = {k: v for k, v in state.items() if not k.startswith((TRUNK, TEXT, "visual.head."))}
        mapped |= {k.replace("text.proj.", "text_proj."): v for k, v in rest.items()}
        try:
            result = network.load_state_dict(mapped, strict=False)
        except RuntimeError as exc:  # a shape mismatch
            raise WeightsError(f"BiomedCLIP checkpoint does not fit: {first_line(exc)}") from exc
        if result.missing_keys or result.unexpected_keys:
            problems = [f"missing {k}" for k in result.missing_keys]
            problems += [f"unexpected {k}" for k in result.unexpected_keys]
            raise WeightsError(f"BiomedCLIP checkpoint does not fit ({len(problems)} problems, "
                               f"first: {problems[0]})")
        return network

    def open_clip_state(self) -> dict[str, torch.Tensor]:
        """The weights under the upstream open_clip key names (inverse of the loader)."""
        own = {k: v.detach().clone() for k, v in self.state_dict().items()}
        to_timm = {hf: timm for timm, hf in self.vit_names.items()}
        trunk = fuse_qkv({to_timm[k[len("vision."):]]: v for k, v in own.items()
                          if k.startswith("vision.")})
        state = {TRUNK + k: v for k, v in trunk.items()}
        state["visual.head.proj.weight"] = own["visual_proj.weight"]
        state |= {TEXT + k[len("text."):]: v for k, v in own.items() if k.startswith("text.")}
        state |= {k.replace("text_proj.", "text.proj."): v for k, v in own.items()
                  if k.startswith("text_proj.")}
        state["logit_scale"] = own["logit_scale"]
        return state


def clean_text(text: str) -> str:
    """open_clip's HF-tokenizer cleaning: unescape HTML, collapse whitespace."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class BiomedClip(ClipBackend):
    """BiomedCLIP ViT-B/16 + PubMedBERT (context length 256)."""

    def __init__(self, network: BiomedClipNetwork, tokenizer: BertTokenizer, config: dict,
                 folder: Path, name: str = "biomedclip"):
        self.network = network.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.config = config
        self.folder = folder
        self.name = name
        model_cfg = config.get("model_cfg", {})
        preprocess_cfg = config.get("preprocess_cfg", {})
        self.context_length = int(model_cfg.get("text_cfg", {}).get("context_length", 256))
        self.transform = ClipPreprocess(
            size=network.vision.config.image_size,
            mean=tuple(preprocess_cfg.get("mean", OPENAI_CLIP_MEAN)),
            std=tuple(preprocess_cfg.get("std", OPENAI_CLIP_STD)))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], name: str = "biomedclip") -> BiomedClip:
        folder = Path(folder)
        try:
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            tokenizer = BertTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise WeightsError(f"cannot load BiomedCLIP from {folder}: {first_line(exc)}") from exc
        state = state.get("state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        network = BiomedClipNetwork.from_open_clip_state(state)
        embed_dim = config.get("model_cfg", {}).get("embed_dim")
        if embed_dim is not None and embed_dim != network.visual_proj.out_features:
            raise WeightsError(f"{CONFIG_FILE} says embed_dim {embed_dim} but the weights have "
                               f"{network.visual_proj.out_features}")
        return cls(network, tokenizer, config, folder, name)

    @property
    def vision_blocks(self) -> nn.ModuleList:
        vit = self.network.vision
        return vit.layers if hasattr(vit, "layers") else vit.encoder.layer

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.network.text.encoder.layer

    @property
    def head_modules(self) -> list[nn.Module]:
        net = self.network
        return [net.vision.layernorm, net.visual_proj, net.text_proj]

    @property
    def patch_size(self) -> int:
        return int(self.network.vision.config.patch_size)

    @property
    def logit_scale(self) -> float:
        return float(self.network.logit_scale.exp())

    def embed_tokens(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer([clean_text(t) for t in texts], padding=True, truncation=True,
                                max_length=self.context_length, return_tensors="pt")
        ids = tokens["input_ids"].to(self.device)
        mask = (ids != self.network.text.config.pad_token_id).long()
        hidden = self.network.text(input_ids=ids, attention_mask=mask,
                                   token_type_ids=torch.zeros_like(ids)).last_hidden_state
        return self.network.text_proj(hidden[:, 0])

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.network.vision(pixel_values=pixels.to(self.device)).last_hidden_state
        return self.network.visual_proj(hidden[:, 0])

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """``open_clip_pytorch_model.bin`` (upstream keys) + ``open_clip_config.json`` + vocab."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".save-") as tmp:
            torch.save(self.network.open_clip_state(), Path(tmp) / WEIGHTS_FILE)
            (Path(tmp) / CONFIG_FILE).write_text(json.dumps(self.config, indent=2),
                                                 encoding="utf-8")
            shutil.copyfile(self.folder / VOCAB_FILE, Path(tmp) / VOCAB_FILE)
            for item in Path(tmp).iterdir():
                os.replace(item, folder / item.name)
        return folder


def load_biomedclip(
    weights_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> BiomedClip:
    return BiomedClip.from_folder(resolve_folder(BIOMEDCLIP, weights_dir, download))
