"""``clipsam finetune --text-model NAME``: MedCLIP-SAM's DHN-NCE fine-tuning of a CLIP-family model.

``clipsam finetune`` chooses its training samples (``--data``/``--captions``, ``--prompt``,
the subset and ``--exclude`` options); with ``--text-model`` naming an image-text model (e.g.
``biomedclip``, ``clip-vit-b16``) instead of ``builtin`` it hands them here. The model is loaded
from ``--weights-dir`` (or the usual weights lookup), its last blocks are trained on
image-caption pairs (:mod:`clipsam.train.clip_pairs`, :mod:`clipsam.train.finetune_clip`), and
``--out`` receives the weights in the model's upstream layout (``clipsam segment --text-model
NAME --weights-dir OUT`` loads them) and ``training.json``: the source files' and saved files'
SHA-256, the settings, every step's loss, the held-out loss and retrieval accuracy per epoch and
the warnings (one when the model did not learn).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path

from clipsam.apps.options import positive_int

RECORD_FILE = "training.json"
GROUNDING_ONLY = ("recipe", "embedding_cache")
"""Options of the grounding-heads training that this path does not use (refused if given)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this path, added to ``clipsam finetune``."""
    parser.add_argument("--text-model", default="builtin", metavar="NAME",
                        help="'builtin' (default): train the grounding heads; an image-text "
                             "model's name (biomedclip, clip-vit-b16, ... see `clipsam models "
                             "list`): fine-tune it with MedCLIP-SAM's DHN-NCE on image-caption "
                             "pairs and save it in its upstream layout in OUT")
    parser.add_argument("--weights-dir", type=Path, default=None, metavar="DIR",
                        help="with an image-text --text-model: where its upstream files are "
                             "(default: $CLIPSAM_WEIGHTS_DIR, then the cache)")
    parser.add_argument("--unfreeze-blocks", type=positive_int, default=None, metavar="N",
                        help="with an image-text --text-model: train the last N transformer "
                             "blocks of each tower with the final norms and projections "
                             "(default 2)")


def image_text_requested(args: argparse.Namespace) -> bool:
    """Whether ``--text-model`` names an image-text model; the options of that path alone are
    refused with ``builtin``."""
    from clipsam.errors import InputError

    if args.text_model != "builtin":
        return True
    for name, value in (("--weights-dir", args.weights_dir),
                        ("--unfreeze-blocks", args.unfreeze_blocks)):
        if value is not None:
            raise InputError(f"{name} fine-tunes an image-text model: give --text-model NAME "
                             "(e.g. biomedclip)")
    return False


def run_image_text(args: argparse.Namespace, samples: list, captions: list[str] | None,
                   concepts: dict) -> int:
    """Fine-tune ``args.text_model`` on the chosen ``samples`` (with a caption table's
    ``captions``, else their sets' ``concepts``) and write OUT."""
    from clipsam.errors import InputError
    from clipsam.io.record import write_record_json
    from clipsam.models.clip.factory import image_text_files, load_image_text_model
    from clipsam.models.device import resolve_device, use_torch_threads
    from clipsam.models.weights import sha256_of
    from clipsam.train.clip_pairs import caption_pairs
    from clipsam.train.finetune_clip import FinetuneConfig, finetune_clip
    from clipsam.train.fit import subjects_by_set

    given = [name for name in GROUNDING_ONLY if getattr(args, name, None) is not None]
    if given:
        raise InputError(f"--{given[0].replace('_', '-')} trains the grounding heads: it does "
                         f"not apply to --text-model {args.text_model}")
    overrides = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                                   "lr": args.lr, "seed": args.seed,
                                   "loss": args.loss.replace("-", "_") if args.loss else None,
                                   "vision_blocks": args.unfreeze_blocks,
                                   "text_blocks": args.unfreeze_blocks}.items()
                 if v is not None}
    if any(overrides.get(k, 1) < 1 for k in ("epochs", "batch_size")):
        raise InputError("--epochs and --batch-size must be at least 1")
    if overrides.get("lr", 1.0) <= 0:
        raise InputError("--lr must be positive")
    config = replace(FinetuneConfig(), **overrides)
    # --device and --threads are the shared options of the training commands (apps/options.py)
    device = resolve_device(getattr(args, "device", None) or "auto")
    use_torch_threads(getattr(args, "threads", None))
    sources = image_text_files(args.text_model, args.weights_dir)
    if Path(args.out).resolve() == sources[0].parent.resolve():
        raise InputError(f"--out {args.out} holds the weights being fine-tuned: choose "
                         "another folder")
    model = load_image_text_model(args.text_model, args.weights_dir, device)
    split = caption_pairs(samples, concepts, captions)
    if not split.train:
        raise InputError(f"all {len(samples)} images' subjects are held out for validation: "
                         "give more subjects")
    print(f"fine-tuning {args.text_model} on {model.device}: {len(split.train)} training and "
          f"{len(split.heldout)} held-out image-caption pairs", flush=True)
    run = finetune_clip(model, split.train, config, args.out, groups=split.train_groups,
                        validation=split.heldout or None,
                        validation_groups=split.heldout_groups, progress=not args.quiet)
    saved = sorted(p for p in Path(args.out).iterdir() if p.is_file() and p.name != RECORD_FILE)
    record = {
        "command": "finetune", "text_model": args.text_model, "device": model.device,
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
        "source_files": [{"file": p.name, "path": str(p), "sha256": sha256_of(p)}
                         for p in sources],
        "saved_files": [{"file": p.name, "sha256": sha256_of(p)} for p in saved],
        "config": asdict(config),
        "pairs": {"train": len(split.train), "heldout": len(split.heldout)},
        "subjects": {"train": subjects_by_set(split.train.samples),
                     "heldout": subjects_by_set(split.heldout.samples)},
        "losses": run.losses, "curve": run.curve, "warnings": run.warnings,
    }
    write_record_json(Path(args.out) / RECORD_FILE, record)
    print(f"saved {args.out}; use it with --text-model {args.text_model} --weights-dir "
          f"{args.out}")
    return 0
