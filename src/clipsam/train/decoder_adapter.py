"""Training the decoder adapter (:mod:`clipsam.models.sam.prompt_adapter`) on stored embeddings.

Each case is one labelled image with its concept: the stored image embedding, the grounding
model's logit map and text vector of the concept, the box prompts the MedCLIP-SAM pipeline cuts
from that map (:meth:`MedClipSamPipeline.map_prompts`, the same rule users run) and the expert
mask in the decoder's output frame (4g x 4g over the padded input). The boxes' masks are joined
by their per-pixel maximum logit, and Dice + BCE (:func:`weighted_dice_bce`, padding left out)
is taken against the mask. Only the adapter learns; the decoder stays frozen.

Validation compares the adapter with the untrained one (which decodes exactly as box prompts
do) on held-out cases, by Dice of the joined mask in the output frame, per concept; the record
warns when training loss did not fall or validation Dice did not rise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import Sample
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.models.embedding_store import EmbeddingStore
from clipsam.models.grounding.grid import mask_to_grid
from clipsam.models.grounding.model import GroundingModel
from clipsam.models.sam.preprocess import prompt_points
from clipsam.models.sam.prompt_adapter import AdaptedDecoder
from clipsam.models.segmenter import Geometry
from clipsam.pipelines.medclipsam import MedClipSamPipeline
from clipsam.train.seg_losses import weighted_dice_bce


@dataclass(frozen=True)
class AdapterCase:
    """One image and concept: (1, C, g, g) ``features`` (memory-mapped), (g, g) map
    ``logits``, (D,) ``text``, (N, 2, 2) box ``coords`` in input pixels with (N, 2) ``labels``,
    (4g, 4g) bool ``target`` (the mask covers at least half the pixel) and bool ``inside``
    (image content, not padding)."""

    concept: str
    features: np.ndarray
    logits: np.ndarray
    text: np.ndarray
    coords: np.ndarray
    labels: np.ndarray
    target: np.ndarray
    inside: np.ndarray
    subject: str


@dataclass(frozen=True)
class AdapterTraining:
    """``steps`` of one image each, the images in a shuffled order (again after each pass),
    stopped early after ``max_seconds`` of wall time; peak ``learning_rate`` of AdamW on a
    one-cycle schedule; ``max_boxes`` box prompts kept per image (the most salient first, as
    the pipeline lists them); ``seed`` of the order."""

    steps: int = 900
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_boxes: int = 3
    max_seconds: float = 1200.0
    seed: int = 0


def output_frame(mask: np.ndarray, geometry: Geometry, size: int) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """A full-size (H, W) mask as (size, size) bool over the padded input (at least half of
    each pixel covered), and the (size, size) bool image content (not padding)."""
    target = mask_to_grid(mask, geometry, size) >= 0.5
    inside = np.zeros((size, size), bool)
    scale = size / geometry.input_size
    h, w = geometry.resized_size
    inside[:int(np.ceil(h * scale)), :int(np.ceil(w * scale))] = True
    return target, inside


def adapter_cases(samples: Sequence[Sample], keys: Sequence[str], store: EmbeddingStore,
                  model: GroundingModel, pipeline: MedClipSamPipeline,
                  targets: dict[str, str], output_size: int) -> list[AdapterCase]:
    """Cases of ``samples`` (their embedding ``keys`` in ``store``; ``targets``: set name ->
    concept name) with at least one box cut from the concept's map. Images without a target
    are kept (the adapter must learn an empty answer is allowed), images without a box are
    not (nothing to decode)."""
    cases = []
    for sample, key in zip(samples, keys, strict=True):
        concept = targets[sample.set_name]
        embedding = store.load(key, mmap=True)
        image = segmenter_input(read_image(sample.image_path))
        boxes = pipeline.map_prompts(image, embedding, concept).boxes
        if not len(boxes):
            continue
        coords, labels = prompt_points(embedding.geometry, boxes, None, None)
        target, inside = output_frame(read_mask(sample.mask_path), embedding.geometry,
                                      output_size)
        cases.append(AdapterCase(concept, embedding.features, model.logit_map(embedding, concept),
                                 model.text_vector(concept), coords, labels, target, inside,
                                 sample.subject))
    return cases


def _joined_logits(decoder: AdaptedDecoder, case: AdapterCase, max_boxes: int) -> torch.Tensor:
    """(4g, 4g) maximum over the case's first ``max_boxes`` boxes of the adapted logits."""
    logits, _ = decoder.logits(torch.from_numpy(np.asarray(case.features, np.float32)),
                               torch.from_numpy(case.coords[:max_boxes]),
                               torch.from_numpy(case.labels[:max_boxes]),
                               torch.from_numpy(case.logits), torch.from_numpy(case.text))
    return logits.amax(dim=0)


def case_loss(decoder: AdaptedDecoder, case: AdapterCase, max_boxes: int) -> torch.Tensor:
    logits = _joined_logits(decoder, case, max_boxes)[None, None]
    target = torch.from_numpy(case.target.astype(np.float32))[None, None]
    weight = torch.from_numpy(case.inside.astype(np.float32))[None, None]
    return weighted_dice_bce(logits, target, weight)


