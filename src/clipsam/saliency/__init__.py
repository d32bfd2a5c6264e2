"""Text saliency on CLIP-family ViTs: Grad-CAM, gScoreCAM, M2IB (raw float maps, image size)."""

from clipsam.saliency.compute import METHODS, compute_saliency
from clipsam.saliency.gradcam import GradCamConfig, gradcam
from clipsam.saliency.gscorecam import GScoreCamConfig, gscorecam
from clipsam.saliency.m2ib import M2ibConfig, m2ib

__all__ = [
    "METHODS",
    "GScoreCamConfig",
    "GradCamConfig",
    "M2ibConfig",
    "compute_saliency",
    "gradcam",
    "gscorecam",
    "m2ib",
]
