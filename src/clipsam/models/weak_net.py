"""The weakly supervised network: its model folder, input transform and ensemble inference.

A model folder holds ``config.json`` (:class:`WeakModelConfig`: input size and channels, the
prompt and the method that made the pseudo-masks, the seed, the training data list with the
images held out for validation, the training loss and validation agreement of every
evaluation, and the warning when the student did not learn) and one
``member_<k>.safetensors`` per ensemble member: the snapshot of each cosine learning-rate
cycle that agreed best with the teacher on the held-out images (checkpoint ensembling, as in
MedCLIP-SAM v2). Inference averages the
members' probabilities; the uncertainty map is the binary predictive entropy of that average
(in bits, 0 = certain, 1 = p of 0.5), and ``member_std`` is the spread across members.

Every image is resized (plainly, not letterboxed: the whole input grid carries image content)
to ``size`` x ``size`` with antialiased bilinear interpolation, then standardised to zero mean
and unit variance on its own (as nnU-Net does for non-CT images), so the network never depends
on a modality's numeric range. Colour images keep 3 channels when the network was trained on
colour; a gray image given to a colour network repeats its channel, and a colour image given to
a gray network is averaged to one channel. Probabilities go back to the original size with
bilinear interpolation.

The U-Net is MONAI's residual U-Net with ``features[0]`` output channels and a 1 x 1
convolution to the logit. Asked for one output channel, MONAI's U-Net ends in an instance
norm (and PReLU) over that single channel before its last 3 x 3 convolution: every image's
logit map is then standardised (zero mean, unit variance) minus what 9 weights and a bias
undo, so the background stays near probability 0.5 for hundreds of steps and an image
without the target gets speckle over its whole area (issue #27).

A ``head`` network (``WeakTrainConfig.network``) reads the segmenter's image embedding instead
of the image: one logit per cell of the (64, 64) grid, from dilated residual context blocks
over the locked features (the grounding model's blocks), resampled to the image through the
embedding's geometry. It needs the same segmenter at inference (``feature_model`` in the
config). Training lives in :mod:`clipsam.train.weak`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from safetensors.torch import load_file

from clipsam.config import WEAK_AGREEMENT_FLOOR, WeakTrainConfig
from clipsam.errors import InputError, WeightsError
from clipsam.io.atomic import write_text_atomic
from clipsam.models.device import module_device
from clipsam.models.grounding.heads import ContextBlock, GlobalContext
from clipsam.models.segmenter import ImageEmbedding

CONFIG_NAME = "config.json"
FORMAT = "clipsam-weak/2"
OLD_FORMATS = ("clipsam-weak/1",)


def _channels_first(image: np.ndarray, channels: int) -> np.ndarray:
    """(C, H, W) float32 with ``channels`` channels from (H, W) or (H, W, C)."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 3 and pixels.shape[-1] in (1, 3, 4):
        pixels = pixels[..., :3] if pixels.shape[-1] != 1 else pixels[..., 0]
    if pixels.ndim == 2:
        pixels = pixels[None]
    elif pixels.ndim == 3:
        pixels = np.moveaxis(pixels, -1, 0)
    else:
        raise InputError(f"expected a 2-D image (H, W) or (H, W, C), got shape {image.shape}")
    if not np.isfinite(pixels).all():
        finite = np.isfinite(pixels)
        if not finite.any():
            raise InputError("image has no finite pixel values")
        pixels = np.where(finite, pixels, pixels[finite].min())
    if channels == 1 and pixels.shape[0] != 1:
        pixels = pixels.mean(axis=0, keepdims=True)
    elif channels == 3 and pixels.shape[0] == 1:
        pixels = np.repeat(pixels, 3, axis=0)
    return pixels


