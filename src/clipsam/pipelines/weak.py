"""``method="weak"``: segment with a network trained on the cascade's pseudo-masks.

The model folder comes from ``clipsam weak-train``. The image is resized to the network's
input, the ensemble's mean probability is resized back to the original size and thresholded at
0.5; an empty result means "not found". The network was trained for one prompt: it ignores the
prompt it is given (an empty one is fine, a different one raises a warning) and any segmenter
embedding.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from clipsam.models.segmenter import ImageEmbedding
from clipsam.models.weak_net import WeakModel
from clipsam.pipelines.base import PipelineResult
from clipsam.postprocess.boxes import mask_to_box

THRESHOLD = 0.5


class WeakPipeline:
    """A trained weak-supervision model folder as a :class:`~clipsam.pipelines.base.Pipeline`.

    With ``keep_intermediates`` the result carries the ensemble's ``probability``, its
    ``uncertainty`` (predictive entropy in bits) and ``member_std``, all (H, W) float32.
    """

    name = "weak"

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        self.model = WeakModel(model_dir, device)
        self.trained_prompt = self.model.config.prompt

    def run(
        self,
        image: np.ndarray,
        prompt: str,
        embedding: ImageEmbedding | None = None,
        keep_intermediates: bool = False,
    ) -> PipelineResult:
        if prompt.strip() and prompt.strip().lower() != self.trained_prompt.strip().lower():
            warnings.warn(f"the weak model in {self.model.model_dir} was trained for "
                          f"{self.trained_prompt!r}, not {prompt!r}", stacklevel=2)
        start = time.perf_counter()
        prediction = self.model.predict(np.asarray(image))
        mask = prediction.probability > THRESHOLD
        box = mask_to_box(mask)
        found = box is not None
        scores = (np.array([prediction.probability[mask].mean()], np.float32) if found
                  else np.zeros(0, np.float32))
        intermediates = ({"probability": prediction.probability,
                          "uncertainty": prediction.uncertainty,
                          "member_std": prediction.member_std} if keep_intermediates else {})
        return PipelineResult(
            mask=mask, found=found, scores=scores, prompt=prompt, method=self.name,
            boxes=np.zeros((0, 4), np.float32) if box is None else box[None],
            timings={"network": time.perf_counter() - start}, intermediates=intermediates)
