"""Two ways to run the same :class:`SamModel`: PyTorch, or ONNX Runtime on graphs exported once
into the cache (image encoder; prompt encoder + mask decoder with a dynamic number of prompts)."""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from clipsam.errors import WeightsError
from clipsam.io.atomic import atomic_path
from clipsam.models.sam.model import PromptDecoder, SamModel
from clipsam.models.weights import cache_dir, sha256_of

ONNX_OPSET = 17
GRAPH_REVISION = 2  # bump when the exported graphs change for the same checkpoint


def default_threads() -> int:
    """Intra-op threads: ``$CLIPSAM_THREADS``, else the CPU count capped at 4."""
    env = os.environ.get("CLIPSAM_THREADS")
    return max(1, int(env)) if env else max(1, min(4, os.cpu_count() or 1))


class Runtime(Protocol):
    """Runs the network on preprocessed numpy arrays."""

    name: str

    def encode(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 -> (1, C, g, g) float32 features."""
        ...

    def decode(self, features: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features, (N, P, 2) input-frame points, (N, P) labels -> (N, M, 4g, 4g) logits and
        (N, M) IoU estimates for all M decoder outputs."""
        ...


class TorchRuntime:
    name = "torch"

    def __init__(self, model: SamModel) -> None:
        self.model = model

    def encode(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model.encode(torch.from_numpy(image)).numpy()

    def decode(self, features: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            masks, iou = self.model.decode(torch.from_numpy(features), torch.from_numpy(coords),
                                           torch.from_numpy(labels))
        return masks.numpy(), iou.numpy()


class OnnxRuntime:
    name = "onnx"

    def __init__(self, encoder_path: Path, decoder_path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(encoder_path), options, providers=providers)
        self.decoder = ort.InferenceSession(str(decoder_path), options, providers=providers)

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"image": image})[0]

    def decode(self, features: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks, iou = self.decoder.run(None, {"features": features, "coords": coords,
                                             "labels": labels})
        return masks, iou


def onnx_paths(model_name: str, checkpoint: Path) -> tuple[Path, Path]:
    """Cache paths of the two graphs, keyed by checkpoint hash, clipsam version, opset and
    graph revision."""
    version = importlib.metadata.version("clipsam")
    key = (f"{model_name}-{sha256_of(checkpoint)[:16]}-clipsam{version}-opset{ONNX_OPSET}"
           f"-r{GRAPH_REVISION}")
    folder = cache_dir() / "onnx"
    return folder / f"{key}-encoder.onnx", folder / f"{key}-decoder.onnx"


def export_encoder(model: SamModel, target: Path) -> None:
    """Write the image encoder graph atomically (a killed export leaves no file)."""
    size = model.arch.input_size
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.image_encoder, (torch.zeros(1, 3, size, size),), str(tmp),
                          input_names=["image"], output_names=["features"],
                          opset_version=ONNX_OPSET, dynamo=False)


def export_decoder(model: SamModel, target: Path) -> None:
    """Write the prompt-encoder + mask-decoder graph (dynamic prompts and points) atomically."""
    grid, dim = model.arch.grid_size, model.arch.prompt_dim
    example = (torch.zeros(1, dim, grid, grid), torch.zeros(2, 2, 2),
               torch.tensor([[2.0, 3.0], [2.0, 3.0]]))
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(PromptDecoder(model), example, str(tmp),
                          input_names=["features", "coords", "labels"],
                          output_names=["masks", "iou"], opset_version=ONNX_OPSET,
                          dynamic_axes={"coords": {0: "prompts", 1: "points"},
                                        "labels": {0: "prompts", 1: "points"},
                                        "masks": {0: "prompts"}, "iou": {0: "prompts"}},
                          dynamo=False)


def onnx_runtime(model: SamModel, model_name: str, checkpoint: Path) -> OnnxRuntime:
    """ONNX Runtime sessions for ``model``, exporting the graphs on first use."""
    encoder_path, decoder_path = onnx_paths(model_name, checkpoint)
    try:
        if not encoder_path.exists():
            export_encoder(model, encoder_path)
        if not decoder_path.exists():
            export_decoder(model, decoder_path)
    except (RuntimeError, ValueError, OSError) as exc:
        raise WeightsError(f"ONNX export of {model_name} to {encoder_path.parent} failed "
                           f"({exc.__class__.__name__}); use runtime='torch'") from exc
    return OnnxRuntime(encoder_path, decoder_path)
