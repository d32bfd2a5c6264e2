"""The adapted decoder (:mod:`clipsam.models.sam.prompt_adapter`) in ONNX Runtime: the graph
saved in a grounding model folder, run without torch on box prompts of one text prompt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clipsam.errors import WeightsError
from clipsam.models.grounding.model import ADAPTER_CONFIG, ADAPTER_FORMAT, ADAPTER_GRAPH
from clipsam.models.onnx_session import onnx_session
from clipsam.models.sam.preprocess import prompt_points
from clipsam.models.segmenter import ImageEmbedding, MaskPrediction


class OnnxAdaptedDecoder:
    """The graph ``folder/decoder_adapter.onnx`` for segmenter ``name``; ``record`` is how the
    adapter was trained (its config's ``record``)."""

    def __init__(self, folder: Path, name: str, record: dict, threads: int | None = None) -> None:
        self.path = Path(folder) / ADAPTER_GRAPH
        self.session = onnx_session(self.path, "cpu", threads)
        self.name = name
        self.record = record

    def predict(self, embedding: ImageEmbedding, boxes: np.ndarray, map_logits: np.ndarray,
                text: np.ndarray) -> MaskPrediction:
        """Masks of (N, 4) xyxy boxes in original pixels for one prompt (its (g, g) logit map
        and (D,) text vector), as a segmenter's ``predict`` returns them."""
        if embedding.model_name != self.name:
            raise WeightsError(f"the decoder adapter was trained for {self.name}, the embedding "
                               f"is {embedding.model_name}'s")
        geometry = embedding.geometry
        coords, labels = prompt_points(geometry, np.asarray(boxes, np.float32), None, None)
        low_res, iou = self.session.run(None, {
            "features": np.ascontiguousarray(embedding.features, np.float32),
            "coords": coords, "labels": labels,
            "map_logits": np.ascontiguousarray(map_logits, np.float32),
            "text": np.ascontiguousarray(text, np.float32)})
        low_res = np.ascontiguousarray(low_res, np.float32)
        return MaskPrediction(masks=geometry.grid_to_original(low_res) > 0,
                              low_res_logits=low_res, scores=np.asarray(iou, np.float32))


class PromptedDecoder:
    """An adapted decoder bound to one prompt's map and text vector: decodes boxes as a
    segmenter does (``predict(embedding, boxes=...)``), for the pipeline's box steps."""

    def __init__(self, decoder: OnnxAdaptedDecoder, map_logits: np.ndarray,
                 text: np.ndarray) -> None:
        self.decoder = decoder
        self.map_logits = map_logits
        self.text = text

    def predict(self, embedding: ImageEmbedding, boxes: np.ndarray | None = None,
                points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None) -> MaskPrediction:
        if boxes is None or points is not None:
            raise WeightsError("the decoder adapter decodes box prompts only")
        return self.decoder.predict(embedding, boxes, self.map_logits, self.text)


_LOADED: dict[tuple[Path, int, int | None], OnnxAdaptedDecoder] = {}


def adapted_decoder(folder: Path, threads: int | None = None) -> OnnxAdaptedDecoder:
    """The adapted decoder of the grounding model ``folder``, loaded once per folder, graph
    version and thread count; refuses one trained for another LiteMedSAM weight file."""
    from clipsam.models.sam.factory import segmenter_checkpoint
    from clipsam.models.weights import sha256_of

    folder = Path(folder).resolve()
    graph, config_path = folder / ADAPTER_GRAPH, folder / ADAPTER_CONFIG
    if not graph.is_file() or not config_path.is_file():
        raise WeightsError(f"{folder} holds no decoder adapter ({ADAPTER_GRAPH}, "
                           f"{ADAPTER_CONFIG})")
    key = (folder, graph.stat().st_mtime_ns, threads)
    if key not in _LOADED:
        config = json.loads(config_path.read_text())
        if config.get("format") != ADAPTER_FORMAT:
            raise WeightsError(f"{config_path} is not a {ADAPTER_FORMAT} config")
        name = config.get("segmenter")
        if name != "litemedsam" or config.get("segmenter_sha256") != sha256_of(
                segmenter_checkpoint("litemedsam")):
            raise WeightsError(f"the decoder adapter in {folder} was trained for another "
                               f"segmenter weight file ({name})")
        _LOADED[key] = OnnxAdaptedDecoder(folder, name, config.get("record", {}), threads)
    return _LOADED[key]
