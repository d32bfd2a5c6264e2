"""Configuration shared by the CLI, the Python API and the server: frozen dataclasses only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clipsam.proposals.generate import ProposalConfig

SEGMENTERS = ("litemedsam", "sam-vit-b", "sam-vit-l", "sam-vit-h", "medsam-vit-b")
RUNTIMES = ("auto", "onnx", "torch")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelConfig:
    """Which models a run loads.

    ``text_model`` is ``"builtin"`` (the grounding model shipped with clipsam), a folder written
    by ``clipsam finetune``/``clipsam adapt``, or a CLIP-family name (``clip-vit-l14``,
    ``biomedclip``...).
    """

    segmenter: str = "litemedsam"
    runtime: str = "auto"
    device: str = "auto"
    text_model: str = "builtin"
    weights_dir: Path | None = None


@dataclass(frozen=True)
class SalipConfig:
    """SaLIP (Aleem et al., CVPRW 2024): proposals -> area filter -> crop retrieval -> box -> SAM.

    Label-free defaults (the paper tunes its area threshold per data set on test labels).
    ``top_k=None`` takes as many masks as the prompt names ("left and right lungs" -> 2).
    ``crop`` is how a proposal is shown to a CLIP backend: ``masked`` (the paper: the mask's pixels,
    cut to its box), ``box`` (the unmasked box) or ``enlarged`` (the box grown by ``enlarge``).
    """

    max_area_fraction: float = 0.6
    min_area_fraction: float = 0.002
    top_k: int | None = None
    crop: str = "masked"
    enlarge: float = 1.25
    use_prompt_library: bool = True
    proposals: ProposalConfig | None = None


@dataclass(frozen=True)
class MedClipSamConfig:
    """MedCLIP-SAM (Koleilat et al., MICCAI 2024) and v2: saliency -> coarse mask -> box -> SAM.

    ``saliency="auto"`` uses the text model's own dense map when it has one (the built-in grounding
    model), else gScoreCAM (v1) or M2IB (v2) as ``version`` says. ``coarse`` turns the map into a
    mask (``crf``, ``kmeans``, ``otsu`` or ``threshold`` for calibrated maps). ``keep="auto"`` keeps
    as many components as the prompt names. ``boxes``: one box ``each`` kept component, one around
    ``all`` of them, or the ``largest`` only.
    """

    version: str = "v2"
    saliency: str = "auto"
    coarse: str = "auto"
    keep: str = "auto"
    boxes: str = "each"
    box_margin: float = 0.0
    cleanup: bool = True
    use_prompt_library: bool = True


@dataclass(frozen=True)
class RunConfig:
    """One way to run clipsam: the method, its models and its parameters.

    ``weak_model`` is the folder written by ``clipsam weak-train``, used by ``method="weak"``.
    """

    method: str = "medclipsam"
    models: ModelConfig = field(default_factory=ModelConfig)
    salip: SalipConfig = field(default_factory=SalipConfig)
    medclipsam: MedClipSamConfig = field(default_factory=MedClipSamConfig)
    weak_model: Path | None = None
    keep_intermediates: bool = False