def network_input(image: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """(channels, size, size) float32 tensor: resized, then standardised per image."""
    pixels = torch.from_numpy(_channels_first(image, channels))
    resized = F.interpolate(pixels[None], size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    std = resized.std()
    return (resized - resized.mean()) / (std if std > 1e-6 else 1.0)


def to_original_size(maps: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) float32 array from (N, s, s) maps, bilinearly resized to ``original_size``."""
    resized = F.interpolate(maps[:, None].float(), size=original_size, mode="bilinear",
                            align_corners=False)
    return resized[:, 0].numpy().astype(np.float32)


@dataclass(frozen=True)
class TrainingItem:
    """One training image: whether the cascade found the target in it, whether the user gave
    it as an image without the target (``negative``), whether it was used (``used``: not when
    the cascade found nothing and the rule is ``skip``), its ``subject`` (the image id when the
    folder gives none) and whether it was ``held_out`` of training to validate the student."""

    id: str
    image: str
    pseudo_found: bool
    negative: bool = False
    used: bool = True
    subject: str = ""
    held_out: bool = False


@dataclass(frozen=True)
class WeakModelConfig:
    """What ``config.json`` records about a model folder; ``teacher`` is the settings key of the
    run that made the pseudo-masks, ``train_seconds`` the training time over all sessions,
    ``feature_model`` the segmenter whose embeddings a ``head`` network reads.

    ``history`` has one entry per evaluation: ``step``, the mean training ``loss`` since the
    previous one, the ``learning_rate`` and the validation ``agreement`` (mean Dice of the
    network's mask against the held-out images' pseudo-masks; None without held-out images).
    ``member_origins`` says from which step (and agreement) each member was kept;
    ``agreement`` is the finished ensemble's, and ``warning`` is set when it is below
    :data:`WEAK_AGREEMENT_FLOOR` or unknown ("" when the student learned).
    """

    train: WeakTrainConfig
    in_channels: int
    prompt: str
    pseudo_method: str
    data: tuple[TrainingItem, ...]
    members: tuple[str, ...] = ()
    steps_completed: int = 0
    teacher: str = ""
    train_seconds: float = 0.0
    feature_model: str = ""
    history: tuple[dict, ...] = ()
    member_origins: tuple[dict, ...] = ()
    agreement: float | None = None
    warning: str = ""
    format: str = field(default=FORMAT)

    @property
    def reads_embedding(self) -> bool:
        """Whether the network reads the segmenter's image embedding (a ``head``)."""
        return self.train.reads_embedding

    def save(self, model_dir: Path) -> None:
        write_text_atomic(Path(model_dir) / CONFIG_NAME, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, model_dir: Path) -> WeakModelConfig:
        path = Path(model_dir) / CONFIG_NAME
        if not path.is_file():
            raise WeightsError(f"{model_dir} is not a weak-supervision model folder "
                               f"(no {CONFIG_NAME}; train one with `clipsam weak-train`)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") in OLD_FORMATS:
                raise WeightsError(f"{model_dir} was trained by an older clipsam (format "
                                   f"{raw['format']}, whose U-Net could not learn from a few "
                                   "images): train it again with clipsam weak-train")
            if raw.get("format") != FORMAT:
                raise WeightsError(f"{path} has format {raw.get('format')!r}, expected {FORMAT}")
            train = raw.pop("train")
            return cls(
                train=WeakTrainConfig(**{**train, "features": tuple(train["features"])}),
                data=tuple(TrainingItem(**item) for item in raw.pop("data")),
                members=tuple(raw.pop("members")),
                history=tuple(raw.pop("history")),
                member_origins=tuple(raw.pop("member_origins")),
                **raw,
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise WeightsError(f"{path} is damaged or not a clipsam weak model config "
                               f"({exc.__class__.__name__})") from exc

    @property
    def held_out(self) -> tuple[TrainingItem, ...]:
        """The images kept out of training to validate the student."""
        return tuple(item for item in self.data if item.held_out)


def learning_warning(config: WeakModelConfig, agreement: float | None) -> str:
    """What to tell the user about a student whose ensemble reached ``agreement`` with its
    teacher on the held-out images ("" at or above :data:`WEAK_AGREEMENT_FLOOR`)."""
    other = ("--network unet" if config.reads_embedding else "--network head")
    if agreement is None:
        return ("no image was held out to validate the student (a validation share of 0, or "
                "a single subject): nothing shows that it learned the target")
    if agreement >= WEAK_AGREEMENT_FLOOR:
        return ""
    return (f"the student reproduces its teacher's masks on {len(config.held_out)} held-out "
            f"images only at Dice {agreement:.2f}, below {WEAK_AGREEMENT_FLOOR}: it has not "
            f"learned the target; train it on more images, or try {other}")


HEAD_WIDTH = 96
HEAD_DILATIONS = (1, 2, 4, 8, 16)


class FeatureHead(torch.nn.Module):
    """(B, C, h, w) locked embedding -> (B, 1, h, w) logits: a 1x1 projection to
    ``HEAD_WIDTH`` channels, dilated residual context blocks (receptive field over the whole
    64-cell grid), the image's mean feature, and a 1x1 output."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.inp = torch.nn.Conv2d(in_channels, HEAD_WIDTH, 1)
        self.blocks = torch.nn.Sequential(
            *(ContextBlock(HEAD_WIDTH, d) for d in HEAD_DILATIONS), GlobalContext(HEAD_WIDTH))
        self.out = torch.nn.Conv2d(HEAD_WIDTH, 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.inp(features)))


def build_network(train: WeakTrainConfig, in_channels: int) -> torch.nn.Module:
    """MONAI's residual U-Net (2 residual units per level) to ``features[0]`` channels, then a
    1 x 1 convolution to one logit per pixel (see the module notes); or, for
    ``network="head"``, a :class:`FeatureHead` over ``in_channels`` embedding channels."""
    if train.reads_embedding:
        return FeatureHead(in_channels)
    unet = UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=train.features[0],
        channels=train.features,
        strides=(2,) * (len(train.features) - 1),
        num_res_units=2,
    )
    return torch.nn.Sequential(unet, torch.nn.Conv2d(train.features[0], 1, 1))


@dataclass(frozen=True)
class WeakPrediction:
    """Ensemble output at the original image size, all (H, W) float32."""

    probability: np.ndarray
    uncertainty: np.ndarray
    member_std: np.ndarray


def model_files(model_dir: str | Path) -> list[Path]:
    """The files inference reads from a model folder: ``config.json`` and each member's weights."""
    model_dir = Path(model_dir)
    members = WeakModelConfig.load(model_dir).members
    return [model_dir / CONFIG_NAME, *(model_dir / name for name in members)]


class WeakModel:
    """A trained model folder, loaded for inference on ``device`` ("cpu" or "cuda")."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        self.model_dir = Path(model_dir)
        self.config = WeakModelConfig.load(self.model_dir)
        if not self.config.members:
            raise WeightsError(f"{self.model_dir} has no trained ensemble member yet "
                               "(finish training with `clipsam weak-train --resume`)")
        self.members = [self._load_member(name).to(device) for name in self.config.members]
        self.device = module_device(self.members[0])

    def _load_member(self, name: str) -> torch.nn.Module:
        network = build_network(self.config.train, self.config.in_channels)
        path = self.model_dir / name
        try:
            network.load_state_dict(load_file(str(path)))
        except (OSError, RuntimeError) as exc:
            raise WeightsError(f"cannot load ensemble member {path}: "
                               f"{str(exc).splitlines()[0]}") from exc
        return network.eval()

    @property
    def reads_embedding(self) -> bool:
        """Whether :meth:`predict` needs the segmenter's embedding of the image."""
        return self.config.reads_embedding

    @property
    def warning(self) -> str:
        """The training's warning that the student did not learn ("" when it did)."""
        return self.config.warning

    @torch.no_grad()
    def predict(self, image: np.ndarray,
                embedding: ImageEmbedding | None = None) -> WeakPrediction:
        """Average the members' probabilities for an (H, W) or (H, W, C) image (a ``head``
        network reads ``embedding``, the image's embedding by ``config.feature_model``)."""
        if self.reads_embedding:
            check_embedding(self.config, embedding, image.shape[:2])
            inputs = torch.from_numpy(np.asarray(embedding.features, np.float32))
        else:
            inputs = network_input(image, self.config.train.size, self.config.in_channels)[None]
        inputs = inputs.to(self.device)
        probabilities = torch.cat([torch.sigmoid(member(inputs)) for member in self.members])
        mean = probabilities.mean(dim=0)
        spread = probabilities.std(dim=0, correction=0)
        p = mean.clamp(1e-6, 1 - 1e-6)
        entropy = -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))
        stacked = torch.cat([mean, entropy, spread]).cpu()
        maps = (embedding.geometry.grid_to_original(stacked.numpy()) if self.reads_embedding
                else to_original_size(stacked, image.shape[:2]))
        return WeakPrediction(probability=maps[0], uncertainty=maps[1], member_std=maps[2])


def check_embedding(config: WeakModelConfig, embedding: ImageEmbedding | None,
                    image_size: tuple[int, int]) -> None:
    """Raise unless ``embedding`` is the image's embedding by the segmenter the head learned."""
    if embedding is None:
        raise InputError("this weak model reads the segmenter's image embedding: give one "
                         "(run it through --method weak or weak-box, which encode the image)")
    if embedding.model_name != config.feature_model:
        raise InputError(f"this weak model learned embeddings of {config.feature_model!r}, "
                         f"not {embedding.model_name!r}: use --segmenter accordingly")
    if tuple(embedding.geometry.original_size) != tuple(image_size):
        raise InputError("the embedding given was computed for an image of another size")