def frame_dice(prediction: np.ndarray, case: AdapterCase) -> float:
    """Dice of a (4g, 4g) bool mask against the case's mask on image content (1 when both
    are empty)."""
    predicted, reference = prediction & case.inside, case.target & case.inside
    total = predicted.sum() + reference.sum()
    return 1.0 if total == 0 else float(2 * (predicted & reference).sum() / total)


def validate(decoder: AdaptedDecoder, cases: Sequence[AdapterCase],
             max_boxes: int) -> dict[str, float]:
    """Mean Dice per concept (and ``all``: over concepts) of the adapted masks on ``cases``
    with a target."""
    per_concept: dict[str, list[float]] = {}
    decoder.adapter.eval()
    with torch.inference_mode():
        for case in cases:
            if not case.target.any():
                continue
            mask = _joined_logits(decoder, case, max_boxes).numpy() > 0
            per_concept.setdefault(case.concept, []).append(frame_dice(mask, case))
    means = {c: round(float(np.mean(v)), 4) for c, v in sorted(per_concept.items())}
    means["all"] = round(float(np.mean(list(means.values()))), 4) if means else float("nan")
    return means


def train_adapter(decoder: AdaptedDecoder, cases: Sequence[AdapterCase],
                  validation: Sequence[AdapterCase], config: AdapterTraining,
                  log: Callable[[str], None] = print) -> dict:
    """Train ``decoder.adapter`` in place; the record of the run: settings, mean loss per
    epoch, validation Dice per concept before (the untrained adapter: box prompts as they are)
    and after, seconds, and warnings (loss not falling, validation not rising)."""
    if not cases:
        raise ValueError("no training case with a box prompt to train the decoder adapter on")
    before = validate(decoder, validation, config.max_boxes)
    log(f"validation Dice before training (box prompts alone): {before}")
    generator = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    optimiser = torch.optim.AdamW(decoder.adapter.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.learning_rate,
                                                   total_steps=config.steps, pct_start=0.1)
    order = np.concatenate([generator.permutation(len(cases))
                            for _ in range(-(-config.steps // len(cases)))])[:config.steps]
    start, losses, curve, stopped = time.monotonic(), [], [], False
    decoder.adapter.train()
    for step, index in enumerate(order, start=1):
        loss = case_loss(decoder, cases[int(index)], config.max_boxes)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        stopped = time.monotonic() - start > config.max_seconds
        if step % 100 == 0 or step == len(order) or stopped:
            curve.append({"step": step, "loss": round(float(np.mean(losses[-100:])), 4),
                          "seconds": round(time.monotonic() - start, 1)})
            log(f"step {step}/{len(order)}: mean loss of the last 100 {curve[-1]['loss']} "
                f"({curve[-1]['seconds']} s)")
        if stopped:
            break
    after = validate(decoder, validation, config.max_boxes)
    log(f"validation Dice after training: {after}")
    warnings = []
    if curve[-1]["loss"] >= curve[0]["loss"]:
        warnings.append("the training loss did not fall: the adapter did not learn")
    if not after["all"] > before["all"]:
        warnings.append(f"validation Dice did not rise ({before['all']} -> {after['all']}): "
                        "the adapter did not learn anything the box prompts lacked")
    fell = [c for c in before if c != "all" and after.get(c, 0.0) < before[c]]
    if fell:
        warnings.append(f"validation Dice fell below the box prompts' for {', '.join(fell)}")
    for warning in warnings:
        log(f"warning: {warning}")
    return {"training": asdict(config), "steps": len(losses), "stopped_by_time": stopped,
            "seconds": round(time.monotonic() - start, 1), "curve": curve,
            "train_cases": len(cases), "validation_cases": len(validation),
            "validation_dice_box_prompts": before, "validation_dice_adapter": after,
            "warnings": warnings}


LESION_SETS = ("kvasir_polyp", "busi", "lgg_flair", "ddti_thyroid", "isic_skin")


def training_samples(samples: Sequence[Sample], per_organ_set: int, excluded: set[str],
                     seed: int) -> tuple[list[Sample], list[Sample]]:
    """(training, calibration) samples of the train part of the subject split
    (:func:`split_of`), ``excluded`` ("set/subject") left out: calibration subjects
    (:func:`calibration_of`) never reach a gradient step; every lesion set's training images
    are kept, at most ``per_organ_set`` of each other set's (a stable draw), so organs are not
    forgotten at a fraction of the time."""
    from clipsam.io.splits import calibration_of, split_of

    kept = [s for s in samples if split_of(s) == "train"
            and f"{s.set_name}/{s.subject}" not in excluded]
    calibration = [s for s in kept if calibration_of(s)]
    train: list[Sample] = []
    generator = np.random.default_rng(seed)
    for set_name in sorted({s.set_name for s in kept}):
        pool = [s for s in kept if s.set_name == set_name and not calibration_of(s)]
        if set_name not in LESION_SETS and len(pool) > per_organ_set:
            pool = [pool[i] for i in sorted(generator.choice(len(pool), per_organ_set,
                                                             replace=False))]
        train.extend(pool)
    return train, calibration
