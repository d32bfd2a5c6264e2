"""A small trained adapter that lets a text prompt speak to a SAM-family mask decoder.

The decoder stays frozen. For one prompt on one image the adapter reads the image embedding
(C, g, g), the grounding model's logit map of the prompt's concept (g, g) and the concept's text
vector (D,), and returns two corrections in the decoder's own prompt space:

* a dense prompt embedding (C, g, g) added to the decoder's "no mask" embedding, so the decoder
  sees the target at full embedding resolution through its own upsampling;
* a correction (2, C) of the two box-corner tokens of every box prompt cut from the map.

Both output layers start at zero: an untrained adapter decodes exactly as box prompts do, and
training moves it only where the loss does. :class:`AdaptedDecoder` runs the adapter with the
decoder; :func:`load_adapted_decoder` and :func:`save_adapter` keep it in a model folder
(``decoder_adapter.safetensors`` and ``decoder_adapter.json``) tied to the decoder's weight file
by its SHA-256.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from clipsam.errors import WeightsError
from clipsam.io.atomic import write_atomic, write_text_atomic
from clipsam.models.grounding.model import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    ADAPTER_FORMAT,
    ADAPTER_GRAPH,
)
from clipsam.models.sam.model import SamModel

MAP_SCALE = 8.0  # logits are clipped to +-MAP_SCALE and divided by it


@dataclass(frozen=True)
class AdapterConfig:
    """Widths: ``feature_dim`` of the image embedding and the decoder's prompts, ``text_dim``
    of the concept vectors, ``reduced`` channels the embedding is projected to, ``hidden``
    channels of the dense branch."""

    feature_dim: int = 256
    text_dim: int = 384
    reduced: int = 32
    hidden: int = 64


class PromptAdapter(nn.Module):
    """(B, C, g, g) features, (B, 1, g, g) map logits, (B, D) text -> (B, C, g, g) dense prompt
    correction and (B, 2, C) box-corner token correction (both zero before training)."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        c, r, h = config.feature_dim, config.reduced, config.hidden
        self.reduce = nn.Conv2d(c, r, kernel_size=1)
        self.mix = nn.Conv2d(r + 2, h, kernel_size=3, padding=1)
        self.film = nn.Linear(config.text_dim, 2 * h)
        self.refine = nn.Conv2d(h, h, kernel_size=3, padding=1)
        self.dense_out = nn.Conv2d(h, c, kernel_size=1)
        self.corner = nn.Sequential(nn.Linear(config.text_dim + h, h), nn.GELU(),
                                    nn.Linear(h, 2 * c))
        for layer in (self.dense_out, self.corner[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor, map_logits: torch.Tensor,
                text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        clipped = map_logits.clamp(-MAP_SCALE, MAP_SCALE)
        maps = torch.cat([clipped / MAP_SCALE, torch.sigmoid(clipped)], dim=1)
        x = nn.functional.gelu(self.mix(torch.cat([self.reduce(features), maps], dim=1)))
        scale, shift = self.film(text).chunk(2, dim=-1)
        x = x * (1 + scale[..., None, None]) + shift[..., None, None]
        x = nn.functional.gelu(self.refine(x))
        weights = torch.softmax(clipped.flatten(1), dim=1).unsqueeze(1)  # (B, 1, g*g)
        pooled = (x.flatten(2) * weights).sum(-1)  # where the map points, (B, hidden)
        corners = self.corner(torch.cat([text, pooled], dim=-1))
        return self.dense_out(x), corners.reshape(len(text), 2, self.config.feature_dim)


class AdaptedDecoder:
    """A SAM-family network's prompt encoder and frozen mask decoder with a
    :class:`PromptAdapter`; box prompts plus the prompt's map and text vector in, masks out."""

    def __init__(self, model: SamModel, adapter: PromptAdapter, name: str,
                 record: dict | None = None) -> None:
        self.model = model.eval()
        self.adapter = adapter
        self.name = name
        self.record = dict(record or {})
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    def logits(self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
               map_logits: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C, g, g) features, (N, 2, 2) box corners in input pixels with their (N, 2)
        labels, (g, g) map logits, (D,) text -> (N, 4g, 4g) mask logits of the single-mask
        output and its (N,) IoU estimates."""
        dense, corners = self.adapter(features, map_logits[None, None], text[None])
        encoder = self.model.prompt_encoder
        sparse = encoder.embed_points(coords, labels) + corners
        masks, iou = self.model.mask_decoder(features, encoder.dense_positions(), sparse,
                                             encoder.no_mask() + dense)
        return masks[:, 0], iou[:, 0]


class AdaptedGraph(nn.Module):
    """:meth:`AdaptedDecoder.logits` as a module to export to ONNX."""

    def __init__(self, decoder: AdaptedDecoder) -> None:
        super().__init__()
        self.model = decoder.model
        self.adapter = decoder.adapter
        self.decoder = decoder

    def forward(self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
                map_logits: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder.logits(features, coords, labels, map_logits, text)


def export_graph(decoder: AdaptedDecoder, target: Path, opset: int = 17) -> None:
    """Write the adapted decoder (adapter, prompt encoder, mask decoder) as one ONNX graph
    with a dynamic number of boxes, atomically: what the pipeline runs, without torch."""
    import warnings

    from clipsam.io.atomic import atomic_path

    grid, dim = decoder.model.arch.grid_size, decoder.model.arch.prompt_dim
    example = (torch.zeros(1, dim, grid, grid), torch.zeros(2, 2, 2),
               torch.tensor([[2.0, 3.0], [2.0, 3.0]]), torch.zeros(grid, grid),
               torch.zeros(decoder.adapter.config.text_dim))
    with atomic_path(target) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(AdaptedGraph(decoder).eval(), example, str(tmp),
                          input_names=["features", "coords", "labels", "map_logits", "text"],
                          output_names=["masks", "iou"], opset_version=opset,
                          dynamic_axes={"coords": {0: "boxes"}, "labels": {0: "boxes"},
                                        "masks": {0: "boxes"}, "iou": {0: "boxes"}},
                          dynamo=False)


def save_adapter(folder: Path, decoder: AdaptedDecoder, checkpoint_sha256: str,
                 record: dict) -> Path:
    """Write the adapter's weights, its config (widths, the decoder's name and weight-file
    hash, and ``record``: how it was trained and validated) and the ONNX graph of the adapted
    decoder into ``folder``, each atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    adapter = decoder.adapter
    tensors = {k: v.detach().contiguous().clone() for k, v in adapter.state_dict().items()}
    write_atomic(folder / ADAPTER_FILE, lambda p: save_file(tensors, str(p)))
    graph = folder / ADAPTER_GRAPH
    export_graph(decoder, graph)
    config = {"format": ADAPTER_FORMAT, "version": 1, "adapter": asdict(adapter.config),
              "segmenter": decoder.name, "segmenter_sha256": checkpoint_sha256,
              "record": record}
    write_text_atomic(folder / ADAPTER_CONFIG, json.dumps(config, indent=1) + "\n")
    return folder / ADAPTER_FILE


def has_adapter(folder: Path) -> bool:
    return all((Path(folder) / name).is_file() for name in (ADAPTER_FILE, ADAPTER_CONFIG))


def load_adapted_decoder(folder: Path, model: SamModel, checkpoint_sha256: str,
                         name: str) -> AdaptedDecoder:
    """The adapter saved in ``folder`` with ``model``'s decoder; refuses an adapter trained
    for another decoder weight file."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not has_adapter(folder):
        raise WeightsError(f"{folder} holds no decoder adapter ({ADAPTER_FILE}, "
                           f"{ADAPTER_CONFIG})")
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if config.get("format") != ADAPTER_FORMAT:
        raise WeightsError(f"{folder / ADAPTER_CONFIG} is not a {ADAPTER_FORMAT} config")
    if config.get("segmenter_sha256") != checkpoint_sha256:
        raise WeightsError(f"the decoder adapter in {folder} was trained for another "
                           f"{config.get('segmenter')} weight file")
    adapter = PromptAdapter(AdapterConfig(**config["adapter"]))
    adapter.load_state_dict(load_file(str(folder / ADAPTER_FILE)), strict=True)
    return AdaptedDecoder(model, adapter.eval(), name, config.get("record"))

