"""The SAM-family network as a torch module: the runtime for SAM ViTs, training and devices that
ONNX Runtime cannot use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clipsam.models.device import module_device, use_torch_threads
from clipsam.models.sam.model import SamModel


class TorchRuntime:
    """The network as a torch module on ``device`` ("cpu" or "cuda"); numpy in and out.
    ``threads`` sets torch's intra-op threads (process-wide) when given."""

    name = "torch"
    provider = None
    files: tuple[Path, ...] = ()

    def __init__(self, model: SamModel, device: str = "cpu", threads: int | None = None) -> None:
        use_torch_threads(threads)
        self.model = model.to(device)
        self.device = module_device(self.model)

    def encode(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model.encode(torch.from_numpy(image).to(self.device)).cpu().numpy()

    def decode(self, features: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = [torch.from_numpy(a).to(self.device) for a in (features, coords, labels)]
        with torch.inference_mode():
            masks, iou = self.model.decode(*inputs)
        return masks.cpu().numpy(), iou.cpu().numpy()

    def decode_masked(self, features: np.ndarray, coords: np.ndarray, labels: np.ndarray,
                      mask_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = [torch.from_numpy(a).to(self.device)
                  for a in (features, coords, labels, mask_logits)]
        with torch.inference_mode():
            masks, iou = self.model.decode(*inputs[:3], mask_input=inputs[3])
        return masks.cpu().numpy(), iou.cpu().numpy()
