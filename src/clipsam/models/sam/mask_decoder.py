"""SAM's mask decoder: a two-way transformer between prompt tokens and image features,
then transposed-conv upscaling and per-token hypernetworks (Kirillov et al., ICCV 2023)."""

from __future__ import annotations

import torch
from torch import nn

from clipsam.models.sam.layers import MLP, LayerNorm2d, MLPBlock


class ProjectedAttention(nn.Module):
    """Multi-head attention whose q/k/v projections may shrink the width by ``downsample``.

    Inputs broadcast over the batch: a (1, L, C) input shared by all prompts is projected once.
    """

    def __init__(self, dim: int, num_heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.num_heads = num_heads
        self.scale = (inner // num_heads) ** -0.5
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q_proj(q)) * self.scale
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        out = torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayBlock(nn.Module):
    """Token self-attention, tokens->image, token MLP, image->tokens; each with LayerNorm."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.self_attn = ProjectedAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, act=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = ProjectedAttention(dim, num_heads, downsample=2)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor,
                image_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:  # the first block replaces the tokens (they already carry their PE)
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        keys = image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, keys,
                                                                    image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(keys, tokens + token_pe,
                                                                  tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, num_heads, mlp_dim, first=i == 0)
                                    for i in range(depth))
        self.final_attn_token_to_image = ProjectedAttention(dim, num_heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 or N, C, h, w) image, (1, C, h, w) PE, (N, T, C) tokens -> tokens and the
        (N, h*w, C) image; a shared image is expanded only when the prompts first update it."""
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        attended = self.final_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens + attended), image


class MaskDecoder(nn.Module):
    """Predicts 1 + ``num_multimask`` mask logits at 4x the feature grid, and their IoU."""

    def __init__(self, dim: int = 256, depth: int = 2, num_heads: int = 8, mlp_dim: int = 2048,
                 num_multimask: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden: int = 256) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask + 1
        self.transformer = TwoWayTransformer(dim, depth, num_heads, mlp_dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden, self.num_mask_tokens, iou_head_depth)

    def forward(self, features: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C, g, g) features, (1, C, g, g) PE, (N, P, C) prompt tokens, dense prompt
        (broadcastable to (N, C, g, g)) -> (N, M, 4g, 4g) mask logits and (N, M) IoU."""
        n = sparse.shape[0]
        _, c, h, w = features.shape
        outputs = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([outputs.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
        tokens, image = self.transformer(features + dense, image_pe, tokens)
        upscaled = self.output_upscaling(image.transpose(1, 2).reshape(n, c, h, w))
        hyper = torch.stack([mlp(tokens[:, 1 + i]) for i, mlp in
                             enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, cu, hu, wu = upscaled.shape
        masks = (hyper @ upscaled.reshape(n, cu, hu * wu)).reshape(n, -1, hu, wu)
        return masks, self.iou_prediction_head(tokens[:, 0])
