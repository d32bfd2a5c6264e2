"""The trained part of the grounding model: a patch head and a text projection.

The patch head maps a segmenter's (B, 256, 64, 64) feature map to unit vectors in a shared
space, with spatial context from dilated depthwise-separable convolutions and, optionally, the
whole image's mean feature (what kind of image this is); the text projection
maps sentence embeddings into the same space. ``sigmoid(scale * cos + bias)`` is the
probability that a patch shows the text's target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HeadsConfig:
    """Sizes of the trained heads."""

    feature_dim: int = 256
    text_dim: int = 384
    hidden_dim: int = 96
    embed_dim: int = 128
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    global_context: bool = False
    context_stride: int = 1
    depthwise: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HeadsConfig:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "dilations" in fields:
            fields["dilations"] = tuple(fields["dilations"])
        return cls(**fields)


class ContextBlock(nn.Module):
    """Residual block: dilated 3x3 (depthwise, or mixing all channels), channel norm, GELU,
    pointwise mix."""

    def __init__(self, channels: int, dilation: int, depthwise: bool = True) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation,
                                 groups=channels if depthwise else 1)
        self.norm = nn.GroupNorm(1, channels)
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(F.gelu(self.norm(self.spatial(x))))


class GlobalContext(nn.Module):
    """Residual: every cell gets an MLP of the image's mean feature added."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.GELU(),
                                 nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x.mean(dim=(2, 3)))[:, :, None, None]


class PatchHead(nn.Module):
    """(B, feature_dim, h, w) features -> (B, embed_dim, h, w) unit vectors.

    With ``context_stride`` s > 1 the context blocks run on an s-times average-pooled grid and
    their output is upsampled (bilinear) and added to the full-resolution projection: the
    same receptive field for a fraction of the cost, cell detail kept by the skip.
    """

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.inp = nn.Conv2d(config.feature_dim, config.hidden_dim, 1)
        blocks: list[nn.Module] = [ContextBlock(config.hidden_dim, d, config.depthwise)
                                   for d in config.dilations]
        if config.global_context:
            blocks.append(GlobalContext(config.hidden_dim))
        self.blocks = nn.Sequential(*blocks)
        self.stride = config.context_stride
        self.out = nn.Conv2d(config.hidden_dim, config.embed_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.inp(features)
        if self.stride > 1:
            context = self.blocks(F.avg_pool2d(x, self.stride, ceil_mode=True))
            x = x + F.interpolate(context, scale_factor=self.stride, mode="bilinear",
                                  align_corners=False)[..., :x.shape[-2], :x.shape[-1]]
        else:
            x = self.blocks(x)
        return F.normalize(self.out(x), dim=1)


class TextProjection(nn.Module):
    """(T, text_dim) sentence embeddings -> (T, embed_dim) unit vectors (linear + residual MLP)."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(config.text_dim, config.embed_dim)
        self.mlp = nn.Sequential(nn.Linear(config.text_dim, config.text_dim), nn.GELU(),
                                 nn.Linear(config.text_dim, config.embed_dim))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(text) + self.mlp(text), dim=-1)


class GroundingHeads(nn.Module):
    """Patch head, text projection and the calibration of cosine to probability."""

    def __init__(self, config: HeadsConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeadsConfig()
        self.patch = PatchHead(self.config)
        self.text = TextProjection(self.config)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-5.0))

    def logits(self, patches: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) unit patches x (T, D) unit texts -> (B, T, h, w) calibrated logits."""
        cos = torch.einsum("bdhw,td->bthw", patches, texts)
        return self.log_scale.exp() * cos + self.bias
