"""A whole SAM-family network: image encoder, prompt encoder and mask decoder, with the
parameter layout of the published checkpoints (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``)."""

from __future__ import annotations

import torch
from torch import nn

from clipsam.models.sam.architecture import SamArchitecture, TinyViTConfig
from clipsam.models.sam.mask_decoder import MaskDecoder
from clipsam.models.sam.prompt_encoder import PromptEncoder
from clipsam.models.sam.tiny_vit import TinyViTEncoder
from clipsam.models.sam.vit import ViTEncoder


class SamModel(nn.Module):
    """Encoder + prompt encoder + decoder; ``encode`` once, ``decode`` many prompts."""

    def __init__(self, arch: SamArchitecture) -> None:
        super().__init__()
        self.arch = arch
        if isinstance(arch.encoder, TinyViTConfig):
            self.image_encoder: nn.Module = TinyViTEncoder(arch.encoder)
        else:
            self.image_encoder = ViTEncoder(arch.encoder)
        self.prompt_encoder = PromptEncoder(arch.prompt_dim, arch.grid_size, arch.input_size,
                                            arch.mask_in_chans)
        self.mask_decoder = MaskDecoder(arch.prompt_dim, arch.decoder_depth, arch.decoder_heads,
                                        arch.decoder_mlp_dim, arch.num_multimask,
                                        arch.iou_head_depth, arch.iou_head_hidden)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, S, S) preprocessed image -> (1, C, g, g) features."""
        return self.image_encoder(image)

    def decode(self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
               mask_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Labelled points (N, P, 2)/(N, P) in input pixels (see :mod:`prompt_encoder`), and
        optionally (N, 1, 4g, 4g) mask logits from a previous round -> all (N, M, 4g, 4g) mask
        logits and (N, M) IoU estimates; output 0 is the single-mask head."""
        sparse = self.prompt_encoder.embed_points(coords, labels)
        dense = (self.prompt_encoder.no_mask() if mask_input is None
                 else self.prompt_encoder.embed_masks(mask_input))
        return self.mask_decoder(features, self.prompt_encoder.dense_positions(), sparse, dense)


class PromptDecoder(nn.Module):
    """``SamModel.decode`` without the optional mask input, as a module to export to ONNX."""

    def __init__(self, model: SamModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, coords: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(features, coords, labels)


class MaskedPromptDecoder(nn.Module):
    """``SamModel.decode`` with the mask input of a previous round, as a module to export."""

    def __init__(self, model: SamModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
                mask_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(features, coords, labels, mask_input)
