import math

import pytest
import torch

from clipsam.train.losses import dhn_nce_loss, info_nce_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _dhn_loop(v: torch.Tensor, t: torch.Tensor, tau: float, beta: float) -> float:
    v, t = _unit(v).tolist(), _unit(t).tolist()
    b = len(v)

    def dot(a, c):
        return sum(x * y for x, y in zip(a, c, strict=True))

    def direction(a, c):
        total = 0.0
        for i in range(b):
            others = [k for k in range(b) if k != i]
            norm = sum(math.exp(beta * dot(a[i], c[k]) / tau) for k in others)
            denom = 0.0
            for k in others:
                w = (b - 2) * math.exp(beta * dot(a[i], c[k]) / tau) / norm
                denom += w * math.exp(dot(a[i], c[k]) / tau)
            total += -math.log(math.exp(dot(a[i], c[i]) / tau) / denom)
        return total / b

    return direction(v, t) + direction(t, v)


def _info_nce_loop(v: torch.Tensor, t: torch.Tensor, tau: float) -> float:
    v, t = _unit(v).tolist(), _unit(t).tolist()
    b = len(v)

    def dot(a, c):
        return sum(x * y for x, y in zip(a, c, strict=True))

    def direction(a, c):
        return sum(-math.log(math.exp(dot(a[i], c[i]) / tau)
                             / sum(math.exp(dot(a[i], c[k]) / tau) for k in range(b)))
                   for i in range(b)) / b

    return 0.5 * (direction(v, t) + direction(t, v))


@pytest.mark.parametrize(("batch", "tau", "beta"), [(3, 0.6, 0.15), (7, 0.6, 0.15), (5, 0.1, 1.0)])
def test_dhn_nce_matches_the_paper_equations(batch, tau, beta):
    gen = torch.Generator().manual_seed(batch)
    v, t = torch.randn(batch, 16, generator=gen), torch.randn(batch, 16, generator=gen)
    got = dhn_nce_loss(v, t, temperature=tau, beta=beta).item()
    assert got == pytest.approx(_dhn_loop(v, t, tau, beta), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize(("batch", "tau"), [(2, 0.07), (6, 0.07), (9, 0.5)])
def test_info_nce_matches_symmetric_cross_entropy(batch, tau):
    gen = torch.Generator().manual_seed(100 + batch)
    v, t = torch.randn(batch, 8, generator=gen), torch.randn(batch, 8, generator=gen)
    got = info_nce_loss(v, t, temperature=tau).item()
    assert got == pytest.approx(_info_nce_loop(v, t, tau), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("loss", [dhn_nce_loss, info_nce_loss])
def test_losses_prefer_aligned_pairs_and_have_gradients(loss):
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(6, 12, generator=gen)
    aligned = (t + 0.05 * torch.randn(6, 12, generator=gen)).requires_grad_()
    shuffled = t[torch.tensor([1, 2, 3, 4, 5, 0])]
    good = loss(aligned, t)
    assert good.item() < loss(shuffled, t).item()
    good.backward()
    assert aligned.grad is not None and torch.isfinite(aligned.grad).all()


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError):
        dhn_nce_loss(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError):
        info_nce_loss(torch.randn(3, 4), torch.randn(4, 4))
