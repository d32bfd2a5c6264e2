"""The TinyViT-5M image encoder as used by LiteMedSAM (Ma et al., MedSAM-Lite, CVPR 2024 challenge).

Differences from TinyViT for classification (Wu et al., ECCV 2022) and from MobileSAM: the patch
embedding is two 1x1 conv+BN layers at full 256x256 resolution, the two first stage transitions
halve the resolution and the last keeps it, so a 256x256 input gives a 64x64 feature grid; a SAM
neck maps the last stage to 256 channels. Parameter names follow the published checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from clipsam.models.sam.architecture import TinyViTConfig
from clipsam.models.sam.layers import neck, window_partition, window_unpartition


class ConvBN(nn.Sequential):
    """A bias-free convolution followed by batch norm (children ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                       bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_chans, dim // 2), nn.GELU(), ConvBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, kernel=3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Stage transition on a (B, C, H, W) map; returns tokens (B, H' * W', C_out)."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, kernel=3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


class WindowAttention(nn.Module):
    """Multi-head attention inside square windows with a learned bias per |dy|, |dx| offset.

    The fused ``qkv`` projection is laid out per head as [q, k, v].
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        offsets = (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()
        self.register_buffer("bias_index", offsets, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.bias_index]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class NormMLP(nn.Module):
    """LayerNorm then a GELU feed-forward (keys ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (residual), depthwise 3x3 conv (no residual), feed-forward (residual)."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = NormMLP(dim, int(dim * mlp_ratio))
        self.local_conv = ConvBN(dim, dim, kernel=3, groups=dim)

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        b, n, c = x.shape
        windows, padded = window_partition(x.view(b, size, size, c), self.window)
        attended = self.attn(windows.flatten(1, 2)).view_as(windows)
        x = x + window_unpartition(attended, self.window, padded, (size, size)).reshape(b, n, c)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, size, size))
        x = x.flatten(2).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """First stage: MBConv blocks on a (B, C, H, W) map, then a merge to tokens."""

    def __init__(self, dim: int, out_dim: int, depth: int, expand_ratio: float,
                 stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """TinyViT blocks on tokens of a size x size grid, then an optional merge."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 size: int, out_dim: int | None, stride: int) -> None:
        super().__init__()
        self.size = size
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio)
                                    for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, self.size)
        if self.downsample is None:
            return x
        b, _, c = x.shape
        return self.downsample(x.transpose(1, 2).reshape(b, c, self.size, self.size))


class TinyViTEncoder(nn.Module):
    """(B, 3, S, S) image in [0, 1] -> (B, out_chans, S/4, S/4) features (LiteMedSAM: 256x64x64)."""

    def __init__(self, config: TinyViTConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TinyViTConfig()
        dims, sizes = config.embed_dims, config.resolutions
        self.patch_embed = PatchEmbed(3, dims[0])
        stages: list[nn.Module] = [ConvStage(dims[0], dims[1], config.depths[0],
                                             config.mbconv_expand_ratio, config.merge_strides[0])]
        last = len(dims) - 1
        for i in range(1, len(dims)):
            stages.append(AttentionStage(
                dims[i], config.depths[i], config.num_heads[i], config.window_sizes[i],
                config.mlp_ratio, sizes[i], dims[i + 1] if i < last else None,
                config.merge_strides[i] if i < last else 1))
        self.layers = nn.ModuleList(stages)
        self.neck = neck(dims[-1], config.out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        b, _, c = x.shape
        size = self.config.grid_size
        return self.neck(x.transpose(1, 2).reshape(b, c, size, size))
