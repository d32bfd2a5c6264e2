"""OpenAI CLIP ViTs (Radford et al. 2021) from the Hugging Face ``openai/clip-vit-*`` folders.

The folder holds the upstream ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``),
``vocab.json`` and ``merges.txt``; the towers are ``transformers.CLIPModel``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPModel, CLIPTokenizer
from transformers.utils import logging as hf_logging

from clipsam.errors import WeightsError
from clipsam.models.clip.backend import ClipBackend
from clipsam.models.clip.preprocess import ClipPreprocess
from clipsam.models.clip.sources import ModelFiles, resolve_folder

TOKENIZER_FILES = ("vocab.json", "merges.txt")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


class OpenAIClip(ClipBackend):
    """CLIP ViT-B/32, B/16, L/14 (224 or 336 px) on ``transformers.CLIPModel``."""

    def __init__(self, network: CLIPModel, tokenizer: CLIPTokenizer, name: str, folder: Path):
        self.network = network.float().eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.folder = folder
        self.transform = ClipPreprocess(size=network.config.vision_config.image_size)
        self.context_length = network.config.text_config.max_position_embeddings

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], name: str) -> OpenAIClip:
        """Load an upstream-format folder; any missing or misshapen weight is a WeightsError."""
        folder = Path(folder)
        hf_logging.disable_progress_bar()  # a local load: no bar (as the sentence encoder)
        try:
            network, info = CLIPModel.from_pretrained(folder, local_files_only=True,
                                                      output_loading_info=True)
            tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise WeightsError(f"cannot load CLIP from {folder}: {first_line(exc)}") from exc
        bad = list(info.get("missing_keys", ())) + [str(k[0]) if isinstance(k, tuple) else str(k)
                                                   for k in info.get("mismatched_keys", ())]
        if bad:
            raise WeightsError(f"CLIP checkpoint in {folder} lacks or misshapes "
                               f"{len(bad)} weights (first: {bad[0]})")
        return cls(network, tokenizer, name, folder)

    @property
    def vision_blocks(self) -> nn.ModuleList:
        return self.network.vision_model.encoder.layers

    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.network.text_model.encoder.layers

    @property
    def head_modules(self) -> list[nn.Module]:
        net = self.network
        return [net.vision_model.post_layernorm, net.visual_projection,
                net.text_model.final_layer_norm, net.text_projection]

    @property
    def patch_size(self) -> int:
        return int(self.network.config.vision_config.patch_size)

    @property
    def logit_scale(self) -> float:
        return float(self.network.logit_scale.exp())

    def embed_tokens(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=self.context_length, return_tensors="pt")
        pooled = self.network.text_model(
            input_ids=tokens["input_ids"].to(self.device),
            attention_mask=tokens["attention_mask"].to(self.device)).pooler_output
        return self.network.text_projection(pooled)

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.network.vision_model(pixel_values=pixels.to(self.device)).pooler_output
        return self.network.visual_projection(pooled)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """``config.json`` + ``model.safetensors`` + the tokenizer files, as in the hub repo."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".save-") as tmp:
            self.network.save_pretrained(tmp, safe_serialization=True)
            for name in TOKENIZER_FILES:
                shutil.copyfile(self.folder / name, Path(tmp) / name)
            for item in Path(tmp).iterdir():
                os.replace(item, folder / item.name)
        return folder


def load_openai_clip(
    files: ModelFiles, name: str, weights_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> OpenAIClip:
    return OpenAIClip.from_folder(resolve_folder(files, weights_dir, download), name)
