"""The one rule from a saliency map and its coarse mask to box prompts (parameters:
:class:`clipsam.config.MapBoxRule`).

Every pipeline, benchmark and calibration step turns maps into boxes here:

1. the coarse mask's 8-connected components are weighed by the saliency mass they hold;
2. every component holding at least ``keep_fraction`` of the heaviest one's mass is a target
   (several instances, e.g. nuclei or two lesions, need no count from the prompt's wording);
3. with ``peak_fraction`` > 0 a component is tightened to its core: the cells reaching that
   fraction of the component's own peak (a strongly salient target inside a larger, weakly
   salient region, e.g. a fetal head inside the amniotic sac);
4. each target gets its tight box (:mod:`clipsam.postprocess.boxes` convention), heaviest
   first, at most ``max_boxes``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from clipsam.config import MapBoxRule
from clipsam.errors import InputError
from clipsam.postprocess.boxes import mask_to_box
from clipsam.postprocess.components import label_components


def map_boxes(
    coarse: np.ndarray, saliency: np.ndarray, rule: MapBoxRule | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The (H, W) bool mask of the kept targets and their (K, 4) boxes, heaviest first.

    ``coarse`` is the (H, W) bool coarse mask of ``saliency``, an (H, W) float map (higher =
    more likely the target). An empty coarse mask gives an empty mask and K = 0.
    """
    rule = rule or MapBoxRule()
    coarse = np.asarray(coarse, bool)
    saliency = np.asarray(saliency, np.float32)
    if coarse.shape != saliency.shape or coarse.ndim != 2:
        raise InputError(f"coarse mask {coarse.shape} and saliency {saliency.shape} must be "
                         "2-D of one shape")
    labels, areas = label_components(coarse)
    if areas.size == 0:
        return np.zeros_like(coarse), np.zeros((0, 4), np.float32)
    index = np.arange(1, areas.size + 1)
    mass = ndimage.sum(saliency, labels, index)
    order = np.argsort(-mass, kind="stable")
    kept = [i for i in order if mass[i] >= rule.keep_fraction * mass[order[0]]]
    kept = kept[:rule.max_boxes]
    peaks = ndimage.maximum(saliency, labels, index) if rule.peak_fraction > 0 else None
    mask = np.zeros_like(coarse)
    boxes = []
    for i in kept:
        region = labels == i + 1
        if peaks is not None:
            core = region & (saliency >= rule.peak_fraction * peaks[i])
            core_labels, core_areas = label_components(core)
            core_mass = ndimage.sum(saliency, core_labels, np.arange(1, core_areas.size + 1))
            region = core_labels == int(np.argmax(core_mass)) + 1
        mask |= region
        boxes.append(mask_to_box(region))
    return mask, np.asarray(boxes, np.float32).reshape(-1, 4)
