"""Configuration shared by the CLI, the Python API and the server: frozen dataclasses only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from clipsam.errors import InputError

SEGMENTERS = ("litemedsam", "sam-vit-b", "sam-vit-l", "sam-vit-h", "medsam-vit-b")
RUNTIMES = ("auto", "onnx", "torch")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelConfig:
    """Which models a run loads.

    ``text_model`` is ``"builtin"`` (the grounding model shipped with clipsam), a folder written
    by ``clipsam finetune``/``clipsam adapt``, or a CLIP-family name (``clip-vit-l14``,
    ``biomedclip``...). ``runtime="auto"`` is ONNX Runtime for LiteMedSAM when it can run on the
    device, else PyTorch. ``device`` is where every model runs: ``"auto"`` (CUDA when torch
    sees a CUDA device, else the CPU), ``"cpu"`` or ``"cuda"`` (an error on a machine without
    one; :func:`clipsam.models.device.resolve_device`). Records name the runtime and device the
    loaded models actually use. ``embedding_cache``: a folder keeping image embeddings across
    runs (:mod:`clipsam.models.embedding_store`), exact, so it changes no result. ``threads``:
    intra-op threads of the models (default: every core this process may use).
    """

    segmenter: str = "litemedsam"
    runtime: str = "auto"
    device: str = "auto"
    text_model: str = "builtin"
    weights_dir: Path | None = None
    embedding_cache: Path | None = None
    threads: int | None = None


PromptKind = Literal["auto", "points", "boxes"]
BoxSource = Literal["features", "grid"]


@dataclass(frozen=True)
class FeatureBoxConfig:
    """Boxes around distinct regions of the encoder's features
    (:func:`clipsam.proposals.feature_boxes.feature_boxes`).

    ``clusters``: k of each k-means run (coarse to fine), on the unit feature vectors projected
    onto their first ``components`` principal axes (all of them if None: slower, no better on
    220 training images of 11 sets); connected regions of at least ``min_cells`` feature-grid
    cells, whose box is at least ``min_side`` cells on each side (thinner ones are the encoder's
    border strips) and covering at most ``max_share`` of the image's cells (larger ones are
    background), are ranked by distinctness against the rest of their box grown by ``ring``
    cells; at most ``max_boxes`` boxes, most distinct first, after dropping boxes that overlap
    a more distinct one by more than ``merge_iou``. Each box costs a decoder pass; ``max_boxes``
    was chosen among 6, 8, 12 and 48 on calibration subjects by ``scripts/choose_settings.py``
    (docs/results/choices/salip_max_boxes; BENCHMARKS.md, "Settings chosen for every
    concept")."""

    clusters: tuple[int, ...] = (2, 3, 4, 6, 8, 12)
    components: int | None = 32
    min_cells: int = 4
    min_side: int = 3
    max_share: float = 0.5
    ring: int = 3
    max_boxes: int = 48
    merge_iou: float = 0.7
    iterations: int = 15
    seed: int = 0


@dataclass(frozen=True)
class BoxGridConfig:
    """Multi-scale box tiling for box-only segmenters.

    For each ``size`` (side of a square box as a fraction of the image's shorter side) and each
    ``aspect_ratio`` (width / height, same area), boxes are tiled evenly from edge to edge so
    that neighbours overlap by at least ``overlap`` of the box side.
    """

    sizes: tuple[float, ...] = (0.2, 0.35, 0.5, 0.7)
    aspect_ratios: tuple[float, ...] = (1.0,)
    overlap: float = 0.5


@dataclass(frozen=True)
class ProposalConfig:
    """How proposals are generated and filtered.

    Point-grid defaults are SAM's ``SamAutomaticMaskGenerator`` defaults (points_per_side 32,
    points_per_batch 64, pred_iou_thresh 0.88, stability_score_thresh 0.95,
    stability_score_offset 1.0, box_nms_thresh 0.7, min_mask_region_area 0) and the SA-1B
    filter that drops masks covering more than 95 % of the image.

    ``prompts``: ``"auto"`` uses points when the segmenter supports them, else boxes;
    ``box_source``: boxes around feature regions (``feature_boxes``) or a ``box_grid``.
    ``nms``: ``"box"`` (SAM) compares the masks' tight boxes, ``"mask"`` the masks themselves.
    ``min_region_fraction``: islands and holes smaller than this share of the image are removed
    from each kept mask (SAM's ``min_mask_region_area``, relative to the image here).
    ``box_margins``: box prompts are decoded once per margin, each side grown by that fraction
    of the box's side (0: the box itself).
    """

    prompts: PromptKind = "auto"
    points_per_side: int = 32
    box_source: BoxSource = "features"
    feature_boxes: FeatureBoxConfig = field(default_factory=FeatureBoxConfig)
    box_grid: BoxGridConfig = field(default_factory=BoxGridConfig)
    batch_size: int = 64
    pred_iou_threshold: float = 0.88
    stability_threshold: float = 0.95
    stability_offset: float = 1.0
    mask_threshold: float = 0.0
    nms: Literal["box", "mask"] = "box"
    nms_threshold: float = 0.7
    max_area_fraction: float = 0.95
    min_region_fraction: float = 0.0
    box_margins: tuple[float, ...] = (0.0,)


@dataclass(frozen=True)
class SalipConfig:
    """SaLIP (Aleem et al., CVPRW 2024): proposals -> area filter -> crop retrieval -> box -> SAM.

    Label-free defaults (the paper tunes its area threshold per data set on test labels).
    ``top_k``: at most this many proposals; None: with CLIP crops as many as the prompt names
    ("left and right lungs" -> 2), with the built-in model the proposals whose union best
    matches the map (:func:`clipsam.pipelines.salip.select_regions`).
    ``crop`` is how a proposal is shown to a CLIP backend: ``masked`` (the paper: the mask's pixels,
    cut to its box), ``box`` (the unmasked box) or ``enlarged`` (the box grown by ``enlarge``).
    ``min_map_share``: with the built-in model, box prompts holding less than this share of
    the mass of the text map's core (cells reaching half its peak) are not decoded (their
    masks could not be retrieved); 0 decodes all. ``use_prompt_library``: CLIP crops are
    scored against the mean embedding of the prompt and its library's descriptive sentences
    (the paper's averaged prompts), else the prompt alone; the built-in model's map always
    reads the prompt alone.
    """

    max_area_fraction: float = 0.6
    min_area_fraction: float = 0.002
    top_k: int | None = None
    crop: str = "masked"
    enlarge: float = 1.25
    use_prompt_library: bool = True
    min_map_share: float = 0.02
    proposals: ProposalConfig | None = None


@dataclass(frozen=True)
class MapBoxRule:
    """How a saliency map's coarse mask becomes targets and boxes
    (:func:`clipsam.postprocess.map_boxes.map_boxes`): components holding at least
    ``keep_fraction`` of the heaviest one's saliency mass are targets; with ``peak_fraction``
    > 0 each is tightened to the cells reaching that fraction of its own peak; at most
    ``max_boxes``, heaviest first. The defaults (every component, no tightening) were chosen
    on calibration subjects by ``scripts/choose_settings.py`` (docs/results/choices/map_box_rule;
    BENCHMARKS.md, "Settings chosen for every concept")."""

    keep_fraction: float = 0.0
    peak_fraction: float = 0.0
    max_boxes: int = 32

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep_fraction <= 1.0 or not 0.0 <= self.peak_fraction < 1.0:
            raise ValueError("keep_fraction must be in [0, 1] and peak_fraction in [0, 1)")
        if self.max_boxes < 1:
            raise ValueError(f"max_boxes must be at least 1, got {self.max_boxes}")


@dataclass(frozen=True)
class MedClipSamConfig:
    """MedCLIP-SAM (Koleilat et al., MICCAI 2024) and v2: saliency -> coarse mask -> box -> SAM.

    ``saliency="auto"`` uses the text model's own dense map when it has one (the built-in grounding
    model), else gScoreCAM (v1) or M2IB (v2) as ``version`` says. ``coarse`` turns the map into a
    mask (``crf``, ``kmeans``, ``otsu`` or ``threshold`` for calibrated maps). ``box_rule`` picks
    the targets and their boxes (:mod:`clipsam.postprocess.map_boxes`). ``refine`` decodes
    again from the tight boxes of the first masks. ``mask_source``: ``auto`` (the grounding
    model's calibrated choice per concept, else the segmenter), ``segmenter``, ``map``,
    ``union`` or ``decoder`` (the box prompts through the grounding model's decoder adapter,
    :mod:`clipsam.models.sam.prompt_adapter`). ``cleanup`` keeps each box's largest component,
    holes filled (not for the decoder source, trained on the union of raw box masks).
    ``map_level``: the probability at which a calibrated map (``coarse="threshold"``) is cut;
    None takes the grounding model's calibrated level for the concept, else 0.5.
    ``box_margin``: each side of
    every box prompt grows by this fraction of the box's size before decoding (not for the map
    source); None takes the grounding model's calibrated margin for the concept, else 0.
    ``tta``: test-time augmentation of a native map, the flips of the image (``hflip``,
    ``vflip``) whose maps, flipped back, are averaged with the image's own: one more encoder
    pass each (presence stays the image's own). ``mask_prompt``: decode each box a second
    time with its first mask as a dense prompt, keeping the decoder output with the highest
    predicted IoU (the segmenter and union sources; one more decoder pass per box).
    """

    version: str = "v2"
    saliency: str = "auto"
    coarse: str = "auto"
    box_rule: MapBoxRule = field(default_factory=MapBoxRule)
    box_margin: float | None = None
    refine: bool = False
    mask_source: str = "auto"
    cleanup: bool = True
    use_prompt_library: bool = True
    map_level: float | None = None
    tta: tuple[str, ...] = ()
    mask_prompt: bool = False


VOLUME_MODES = ("consistent", "slices")


@dataclass(frozen=True)
class VolumeConfig:
    """How a volume (MRI, CT: a stack of slices) is segmented
    (:mod:`clipsam.pipelines.volume`); a 2-D image ignores it.

    ``mode="slices"`` segments each slice on its own. ``"consistent"`` decides along the slice
    axis: each slice's presence score is smoothed with its neighbours' (a Gaussian of
    ``smoothing`` slices, two-sided; 0: none), the slices whose smoothed score reaches the
    prompt's "not found" threshold form runs, a run holds when its peak smoothed score is
    ``hold`` logits above that threshold, and the volume is "not found" when no run holds; a
    slice of a held run whose own answer is weak takes box prompts from the mask of the nearest
    confident slice of its run at most ``reach`` slices away, each side grown by ``margin`` of
    the box's size; with ``cleanup``, 3-D components that touch no confident slice are dropped;
    then components of fewer voxels than ``min_component`` of the largest one (0: none).
    A setting left None takes the text model's calibrated value (its ``volume`` block), else
    the value that makes ``consistent`` equal ``slices`` (recorded with a warning).
    """

    mode: str = "consistent"
    smoothing: float | None = None
    hold: float | None = None
    reach: int | None = None
    margin: float | None = None
    cleanup: bool | None = None
    min_component: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in VOLUME_MODES:
            raise InputError(f"unknown volume mode {self.mode!r}; use "
                             f"{' or '.join(VOLUME_MODES)}")
        checks = {"smoothing": (self.smoothing, 0.0, 10.0), "hold": (self.hold, 0.0, 10.0),
                  "reach": (self.reach, 0, 10), "margin": (self.margin, 0.0, 0.99),
                  "min_component": (self.min_component, 0.0, 1.0)}
        for name, (value, low, high) in checks.items():
            if value is not None and not low <= value <= high:
                raise InputError(f"volume {name} must lie in [{low}, {high}], got {value}")
        if self.reach is not None and int(self.reach) != self.reach:
            raise InputError(f"volume reach is a whole number of slices, got {self.reach}")


PRESENCE_POINTS = ("recall", "balanced", "precision")


@dataclass(frozen=True)
class RunConfig:
    """One way to run clipsam: the method, its models and its parameters.

    ``weak_model`` is the folder written by ``clipsam weak-train``, used by ``method="weak"``.
    ``volume`` says how volumes are segmented (slice by slice or consistently in 3-D).
    ``presence``: the operating point of "not found" (the grounding model's thresholds, each
    calibrated per concept on held-out subjects): ``recall`` keeps 95 % of present targets,
    ``balanced`` maximises balanced accuracy, ``precision`` answers "not found" on at least
    90 % of the images without the target (:mod:`clipsam.train.calibrate`).
    """

    method: str = "medclipsam"
    models: ModelConfig = field(default_factory=ModelConfig)
    salip: SalipConfig = field(default_factory=SalipConfig)
    medclipsam: MedClipSamConfig = field(default_factory=MedClipSamConfig)
    weak_model: Path | None = None
    keep_intermediates: bool = False
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    presence: str = "recall"

    def __post_init__(self) -> None:
        if self.presence not in PRESENCE_POINTS:
            raise InputError(f"unknown presence operating point {self.presence!r}; use "
                             f"{', '.join(PRESENCE_POINTS)}")


NOT_FOUND_RULES = ("skip", "background")
WEAK_NETWORKS = ("unet", "head")
WEAK_AGREEMENT_FLOOR = 0.5
"""The least Dice a weak-supervision student must reach against its teacher's pseudo-masks on
held-out images to count as having learned: at 0.5 the two masks' overlap is a third of their
union (IoU 1/3), so below it the student disagrees with its teacher on more target pixels than
it agrees; students that learned reach 0.8-0.95 (docs/results/weak/image_count)."""


@dataclass(frozen=True)
class WeakTrainConfig:
    """How the network is trained, and how the teacher's answers become training targets.

    ``not_found``: what an image becomes when the cascade finds no target in it although the
    user gave it as an image of the target: ``skip`` (left out of training) or ``background``
    (an all-background target). Images known to lack the target are given separately
    (negatives) and always train as background. ``uncertain_weight``: the loss weight of pixels
    where the teacher's own map and its mask disagree (1 = no down-weighting).

    Training counts optimisation ``steps`` (batches of ``batch_size``), not passes over the
    images, so a few dozen images get as many steps as a few hundred; the steps are split into
    ``cycles`` cosine cycles (the first twice as long), each giving one ensemble member.
    ``validation_share`` of the subjects (images without a subject are their own) is held out
    of training to measure the student's agreement with its teacher (Dice against their
    pseudo-masks), every ``eval_every`` steps and at each cycle's end; 0 holds none out
    (nothing then shows that the student learned).

    ``network``: ``unet`` learns from the image itself, resized to ``size`` x ``size``, with
    a residual U-Net of ``features`` channels per level (needs no segmenter at inference);
    ``head`` learns on the segmenter's locked image embedding (its (256, 64, 64) grid;
    ``size`` and ``features`` do not apply), so every image is encoded, in training and at
    inference, and augmentation warps the embedding.
    """

    size: int = 256
    steps: int = 400
    cycles: int = 4
    batch_size: int = 8
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    features: tuple[int, ...] = (16, 32, 64, 128, 256)
    seed: int = 0
    augment: bool = True
    not_found: str = "skip"
    uncertain_weight: float = 0.25
    network: str = "unet"
    validation_share: float = 0.2
    eval_every: int = 50

    def __post_init__(self) -> None:
        if self.network not in WEAK_NETWORKS:
            raise InputError(f"unknown weak network {self.network!r}; use "
                             f"{' or '.join(WEAK_NETWORKS)}")
        if self.size < 2 ** (len(self.features) - 1) or self.size % 2 ** (len(self.features) - 1):
            raise InputError(f"input size {self.size} must be a multiple of "
                             f"{2 ** (len(self.features) - 1)} for {len(self.features)} levels")
        if self.cycles < 1:
            raise InputError(f"cycles must be at least 1, got {self.cycles}")
        if self.steps < self.cycles + (self.cycles > 1):
            raise InputError(f"{self.cycles} cycles need more than {self.steps} steps (at least "
                             f"{self.cycles + (self.cycles > 1)}: the first cycle is twice as "
                             "long)")
        if self.eval_every < 1:
            raise InputError(f"eval_every must be at least 1 step, got {self.eval_every}")
        if not 0.0 <= self.validation_share < 1.0:
            raise InputError(f"validation share must be in [0, 1), got {self.validation_share}")
        if self.batch_size < 1:
            raise InputError(f"batch size must be positive, got {self.batch_size}")
        if self.not_found not in NOT_FOUND_RULES:
            raise InputError(f"unknown not-found rule {self.not_found!r}; use "
                             f"{' or '.join(NOT_FOUND_RULES)}")
        if not 0.0 <= self.uncertain_weight <= 1.0:
            raise InputError(f"uncertain weight must be in [0, 1], got {self.uncertain_weight}")

    @property
    def reads_embedding(self) -> bool:
        """Whether the network reads the segmenter's image embedding (a ``head``)."""
        return self.network == "head"

    def cycle_ends(self) -> tuple[int, ...]:
        """The step counts after which each cycle ends (and a member is saved): the first
        cycle, which starts from random weights, gets twice the steps of each later one
        (which restarts from a trained network)."""
        return tuple(round(self.steps * (k + 2) / (self.cycles + 1)) for k in range(self.cycles))
