"""``clipsam weak-train``: train a segmentation network on the cascade's pseudo-masks.

MedCLIP-SAM's second stage (Koleilat et al., MICCAI 2024): the text-prompted cascade labels
every image of IMAGES_DIR (no expert mask is read), then a residual U-Net learns those
pseudo-masks (or, ``--network head``, a head on the segmenter's locked image embedding),
weighted by the teacher's confidence (:mod:`clipsam.train.weak`). Use the folder
with ``--method weak`` (the network alone) or ``--method weak-box`` (its mask as box prompts
for the segmenter) and ``--model MODEL_DIR``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clipsam.apps.options import (
    add_device,
    add_runtime,
    add_segmenter,
    add_subset,
    add_text_model,
    add_threads,
    add_weights_dir,
    check_model_option,
    positive_int,
)
from clipsam.config import (
    NOT_FOUND_RULES,
    WEAK_AGREEMENT_FLOOR,
    WEAK_NETWORKS,
    WeakTrainConfig,
)
from clipsam.pipelines.registry import PIPELINES

PSEUDO_METHODS = tuple(name for name, spec in PIPELINES.items()
                       if spec.reads_text or spec.own_model)
"""The registered methods that know the target (they read the prompt, or run a network trained
for it), so can label images for it."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    defaults = WeakTrainConfig()
    parser = subparsers.add_parser(
        "weak-train", help="train a network on text-prompted pseudo-masks (weak supervision)",
        description=(
            "Label every image of IMAGES_DIR with the text-prompted cascade (masks cached in "
            "MODEL_DIR/pseudo/ and reused by reruns of the same settings), then train MONAI's "
            "residual U-Net (or, --network head, a head on the segmenter's image embedding) "
            "on them with per-pixel weighted cross-entropy + Dice. Images where "
            "the cascade finds nothing are left out (--not-found), pixels where its map and "
            "mask disagree weigh less (--uncertain-weight), images given with --negatives "
            "train as background. Images are resized (not letterboxed) to SIZE x SIZE. "
            "Training runs STEPS batches whatever the number of images; the learning rate "
            "restarts CYCLES times (cosine). A share of the subjects (--validation-share; "
            "subjects from IMAGES_DIR/meta.csv, else one per image) is held out: every "
            f"{defaults.eval_every} steps the network's masks on them are compared with their "
            "pseudo-masks (Dice: the student's agreement with its teacher), each cycle keeps "
            "its best weights as an ensemble member, and the command ends with the "
            "ensemble's agreement, warning when it is below "
            f"{WEAK_AGREEMENT_FLOOR} (the student did not learn). The ensemble's mean is the "
            "prediction, its entropy the uncertainty map. MODEL_DIR gets config.json "
            "(settings, images, held-out images, training loss and agreement at every "
            "evaluation, training time, warning), member_<k>.safetensors and checkpoint.pt "
            "(written at every evaluation)."))
    parser.add_argument("images_dir", type=Path, metavar="IMAGES_DIR",
                        help="folder of unlabelled 2-D images (searched recursively)")
    parser.add_argument("-p", "--prompt", required=True, metavar="TEXT",
                        help="what to segment, e.g. 'fetal head'")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR",
                        help="folder for the trained network, its pseudo-masks and checkpoint "
                             "(use it with --method weak or weak-box --model MODEL_DIR)")
    parser.add_argument("--method", choices=PSEUDO_METHODS, default="medclipsam",
                        help="cascade that makes the pseudo-masks (default %(default)s); "
                             "weak-box with --model: a trained network's boxes refined by the "
                             "segmenter (self-training)")
    parser.add_argument("--model", type=Path, default=None, metavar="TEACHER_DIR",
                        help="with --method weak or weak-box: the teacher network's folder")
    add_subset(parser, help="IMAGES_DIR as a labelled set (images/, meta.csv): only the "
                            "images of this part of the subject split the built-in model was "
                            "trained with (masks are never read; default %(default)s)")
    parser.add_argument("--negatives", type=Path, default=None, metavar="DIR",
                        help="folder of images known not to show the target (background)")
    parser.add_argument("--not-found", choices=NOT_FOUND_RULES, default=defaults.not_found,
                        help="images where the cascade finds nothing: left out (skip) or "
                             "trained as background (default %(default)s)")
    parser.add_argument("--uncertain-weight", type=float, default=defaults.uncertain_weight,
                        metavar="W", help="loss weight of pixels where the teacher's map and "
                                          "mask disagree (default %(default)s)")
    parser.add_argument("--network", choices=WEAK_NETWORKS, default=defaults.network,
                        help="unet: learns from the image (no segmenter at inference); head: "
                             "learns on the segmenter's locked image embedding (default "
                             "%(default)s)")
    parser.add_argument("--steps", type=positive_int, default=defaults.steps, metavar="N",
                        help="optimisation steps (batches), whatever the number of images "
                             "(default %(default)s)")
    parser.add_argument("--validation-share", type=float, default=defaults.validation_share,
                        metavar="SHARE",
                        help="share of the subjects held out to measure the student's "
                             "agreement with its teacher; 0 holds none out (default "
                             "%(default)s)")
    parser.add_argument("--cycles", type=positive_int, default=defaults.cycles, metavar="N",
                        help="learning-rate cycles = ensemble members (default %(default)s)")
    parser.add_argument("--size", type=positive_int, default=defaults.size, metavar="PIXELS",
                        help="network input side in pixels, a multiple of 16 "
                             "(default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                        metavar="N", help="images per training step (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    parser.add_argument("--resume", action="store_true",
                        help="continue from MODEL_DIR/checkpoint.pt (same settings and images)")
    add_segmenter(parser)
    add_text_model(parser)
    add_runtime(parser, trains=True)
    add_device(parser, trains=True)
    add_threads(parser)
    add_weights_dir(parser)
    parser.set_defaults(func=run)
    return parser


def training_images(folder: Path, subset: str, out: Path) -> list:
    """The images of ``folder`` (all, or one part of a labelled set's subject split), with
    their subjects when the folder's ``meta.csv`` gives them."""
    from clipsam.apps.batch import collect_inputs
    from clipsam.errors import InputError
    from clipsam.io.labelled_sets import list_samples, read_meta
    from clipsam.io.splits import split_of
    from clipsam.train.weak_pseudo import UnlabelledImage

    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder of images")
    if subset == "all":
        meta = read_meta(folder)  # by file name stem, wherever the image is in the folder
        return [UnlabelledImage(item.stem, item.path,
                                getattr(meta.get(Path(item.stem).name), "subject", None))
                for item in collect_inputs([str(folder)], out_dir=out)]
    return [UnlabelledImage(sample.image_id, sample.image_path, sample.subject)
            for sample in list_samples(folder) if split_of(sample) == subset]


def run(args: argparse.Namespace) -> int:
    from clipsam.api import run_config
    from clipsam.errors import InputError
    from clipsam.models.device import use_torch_threads
    from clipsam.pipelines.prompts import validate_prompt
    from clipsam.pipelines.provenance import run_identity
    from clipsam.pipelines.registry import build_pipeline, load_method_models, load_segmenter

    check_model_option(args.method, args.model)
    prompt = validate_prompt(args.prompt)
    train = WeakTrainConfig(size=args.size, steps=args.steps, cycles=args.cycles,
                            batch_size=args.batch_size, seed=args.seed,
                            not_found=args.not_found, uncertain_weight=args.uncertain_weight,
                            network=args.network, validation_share=args.validation_share)
    images = training_images(args.images_dir, args.subset, args.out)
    if not images:
        raise InputError(f"no images in {args.images_dir}"
                         + (f" (subset {args.subset})" if args.subset != "all" else ""))
    negatives = (training_images(args.negatives, "all", args.out)
                 if args.negatives is not None else [])
    if args.model is not None and args.model.resolve() == args.out.resolve():
        raise InputError("--model (the teacher) and --out must be different folders")
    from clipsam.train.weak import train_weak  # loads MONAI: after the arguments are checked

    use_torch_threads(args.threads)  # the network trains in PyTorch, on the CPU
    config = run_config(args.method, segmenter=args.segmenter, text_model=args.text_model,
                        runtime=args.runtime, device=args.device, threads=args.threads,
                        weights_dir=args.weights_dir, weak_model=args.model)
    identity = run_identity(config)
    models = load_method_models(identity.config)
    pipeline = build_pipeline(identity.config, models)
    progress = not getattr(args, "quiet", 0)
    if models is not None:
        encoder = models.segmenter
    elif train.reads_embedding:  # a network teacher without the segmenter; the head needs it
        encoder = load_segmenter(identity.config.models)
    else:
        encoder = None
    result = train_weak(images, pipeline, prompt, args.out, train, encoder=encoder,
                        resume=args.resume, progress=progress, negatives=negatives,
                        teacher=identity.key)
    found = sum(item.pseudo_found for item in result.data)
    used = sum(item.used for item in result.data)
    held = result.held_out
    print(f"trained on {used - len(held)} of {len(result.data)} images ({found} with "
          f"{prompt!r} found, {len(negatives)} negatives; {len(held)} held out) in "
          f"{result.train_seconds / 60:.1f} min; {len(result.members)} ensemble members in "
          f"{args.out}")
    if result.agreement is not None:
        subjects = len({item.subject for item in held})
        print(f"agreement with the teacher on {len(held)} held-out images ({subjects} "
              f"subjects): Dice {result.agreement:.3f} (floor {WEAK_AGREEMENT_FLOOR})")
    if result.warning:
        print(f"warning: {result.warning}", file=sys.stderr)
    return 0
