"""SAM's prompt encoder: random-Fourier positional codes for points and box corners.

Every prompt is a set of labelled points in model-input pixels. Labels: 1 foreground point,
0 background point, 2 box top-left corner, 3 box bottom-right corner, -1 padding ("not a point").
A box is the two corner points, so boxes and clicks share one code path (and one ONNX graph).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clipsam.models.sam.architecture import PAD_LABEL
from clipsam.models.sam.layers import LayerNorm2d


class FourierPositions(nn.Module):
    """sin/cos of a fixed random projection of coordinates in [0, 1] (key ``pe_layer``)."""

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, unit_xy: torch.Tensor) -> torch.Tensor:
        proj = (2 * unit_xy - 1) @ self.positional_encoding_gaussian_matrix * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """Codes of the cell centres of a height x width grid, as (C, height, width)."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return self.encode(torch.stack([xx, yy], dim=-1)).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Embeds labelled points (sparse tokens) and provides the dense (no-mask) embedding."""

    def __init__(self, embed_dim: int, grid_size: int, input_size: int,
                 mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.grid_size = grid_size
        self.input_size = input_size
        self.pe_layer = FourierPositions(embed_dim // 2)
        # 0 background, 1 foreground, 2 box top-left, 3 box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_positions(self) -> torch.Tensor:
        """(1, C, g, g) positional codes of the image-embedding grid."""
        return self.pe_layer.grid(self.grid_size, self.grid_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, P, 2) xy input pixels and (N, P) labels -> (N, P, C) sparse tokens."""
        codes = self.pe_layer.encode((coords + 0.5) / self.input_size)
        labels = labels.to(codes.dtype).unsqueeze(-1)
        codes = codes * (labels != PAD_LABEL).to(codes.dtype)
        codes = codes + (labels == PAD_LABEL).to(codes.dtype) * self.not_a_point_embed.weight
        for value, table in enumerate(self.point_embeddings):
            codes = codes + (labels == value).to(codes.dtype) * table.weight
        return codes

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(N, 1, 4g, 4g) mask logits from an earlier prediction -> (N, C, g, g) dense prompt."""
        return self.mask_downscaling(masks)

    def no_mask(self) -> torch.Tensor:
        """(1, C, 1, 1) dense prompt used when no mask is given (broadcasts over the grid)."""
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1)
