"""SAM-family promptable segmenters (LiteMedSAM, SAM ViT-B/L/H, MedSAM) in PyTorch and ONNX
Runtime, written for clipsam and loading the official checkpoints."""

from clipsam.models.sam.factory import (
    LITEMEDSAM,
    SAM_ARCHITECTURES,
    load_litemedsam,
    load_sam,
    segmenter_from_checkpoint,
)
from clipsam.models.sam.segmenter import SamSegmenter

__all__ = ["LITEMEDSAM", "SAM_ARCHITECTURES", "SamSegmenter", "load_litemedsam", "load_sam",
           "segmenter_from_checkpoint"]
