"""One entry point for text saliency: pick a method by name, configure it by keywords."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from clipsam.errors import InputError
from clipsam.models.image_text import SaliencyCapable
from clipsam.saliency.gradcam import GradCamConfig, gradcam
from clipsam.saliency.gscorecam import GScoreCamConfig, gscorecam
from clipsam.saliency.m2ib import M2ibConfig, m2ib

METHODS: dict[str, tuple[Callable[..., np.ndarray], type]] = {
    "gradcam": (gradcam, GradCamConfig),
    "gscorecam": (gscorecam, GScoreCamConfig),
    "m2ib": (m2ib, M2ibConfig),
}


def compute_saliency(
    model: SaliencyCapable, image: np.ndarray, texts: str | Sequence[str],
    method: str = "gscorecam", **cfg: object,
) -> np.ndarray:
    """(H, W) float32 raw saliency of ``texts`` (averaged if several) on ``image``."""
    if not isinstance(model, SaliencyCapable):
        raise InputError(f"{getattr(model, 'name', type(model).__name__)} cannot explain images "
                         "with gradients (not SaliencyCapable)")
    try:
        function, config_type = METHODS[method]
    except KeyError:
        raise InputError(f"unknown saliency method {method!r}; choose one of "
                         f"{', '.join(sorted(METHODS))}") from None
    try:
        config = config_type(**cfg)
    except TypeError as exc:
        raise InputError(f"bad option for {method}: {exc}") from None
    return function(model, image, texts, config)
