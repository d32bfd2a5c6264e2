"""``clipsam weak-train``: train a segmentation network on the cascade's pseudo-masks.

MedCLIP-SAM's second stage (Koleilat et al., MICCAI 2024): the text-prompted cascade labels
every image of IMAGES_DIR (no expert mask is read), then a residual U-Net learns those
pseudo-masks. Images where the cascade finds no target are kept as empty (all-background)
masks. Images are plainly resized to SIZE x SIZE (default 128); the default 30 epochs in 3
cosine warm-restart cycles (one ensemble member each) take a few minutes per hundred images on a
2-core laptop CPU. Use the folder with ``--method weak --model MODEL_DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clipsam.config import RUNTIMES, SEGMENTERS
from clipsam.pipelines.registry import PIPELINES, TEXT_FREE_METHODS

PSEUDO_METHODS = tuple(name for name in PIPELINES if name not in TEXT_FREE_METHODS)
"""The registered methods that read the prompt, so can label images for it."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "weak-train", help="train a network on text-prompted pseudo-masks (weak supervision)",
        description=(
            "Label every image of IMAGES_DIR with the text-prompted cascade (masks cached in "
            "MODEL_DIR/pseudo/ and reused by reruns; 'not found' images become empty masks), "
            "then train MONAI's residual U-Net on them with Dice + cross-entropy. Images are "
            "resized (not letterboxed) to SIZE x SIZE. The learning rate restarts CYCLES times "
            "(cosine) and the weights at the end of each cycle form the ensemble whose mean is "
            "the prediction and whose entropy is the uncertainty map. The defaults (128 px, 30 "
            "epochs, 3 cycles) train a few hundred images in minutes on a 2-core CPU. MODEL_DIR "
            "gets config.json, member_<k>.safetensors and checkpoint.pt (written every epoch)."))
    parser.add_argument("images_dir", type=Path, metavar="IMAGES_DIR",
                        help="folder of unlabelled 2-D images (searched recursively)")
    parser.add_argument("-p", "--prompt", required=True, metavar="TEXT",
                        help="what to segment, e.g. 'fetal head'")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--method", choices=PSEUDO_METHODS, default="medclipsam",
                        help="cascade that makes the pseudo-masks (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="default %(default)s")
    parser.add_argument("--cycles", type=int, default=3,
                        help="learning-rate cycles = ensemble members (default %(default)s)")
    parser.add_argument("--size", type=int, default=128,
                        help="network input side in pixels, a multiple of 16 "
                             "(default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="default %(default)s")
    parser.add_argument("--resume", action="store_true",
                        help="continue from MODEL_DIR/checkpoint.pt (same settings and images)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for training (default: PyTorch's choice; 1 is "
                             "often fastest on a busy machine)")
    parser.add_argument("--segmenter", choices=SEGMENTERS, default="litemedsam")
    parser.add_argument("--text-model", default="builtin", metavar="NAME_OR_DIR")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto")
    parser.add_argument("--weights-dir", type=Path, default=None)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from clipsam.api import run_config
    from clipsam.apps.batch import collect_inputs
    from clipsam.errors import InputError
    from clipsam.models.weak_net import WeakTrainConfig
    from clipsam.pipelines.prompts import validate_prompt
    from clipsam.pipelines.registry import build_pipeline, load_models
    from clipsam.train.weak import train_weak
    from clipsam.train.weak_pseudo import UnlabelledImage

    prompt = validate_prompt(args.prompt)
    train = WeakTrainConfig(size=args.size, epochs=args.epochs, cycles=args.cycles,
                            batch_size=args.batch_size, seed=args.seed)
    if not args.images_dir.is_dir():
        raise InputError(f"{args.images_dir} is not a folder of images")
    images = [UnlabelledImage(item.stem, item.path)
              for item in collect_inputs([str(args.images_dir)], out_dir=args.out)]
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = run_config(args.method, segmenter=args.segmenter, text_model=args.text_model,
                        runtime=args.runtime, weights_dir=args.weights_dir)
    models = load_models(config.models)
    pipeline = build_pipeline(config, models)
    progress = not getattr(args, "quiet", 0)
    result = train_weak(images, pipeline, prompt, args.out, train, encoder=models.segmenter,
                        resume=args.resume, progress=progress)
    found = sum(item.pseudo_found for item in result.data)
    print(f"trained on {len(result.data)} images ({found} with {prompt!r} found, "
          f"{len(result.data) - found} empty pseudo-masks); {len(result.members)} ensemble "
          f"members in {args.out}")
    return 0
