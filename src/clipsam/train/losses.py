"""Contrastive losses for paired (B, D) image and text embeddings (row i of each is a pair).

* :func:`info_nce_loss`: CLIP's symmetric cross-entropy (Radford et al. 2021).
* :func:`dhn_nce_loss`: Decoupled Hard-Negative NCE from MedCLIP-SAM (Koleilat et al., MICCAI
  2024): the positive is removed from the denominator (decoupled contrastive learning) and each
  negative is re-weighted by its hardness, in both directions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _similarities(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2:
        raise ValueError(f"expected two (B, D) tensors of one shape, got "
                         f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    return F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T


def info_nce_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Symmetric cross-entropy over the (B, B) cosine similarities divided by ``temperature``."""
    logits = _similarities(image_emb, text_emb) / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def _dhn_direction(sim: torch.Tensor, temperature: float, beta: float) -> torch.Tensor:
    """Mean over rows i of -log(exp(s_ii/t) / sum_{k!=i} w_ik exp(s_ik/t)) for one direction.

    Hardness weights w_ik = (B-2) exp(beta s_ik/t) / sum_{k!=i} exp(beta s_ik/t), as written in
    the paper (gradients flow through them too).
    """
    batch = sim.shape[0]
    off_diag = ~torch.eye(batch, dtype=torch.bool, device=sim.device)
    scaled = sim / temperature
    hardness = (beta * scaled).masked_fill(~off_diag, float("-inf"))
    weights = (batch - 2) * torch.softmax(hardness, dim=1)
    log_negatives = torch.logsumexp(
        (scaled + torch.log(weights.clamp_min(1e-30))).masked_fill(~off_diag, float("-inf")),
        dim=1,
    )
    return (log_negatives - scaled.diagonal()).mean()


def dhn_nce_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    temperature: float = 0.6,
    beta: float = 0.15,
) -> torch.Tensor:
    """DHN-NCE: L_v->t + L_t->v over cosine similarities; needs a batch of at least 3 pairs."""
    sim = _similarities(image_emb, text_emb)
    if sim.shape[0] < 3:
        raise ValueError("dhn_nce_loss needs a batch of at least 3 pairs")
    return _dhn_direction(sim, temperature, beta) + _dhn_direction(sim.T, temperature, beta)
