"""How a SAM-family network runs: the :class:`Runtime` protocol, and ONNX Runtime on graphs
exported once into the per-user cache (image encoder; prompt encoder + mask decoder with a
dynamic number of prompts). Once the graphs are cached this path needs no torch; the PyTorch
runtime is :mod:`clipsam.models.sam.torch_runtime`, the export :mod:`clipsam.models.sam.export`."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from clipsam.errors import WeightsError
from clipsam.models.onnx_session import CPU_PROVIDER, onnx_session
from clipsam.models.weights import cache_dir, sha256_of

if TYPE_CHECKING:
    from clipsam.models.sam.model import SamModel

ONNX_OPSET = 17
GRAPH_REVISION = 2  # bump when the exported graphs change for the same checkpoint


class Runtime(Protocol):
    """Runs the network on preprocessed numpy arrays.

    ``device`` is where it actually runs ("cpu", "cuda:0"...), ``provider`` the ONNX Runtime
    execution provider (None for torch), ``files`` the exported graphs it reads (if any).
    """

    name: str
    device: str
    provider: str | None
    files: tuple[Path, ...]

    def encode(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, S, S) float32 -> (1, C, g, g) float32 features."""
        ...

    def decode(self, features: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features, (N, P, 2) input-frame points, (N, P) labels -> (N, M, 4g, 4g) logits and
        (N, M) IoU estimates for all M decoder outputs."""
        ...

    def decode_masked(self, features: np.ndarray, coords: np.ndarray, labels: np.ndarray,
                      mask_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`decode` with (N, 1, 4g, 4g) mask logits of a previous round as a dense
        prompt."""
        ...


class OnnxRuntime:
    """The exported graphs in ONNX Runtime sessions on ``device``.

    ``provider`` is the execution provider the sessions actually run on; a CUDA session that
    ONNX Runtime could not start is an error, not a silent CPU run.
    """

    name = "onnx"

    def __init__(self, encoder_path: Path, decoder_path: Path, threads: int | None = None,
                 device: str = "cpu", masked_graph: Callable[[], Path] | None = None) -> None:
        self.encoder = onnx_session(encoder_path, device, threads)
        self.decoder = onnx_session(decoder_path, device, threads)
        self.provider = self.encoder.get_providers()[0]
        self.device = "cpu" if self.provider == CPU_PROVIDER else "cuda"
        self.files = (Path(encoder_path), Path(decoder_path))
        self._threads, self._masked_graph, self._masked = threads, masked_graph, None

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"image": image})[0]

    def decode(self, features: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks, iou = self.decoder.run(None, {"features": features, "coords": coords,
                                             "labels": labels})
        return masks, iou

    def decode_masked(self, features: np.ndarray, coords: np.ndarray, labels: np.ndarray,
                      mask_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._masked is None:  # its session starts on first use: most runs never need it
            if self._masked_graph is None:
                raise WeightsError("this ONNX runtime has no decoder graph with a mask input")
            self._masked = onnx_session(self._masked_graph(), self.device, self._threads)
        masks, iou = self._masked.run(None, {"features": features, "coords": coords,
                                             "labels": labels, "mask_input": mask_logits})
        return masks, iou


def onnx_paths(model_name: str, checkpoint: Path) -> tuple[Path, Path, Path]:
    """Cache paths of the encoder, decoder and masked-decoder graphs, keyed by checkpoint
    hash, clipsam version, opset and graph revision."""
    version = importlib.metadata.version("clipsam")
    key = (f"{model_name}-{sha256_of(checkpoint)[:16]}-clipsam{version}-opset{ONNX_OPSET}"
           f"-r{GRAPH_REVISION}")
    folder = cache_dir() / "onnx"
    encoder, decoder, masked = (folder / f"{key}-{part}.onnx"
                                for part in ("encoder", "decoder", "decoder-mask"))
    return encoder, decoder, masked


def onnx_runtime(build_model: Callable[[], SamModel], model_name: str, checkpoint: Path,
                 device: str = "cpu", threads: int | None = None) -> OnnxRuntime:
    """ONNX Runtime sessions for ``model_name`` on ``device``; the graphs are exported from
    ``build_model()`` (which loads the checkpoint in torch) only when they are not cached."""
    encoder_path, decoder_path, masked_path = onnx_paths(model_name, checkpoint)
    if not (encoder_path.exists() and decoder_path.exists()):
        from clipsam.models.sam import export

        model = build_model()
        try:
            if not encoder_path.exists():
                export.export_encoder(model, encoder_path, ONNX_OPSET)
            if not decoder_path.exists():
                export.export_decoder(model, decoder_path, ONNX_OPSET)
        except (RuntimeError, ValueError, OSError) as exc:
            raise WeightsError(f"ONNX export of {model_name} to {encoder_path.parent} failed "
                               f"({exc.__class__.__name__}); use runtime='torch'") from exc

    def masked_graph() -> Path:
        if not masked_path.exists():
            from clipsam.models.sam import export

            try:
                export.export_masked_decoder(build_model(), masked_path, ONNX_OPSET)
            except (RuntimeError, ValueError, OSError) as exc:
                raise WeightsError(f"ONNX export of {model_name}'s masked decoder to "
                                   f"{masked_path.parent} failed ({exc.__class__.__name__}); "
                                   "use runtime='torch'") from exc
        return masked_path

    return OnnxRuntime(encoder_path, decoder_path, threads=threads, device=device,
                       masked_graph=masked_graph)
