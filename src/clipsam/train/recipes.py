"""Named training recipes of the grounding model: one name, every setting that shapes it.

``SHIPPED_RECIPE`` is the recipe of the model shipped in the package; with the data, exclusions
and starting model given in its model card it rebuilds it. ``DEFAULT_RECIPE``, the default of
``clipsam finetune``, trains from random weights (the shipped recipe starts from its model).
The others are the alternatives it was measured against (docs/BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from clipsam.errors import InputError
from clipsam.models.grounding.heads import HeadsConfig
from clipsam.train.calibrate import CalibrationConfig
from clipsam.train.presence_head import PresenceHeadConfig
from clipsam.train.trainer import TrainConfig
from clipsam.train.views import ViewConfig


@dataclass(frozen=True)
class Recipe:
    """Heads, training and calibration settings; ``calibration_fraction`` of the subjects (by
    hash) are kept out of the gradient steps for validation and calibration; ``views``: the
    re-encoded augmented views added to the training images (none by default);
    ``covisible``: train the targets a set's images always show (``always_shows`` in the
    concepts table) as present there; without it they are left out there like ``may_show``
    (the recipes before 2026-12-07); ``presence_head``: fit an image-level presence head per
    concept on the training part, used where it beats the map statistic on the calibration
    subjects (:mod:`clipsam.train.presence_head`; the recipes before "anatomy" have none);
    ``init``: the recipe of the grounding model whose heads training starts from (given to
    ``clipsam finetune --init MODEL_DIR``; its heads settings must be this recipe's) instead
    of random weights."""

    name: str
    train: TrainConfig = field(default_factory=TrainConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    calibrate: CalibrationConfig = field(default_factory=CalibrationConfig)
    calibration_fraction: float = 0.15
    views: tuple[ViewConfig, ...] = ()
    covisible: bool = False
    presence_head: PresenceHeadConfig | None = None
    init: str | None = None


_HEADS = HeadsConfig(hidden_dim=128, dilations=(1, 2, 4, 8), global_context=True,
                     context_stride=2)
_TRAIN = TrainConfig(epochs=10, batch_size=8, learning_rate=2e-3, crop=64, balance=0.5)
# one view of each chest X-ray with its source's look changed (resolution, blur, contrast,
# gamma, noise, frame)
_CHEST_VIEWS = ViewConfig(min_side=0.8, min_scale=0.4, blur=1.5, log_contrast=0.4, border=0.1,
                          sets=("cxr_lungs", "jsrt_clavicles", "jsrt_heart"))
RECIPES: dict[str, Recipe] = {
    # the shipped recipe until 2026-12-01
    "builtin": Recipe(
        name="builtin",
        train=_TRAIN,
        heads=_HEADS,
    ),
    # the augmentation measured against "builtin" in docs/BENCHMARKS.md (left-right flips of
    # the cached features and targets)
    "builtin-flip": Recipe(
        name="builtin-flip",
        train=replace(_TRAIN, flip=True),
        heads=_HEADS,
    ),
    # "builtin" with twice the epochs (shipped for part of 2026-12-01)
    "builtin-long": Recipe(
        name="builtin-long",
        train=replace(_TRAIN, epochs=20),
        heads=_HEADS,
    ),
    # the shipped recipe from 2026-12-01 to 2026-12-07 and the default of clipsam finetune:
    # "builtin-long" with twice the epochs again
    "builtin-xlong": Recipe(
        name="builtin-xlong",
        train=replace(_TRAIN, epochs=40),
        heads=_HEADS,
    ),
    # "builtin-long" over images and their views: as many steps as "builtin-xlong" (measured,
    # not kept)
    "builtin-long-views": Recipe(
        name="builtin-long-views",
        train=replace(_TRAIN, epochs=20),
        heads=_HEADS,
        views=(ViewConfig(),),
    ),
    # the stronger head measured against "builtin" in docs/BENCHMARKS.md (context blocks that
    # mix all channels instead of depthwise ones)
    "builtin-dense": Recipe(
        name="builtin-dense",
        train=_TRAIN,
        heads=replace(_HEADS, depthwise=False),
    ),
    # "builtin" plus one re-encoded augmented view (a crop and an intensity change) of every
    # training image, 10 epochs over both (measured, not kept)
    "builtin-views": Recipe(
        name="builtin-views",
        train=_TRAIN,
        heads=_HEADS,
        views=(ViewConfig(),),
    ),
    # dense blocks and views, as many steps as "builtin" (measured, not kept)
    "builtin-dense-views": Recipe(
        name="builtin-dense-views",
        train=replace(_TRAIN, epochs=5),
        heads=replace(_HEADS, depthwise=False),
        views=(ViewConfig(),),
    ),
    # "builtin-xlong" that finds co-visible anatomy on every source: targets a set's images
    # always show trained as present, and one view of each chest X-ray with its source's look
    # changed (resolution, blur, contrast, gamma, noise, frame); an image-level presence head
    # per concept where it beats the map statistic on the calibration subjects. It starts from
    # the shipped heads ("builtin-xlong") and trains 2 epochs at half the learning rate:
    # 40 epochs from random weights over the eleven sets and the views take about 5 hours on
    # this 2-core CPU
    "anatomy": Recipe(
        name="anatomy",
        train=replace(_TRAIN, epochs=2, learning_rate=1e-3),
        heads=_HEADS,
        views=(_CHEST_VIEWS,),
        covisible=True,
        presence_head=PresenceHeadConfig(),
        init="builtin-xlong",
    ),
    # "anatomy" and one more view, for volumes (one MRI sequence per file): each brain MRI slice
    # of lgg_flair, which shows three sequences as RGB (pre-contrast, FLAIR, post-contrast, its
    # meta.csv), seen as its FLAIR channel alone in gray; one epoch from the shipped heads
    "anatomy-gray": Recipe(
        name="anatomy-gray",
        train=replace(_TRAIN, epochs=1, learning_rate=1e-3),
        heads=_HEADS,
        views=(_CHEST_VIEWS, ViewConfig(channel=1, sets=("lgg_flair",))),
        covisible=True,
        presence_head=PresenceHeadConfig(),
        init="anatomy",
    ),
    # "anatomy" without the views: the presence term's part alone (a screen)
    "anatomy-presence": Recipe(
        name="anatomy-presence",
        train=replace(_TRAIN, epochs=40),
        heads=_HEADS,
        covisible=True,
    ),
    # the leave-one-set-out models of docs/BENCHMARKS.md: the same heads, fewer epochs
    "loso": Recipe(
        name="loso",
        train=replace(_TRAIN, epochs=4),
        heads=_HEADS,
    ),
    # one set alone, long enough to converge on its ~100-200 images (the leave-one-domain-out
    # measure of docs/BENCHMARKS.md, scripts/bench_domains.py: the same heads, 20 epochs)
    "domains": Recipe(
        name="domains",
        train=replace(_TRAIN, epochs=20),
        heads=_HEADS,
    ),
}


SHIPPED_RECIPE = "anatomy-gray"
DEFAULT_RECIPE = "builtin-xlong"


def recipe_named(name: str) -> Recipe:
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose one of {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
