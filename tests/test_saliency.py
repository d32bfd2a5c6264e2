"""Saliency methods: contracts on tiny real backends, behaviour on models built to be explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipsam.errors import InputError
from clipsam.models.clip import BiomedClip, OpenAIClip
from clipsam.models.image_text import SaliencyCapable
from clipsam.saliency import compute_saliency
from clipsam.saliency.common import squash_to_square
from test_clip_checkpoints import write_tiny_biomedclip, write_tiny_openai_clip

FAST = {"gradcam": {"layer": 1}, "gscorecam": {"layer": 1, "top_k": 8, "batch_size": 4},
        "m2ib": {"layer": 1, "steps": 3}}


class PatchModel:
    """A two-block 'ViT' whose tokens never mix: block 0 turns each 8x8 patch's brightness b
    into channels relu(+-s * (b - 0.5)), block 1 is a per-token tanh MLP; the image embedding is
    the mean of block 1's tokens over ``region`` (a boolean 4x4 grid); dimension 0 of the
    embedding grows with brightness, and the text target is that dimension."""

    num_layers = 2
    patch_grid = (4, 4)

    def __init__(self, region: np.ndarray):
        gen = torch.Generator().manual_seed(0)
        self.region = torch.as_tensor(region.reshape(-1))
        self.slopes = torch.tensor([3.0, -3.0, 2.0, -2.0, 1.0, -1.0])
        self.mix = torch.eye(6) + 0.1 * torch.randn(6, 6, generator=gen)
        self.proj = torch.zeros(6, 4)
        self.proj[:, 0] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
        self.proj[:, 1:] = 0.3 * torch.randn(6, 3, generator=gen)
        self.proj[:, 1] += 1.0  # every token adds a constant direction

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        gray = torch.as_tensor(np.asarray(image, dtype=np.float32))
        gray = F.interpolate(gray[None, None], size=(32, 32), mode="bilinear")
        return gray.expand(1, 3, 32, 32).clone()

    def text_features(self, texts) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(len(texts), 4)

    def image_features(self, pixels, layer=None, hook=None):
        brightness = F.avg_pool2d(pixels[:, 0], 8).flatten(1)  # (N, 16)
        tokens = torch.relu(self.slopes * (brightness[..., None] - 0.5))
        hidden = torch.cat([torch.zeros(len(pixels), 1, 6), tokens], dim=1)
        blocks = [lambda h: h, lambda h: torch.tanh(h @ self.mix)]
        for index, block in enumerate(blocks):
            hidden = block(hidden)
            if hook is not None and index == layer:
                hidden = hook(hidden)
        pooled = hidden[:, 1:][:, self.region].mean(dim=1)
        return F.normalize(pooled @ self.proj, dim=-1)


def quadrant_masses(saliency: np.ndarray) -> np.ndarray:
    h, w = saliency.shape[0] // 2, saliency.shape[1] // 2
    return np.array([saliency[:h, :w].sum(), saliency[:h, w:].sum(),
                     saliency[h:, :w].sum(), saliency[h:, w:].sum()])


@pytest.mark.parametrize("method", ["gradcam", "gscorecam", "m2ib"])
def test_map_follows_the_content_the_text_matches(method):
    """A bright square in the top-left quadrant is what raises the similarity."""
    model = PatchModel(np.ones((4, 4), bool))
    assert isinstance(model, SaliencyCapable)
    image = np.zeros((48, 64), np.float32)
    image[2:22, 3:29] = 1.0
    options = {"top_k": 4} if method == "gscorecam" else {}
    saliency = compute_saliency(model, image, "bright", method=method, layer=0, **options)
    assert saliency.shape == (48, 64) and saliency.dtype == np.float32
    masses = quadrant_masses(saliency)
    assert masses[0] > 2 * masses[1:].max()


def test_m2ib_keeps_information_only_where_the_embedding_looks():
    """Uniform texture everywhere, but the embedding only reads the top-left 2x2 patches."""
    region = np.zeros((4, 4), bool)
    region[:2, :2] = True
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    saliency = compute_saliency(PatchModel(region), image, ["a", "b"], method="m2ib", layer=0)
    masses = quadrant_masses(saliency)
    assert masses[0] > 1.5 * masses[1:].max()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    clip = OpenAIClip.from_folder(write_tiny_openai_clip(root / "clip"), "tiny-clip")
    biomed = BiomedClip.from_folder(write_tiny_biomedclip(root / "biomed"))
    return {"clip": clip, "biomed": biomed}


@pytest.mark.parametrize("backend", ["clip", "biomed"])
@pytest.mark.parametrize("method", ["gradcam", "gscorecam", "m2ib"])
def test_real_backends_give_finite_maps_at_image_size(tiny_models, backend, method):
    model = tiny_models[backend]
    image = np.random.default_rng(1).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    first = compute_saliency(model, image, ["the lung", "lungs"], method=method, **FAST[method])
    again = compute_saliency(model, image, ["the lung", "lungs"], method=method, **FAST[method])
    assert first.shape == (45, 70) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)


def test_m2ib_seed_changes_the_noise(tiny_models):
    image = np.random.default_rng(2).integers(0, 256, (40, 40), dtype=np.uint8)
    one = compute_saliency(tiny_models["clip"], image, "lung", method="m2ib", layer=1, seed=1)
    two = compute_saliency(tiny_models["clip"], image, "lung", method="m2ib", layer=1, seed=2)
    assert not np.array_equal(one, two)


def test_bad_method_options_and_layers_are_input_errors(tiny_models):
    image = np.zeros((20, 20), np.uint8)
    with pytest.raises(InputError, match="gscorecam"):
        compute_saliency(tiny_models["clip"], image, "lung", method="rollout")
    with pytest.raises(InputError, match="top_k"):
        compute_saliency(tiny_models["clip"], image, "lung", method="gradcam", top_k=3)
    with pytest.raises(InputError, match="layer 9"):
        compute_saliency(tiny_models["clip"], image, "lung", method="m2ib")  # only 3 blocks
    with pytest.raises(InputError):
        compute_saliency(tiny_models["clip"], image, [], method="gradcam")


def test_squash_keeps_dtype_and_covers_the_image():
    image = np.zeros((10, 30), np.uint8)
    image[:, 20:] = 200
    square = squash_to_square(image)
    assert square.shape == (30, 30) and square.dtype == np.uint8
    assert square[:, :18].max() == 0 and square[:, 22:].min() == 200


def test_test_time_flips_need_a_native_map():
    from clipsam.config import MedClipSamConfig
    from clipsam.pipelines.medclipsam import MedClipSamPipeline
    from synthetic_volume import BrightSegmenter

    model = PatchModel(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match=r"tta.*gradcam saliency has none"):
        MedClipSamPipeline(BrightSegmenter(), model,
                           MedClipSamConfig(saliency="gradcam", tta=("hflip",)))
