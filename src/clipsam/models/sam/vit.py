"""SAM's ViT image encoder (Kirillov et al., ICCV 2023): 16x16 patches, windowed attention with
a few global-attention blocks, decomposed relative positions, and a neck to 256 channels.
Parameter names follow the official checkpoints (``image_encoder.*``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clipsam.models.sam.architecture import VIT_B, ViTConfig
from clipsam.models.sam.layers import MLPBlock, neck, window_partition, window_unpartition


def relative_table(table: torch.Tensor, size: int) -> torch.Tensor:
    """(L, C) learned offsets -> (size, size, C) embedding of (query - key) positions."""
    length = 2 * size - 1
    if table.shape[0] != length:  # a checkpoint trained at another resolution
        table = F.interpolate(table.T.unsqueeze(0), size=length, mode="linear").squeeze(0).T
    coords = torch.arange(size, device=table.device)
    return table[coords[:, None] - coords[None, :] + size - 1]


class RelPosAttention(nn.Module):
    """Self-attention over an (B, H, W, C) map with decomposed relative position biases."""

    def __init__(self, dim: int, num_heads: int, size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        heads, hd = self.num_heads, c // self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, HW, hd)
        grid_q = q.reshape(b, heads, h, w, hd)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, relative_table(self.rel_pos_h, h))
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, relative_table(self.rel_pos_w, w))
        bias = (bias_h.unsqueeze(-1) + bias_w.unsqueeze(-2)).reshape(b, heads, h * w, h * w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int,
                 grid: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RelPosAttention(dim, num_heads, window if window else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window:
            size = (y.shape[1], y.shape[2])
            windows, padded = window_partition(y, self.window)
            y = window_unpartition(self.attn(windows), self.window, padded, size)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViTEncoder(nn.Module):
    """(B, 3, S, S) normalised image -> (B, out_chans, S/16, S/16) features."""

    def __init__(self, config: ViTConfig = VIT_B) -> None:
        super().__init__()
        self.config = config
        grid = config.grid_size
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, config.embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(config.embed_dim, config.num_heads, config.mlp_ratio,
                     0 if i in config.global_attn_indexes else config.window_size, grid)
            for i in range(config.depth))
        self.neck = neck(config.embed_dim, config.out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
