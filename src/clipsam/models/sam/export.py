"""Export a SAM-family network to the ONNX graphs :class:`~clipsam.models.sam.runtime.
OnnxRuntime` runs (image encoder; decoder; decoder with a mask input, made when first needed),
written atomically into the cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from clipsam.io.atomic import atomic_path
from clipsam.models.sam.model import MaskedPromptDecoder, PromptDecoder, SamModel


def export_encoder(model: SamModel, target: Path, opset: int) -> None:
    """Write the image encoder graph atomically (a killed export leaves no file)."""
    size = model.arch.input_size
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.image_encoder, (torch.zeros(1, 3, size, size),), str(tmp),
                          input_names=["image"], output_names=["features"],
                          opset_version=opset, dynamo=False)


def export_decoder(model: SamModel, target: Path, opset: int) -> None:
    """Write the prompt-encoder + mask-decoder graph (dynamic prompts and points) atomically."""
    grid, dim = model.arch.grid_size, model.arch.prompt_dim
    example = (torch.zeros(1, dim, grid, grid), torch.zeros(2, 2, 2),
               torch.tensor([[2.0, 3.0], [2.0, 3.0]]))
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(PromptDecoder(model), example, str(tmp),
                          input_names=["features", "coords", "labels"],
                          output_names=["masks", "iou"], opset_version=opset,
                          dynamic_axes={"coords": {0: "prompts", 1: "points"},
                                        "labels": {0: "prompts", 1: "points"},
                                        "masks": {0: "prompts"}, "iou": {0: "prompts"}},
                          dynamo=False)


def export_masked_decoder(model: SamModel, target: Path, opset: int) -> None:
    """Write the decoder graph that also takes (N, 1, 4g, 4g) mask logits of a previous round
    (``SamModel.decode``'s ``mask_input``) atomically."""
    grid, dim = model.arch.grid_size, model.arch.prompt_dim
    example = (torch.zeros(1, dim, grid, grid), torch.zeros(2, 2, 2),
               torch.tensor([[2.0, 3.0], [2.0, 3.0]]), torch.zeros(2, 1, 4 * grid, 4 * grid))
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(MaskedPromptDecoder(model), example, str(tmp),
                          input_names=["features", "coords", "labels", "mask_input"],
                          output_names=["masks", "iou"], opset_version=opset,
                          dynamic_axes={"coords": {0: "prompts", 1: "points"},
                                        "labels": {0: "prompts", 1: "points"},
                                        "mask_input": {0: "prompts"},
                                        "masks": {0: "prompts"}, "iou": {0: "prompts"}},
                          dynamo=False)
