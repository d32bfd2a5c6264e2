"""Fine-tuning a tiny CLIP backend: the loss falls, only the chosen blocks move, saves reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipsam.errors import InputError
from clipsam.models.clip import BiomedClip, OpenAIClip
from clipsam.train.finetune_clip import FinetuneConfig, finetune_clip, pair_loss
from test_clip_checkpoints import write_tiny_biomedclip, write_tiny_openai_clip

CAPTIONS = ["lung", "the lung", "x", "the x", "a photo", "a photo of the lung"]


def synthetic_pairs() -> list[tuple[np.ndarray, str]]:
    """Six distinct images (a bright square in a different place each), six captions."""
    pairs = []
    for i, caption in enumerate(CAPTIONS):
        image = np.full((40, 40), 20, np.uint8)
        row, col = divmod(i, 3)
        image[row * 20:row * 20 + 16, col * 13:col * 13 + 12] = 230
        pairs.append((image, caption))
    return pairs


def total_loss(model, pairs, config) -> float:
    with torch.no_grad():
        return float(pair_loss(model, [p[0] for p in pairs], [p[1] for p in pairs], config))


@pytest.mark.parametrize(("kind", "loss"), [("clip", "dhn_nce"), ("biomed", "info_nce")])
def test_finetuning_reduces_the_loss_and_saves_upstream_format(tmp_path, kind, loss):
    if kind == "clip":
        model = OpenAIClip.from_folder(write_tiny_openai_clip(tmp_path / "src"), "tiny")
    else:
        model = BiomedClip.from_folder(write_tiny_biomedclip(tmp_path / "src"))
    pairs = synthetic_pairs()
    config = FinetuneConfig(loss=loss, vision_blocks=1, text_blocks=1, epochs=8, batch_size=6,
                            lr=3e-3, weight_decay=0.0, seed=0)
    first_block = [p.clone() for p in model.vision_blocks[0].parameters()]
    last_block = [p.clone() for p in model.vision_blocks[-1].parameters()]
    before = total_loss(model, pairs, config)
    losses = finetune_clip(model, pairs, config, output_dir=tmp_path / "out")
    after = total_loss(model, pairs, config)
    assert len(losses) == 8 and np.isfinite(losses).all()
    assert after < before - 0.05
    assert all(torch.equal(a, b) for a, b in zip(first_block, model.vision_blocks[0].parameters(),
                                                  strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(
        last_block, model.vision_blocks[-1].parameters(), strict=True))
    assert not any(p.requires_grad for p in model.network.parameters())
    reloaded = type(model).from_folder(tmp_path / "out", model.name)
    np.testing.assert_allclose(reloaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS),
                               atol=1e-5)
    images = [p[0] for p in pairs]
    np.testing.assert_allclose(reloaded.encode_images(images), model.encode_images(images),
                               atol=1e-5)


def test_same_seed_same_run(tmp_path):
    folder = write_tiny_openai_clip(tmp_path / "src")
    config = FinetuneConfig(epochs=2, batch_size=3, lr=1e-3, seed=3)
    runs = [finetune_clip(OpenAIClip.from_folder(folder, "t"), synthetic_pairs(), config)
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 4


def test_bad_configuration_is_an_input_error(tmp_path):
    model = OpenAIClip.from_folder(write_tiny_openai_clip(tmp_path / "src"), "t")
    with pytest.raises(InputError, match="at least 3"):
        finetune_clip(model, synthetic_pairs()[:2], FinetuneConfig())
    with pytest.raises(InputError, match="unknown loss"):
        finetune_clip(model, synthetic_pairs(), FinetuneConfig(loss="triplet"))
    with pytest.raises(InputError, match="unfreeze"):
        finetune_clip(model, synthetic_pairs(), FinetuneConfig(vision_blocks=9))
