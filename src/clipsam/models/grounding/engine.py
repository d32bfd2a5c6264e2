"""How the grounding heads run at inference: as the torch module, or as two ONNX graphs (patch
head, text projection) exported once into the per-user cache, so the default path needs no
torch. Both return numpy; the cosine-to-logit calibration is two numbers applied in numpy.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from clipsam.errors import InputError, WeightsError
from clipsam.models.weights import cache_dir, sha256_of

if TYPE_CHECKING:
    from clipsam.models.grounding.heads import GroundingHeads

ONNX_OPSET = 17
GRAPH_REVISION = 1  # bump when the exported graphs change for the same heads file


class HeadsEngine(Protocol):
    """The trained heads as numpy functions; ``device`` is where they run, ``provider`` the ONNX
    Runtime execution provider (None for torch), ``files`` the graphs read (if any)."""

    name: str
    device: str
    provider: str | None
    files: tuple[Path, ...]
    scale: float
    bias: float

    def patch(self, features: np.ndarray) -> np.ndarray:
        """(1, C, h, w) segmenter features -> (D, h, w) unit patch vectors."""
        ...

    def text(self, sentences: np.ndarray) -> np.ndarray:
        """(T, text_dim) sentence embeddings -> (T, D) unit text vectors."""
        ...


class TorchHeads:
    """The heads module itself (training, adaptation, torch devices)."""

    name = "torch"
    provider = None
    files: tuple[Path, ...] = ()

    def __init__(self, heads: GroundingHeads) -> None:
        from clipsam.models.device import module_device

        self.heads = heads.eval()
        self.device = module_device(heads)

    @property
    def scale(self) -> float:
        return float(self.heads.log_scale.detach().exp())

    @property
    def bias(self) -> float:
        return float(self.heads.bias.detach())

    def patch(self, features: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.asarray(features, np.float32)).to(self.device)
            return self.heads.patch(tensor)[0].cpu().numpy()

    def text(self, sentences: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.asarray(sentences, np.float32)).to(self.device)
            return self.heads.text(tensor).cpu().numpy()


class OnnxHeads:
    """The exported patch head and text projection in ONNX Runtime sessions."""

    name = "onnx"

    def __init__(self, patch_path: Path, text_path: Path, scale: float, bias: float,
                 device: str = "cpu", threads: int | None = None) -> None:
        from clipsam.models.onnx_session import CPU_PROVIDER, onnx_session

        self._patch = onnx_session(patch_path, device, threads)
        self._text = onnx_session(text_path, device, threads)
        self.provider = self._patch.get_providers()[0]
        self.device = "cpu" if self.provider == CPU_PROVIDER else "cuda"
        self.files = (Path(patch_path), Path(text_path))
        self.scale, self.bias = float(scale), float(bias)

    def patch(self, features: np.ndarray) -> np.ndarray:
        expected = tuple(self._patch.get_inputs()[0].shape)
        if tuple(features.shape) != expected:
            raise InputError(f"the exported grounding heads read {expected} features, got "
                             f"{tuple(features.shape)}")
        return self._patch.run(None, {"features": np.asarray(features, np.float32)})[0][0]

    def text(self, sentences: np.ndarray) -> np.ndarray:
        return self._text.run(None, {"sentences": np.asarray(sentences, np.float32)})[0]


def heads_graph_paths(heads_file: Path) -> tuple[Path, Path]:
    """Cache paths of the patch and text graphs, keyed by the heads file's hash, clipsam
    version, opset and graph revision."""
    version = importlib.metadata.version("clipsam")
    key = (f"grounding-{sha256_of(heads_file)[:16]}-clipsam{version}-opset{ONNX_OPSET}"
           f"-r{GRAPH_REVISION}")
    folder = cache_dir() / "onnx"
    return folder / f"{key}-patch.onnx", folder / f"{key}-text.onnx"


def export_heads(heads: GroundingHeads, patch_path: Path, text_path: Path,
                 grid: int = 64) -> None:
    """Write both graphs atomically (batch and text count dynamic; the grid fixed)."""
    import torch

    from clipsam.io.atomic import atomic_path

    config = heads.config
    heads = heads.eval().cpu()
    with atomic_path(patch_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(heads.patch, (torch.zeros(1, config.feature_dim, grid, grid),),
                          str(tmp), input_names=["features"], output_names=["patches"],
                          opset_version=ONNX_OPSET, dynamo=False)
    with atomic_path(text_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(heads.text, (torch.zeros(2, config.text_dim),), str(tmp),
                          input_names=["sentences"], output_names=["vectors"],
                          dynamic_axes={"sentences": {0: "texts"}, "vectors": {0: "texts"}},
                          opset_version=ONNX_OPSET, dynamo=False)


def onnx_heads(heads_file: Path, load_heads: Callable[[], GroundingHeads], scale: float,
               bias: float,
               device: str = "cpu", threads: int | None = None) -> OnnxHeads:
    """ONNX Runtime heads for ``heads_file``; ``load_heads()`` builds the torch module only
    when the graphs are not cached yet."""
    patch_path, text_path = heads_graph_paths(heads_file)
    if not (patch_path.exists() and text_path.exists()):
        try:
            export_heads(load_heads(), patch_path, text_path)
        except (RuntimeError, ValueError, OSError) as exc:
            raise WeightsError(f"ONNX export of the grounding heads {heads_file} failed "
                               f"({exc.__class__.__name__}); use runtime 'torch'") from exc
    return OnnxHeads(patch_path, text_path, scale, bias, device, threads)
