"""Shapes of the SAM-family networks, without torch: what a runtime needs to feed a network
and read its output (input size, normalisation, feature grid, prompt labels), shared by the
torch modules and the ONNX path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# prompt point labels of SAM's prompt encoder
PAD_LABEL = -1
BOX_TOP_LEFT = 2
BOX_BOTTOM_RIGHT = 3


@dataclass(frozen=True)
class TinyViTConfig:
    """Shape of a TinyViT encoder; defaults are LiteMedSAM's."""

    img_size: int = 256
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    merge_strides: tuple[int, ...] = (2, 2, 1)
    mlp_ratio: float = 4.0
    mbconv_expand_ratio: float = 4.0
    out_chans: int = 256

    @property
    def resolutions(self) -> list[int]:
        """Side length of the feature grid in each stage."""
        sizes = [self.img_size]
        for stride in self.merge_strides:
            sizes.append(sizes[-1] // stride)
        return sizes

    @property
    def grid_size(self) -> int:
        return self.resolutions[-1]


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a SAM ViT encoder; defaults are ViT-B."""

    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_chans: int = 256

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size


VIT_B = ViTConfig()
VIT_L = ViTConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23))
VIT_H = ViTConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31))


Normalisation = Literal["minmax", "sam_pixel"]


@dataclass(frozen=True)
class SamArchitecture:
    """Everything needed to build a network and feed it.

    ``normalisation``: "minmax" scales each image to [0, 1] (MedSAM, LiteMedSAM); "sam_pixel"
    maps it to 0-255 and standardises with SAM's ImageNet pixel mean/std.
    ``multimask``: whether boxes and single clicks use the best of the three ambiguity-aware
    masks (SAM) or the single-mask output (MedSAM, LiteMedSAM).
    """

    encoder: TinyViTConfig | ViTConfig
    normalisation: Normalisation
    multimask: bool
    supports_points: bool
    prompt_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask: int = 3
    iou_head_depth: int = 3
    iou_head_hidden: int = 256

    @property
    def input_size(self) -> int:
        return self.encoder.img_size

    @property
    def grid_size(self) -> int:
        return self.encoder.grid_size
