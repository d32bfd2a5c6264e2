"""Train the decoder adapter on stored embeddings and write a grounding model folder that uses it.

Copies the grounding model (default: the shipped one) into OUT, trains the adapter
(:mod:`clipsam.train.decoder_adapter`) on the train part of the subject split of every --data set
(calibration subjects held out of gradient steps), saves it with its loss curve and validation
Dice in OUT/decoder_adapter.json, then chooses per concept between the concept's mask source and
``decoder`` on calibration subjects (:func:`clipsam.train.calibrate.calibrate_decoder_source`)
and records the choice in OUT/config.json. Use OUT as ``--text-model``.

    OMP_NUM_THREADS=1 python scripts/train_decoder_adapter.py --data ../shared/data/* \\
        --out runs/decoder-model --embedding-cache /work/cache/emb --max-minutes 20
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR")
    parser.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR")
    parser.add_argument("--text-model", type=Path, default=None, metavar="DIR",
                        help="grounding model folder to start from (default: the shipped one)")
    parser.add_argument("--embedding-cache", type=Path, required=True, metavar="DIR")
    parser.add_argument("--steps", type=int, default=900, help="training steps of one image")
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--organ-images", type=int, default=40,
                        help="training images drawn from each set that is not a lesion set")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recalibrate", action="store_true",
                        help="do not train: choose the mask sources of OUT (which holds an "
                             "adapter) again on the calibration subjects")
    args = parser.parse_args(argv)

    from clipsam.config import ModelConfig
    from clipsam.errors import InputError
    from clipsam.io.labelled_sets import list_samples
    from clipsam.models.device import use_torch_threads
    from clipsam.models.embedding_store import store_images
    from clipsam.models.grounding.model import (
        builtin_model_dir,
        load_grounding_model,
        save_mask_sources,
    )
    from clipsam.pipelines.registry import load_segmenter
    from clipsam.train.calibrate import CalibrationConfig, calibrate_decoder_source
    from clipsam.train.captions import builtin_concepts
    from clipsam.train.decoder_adapter import training_samples
    from clipsam.train.region_data import build_region_data

    if args.out.exists() != args.recalibrate:
        raise InputError(f"{args.out} exists; give a new folder" if args.out.exists() else
                         f"--recalibrate needs an existing model folder, {args.out} is not one")
    use_torch_threads(args.threads)
    segmenter = load_segmenter(ModelConfig(segmenter="litemedsam", threads=args.threads,
                                           embedding_cache=args.embedding_cache))
    if not args.recalibrate:
        shutil.copytree(args.text_model or builtin_model_dir(), args.out)
    model = load_grounding_model(args.out, segmenter=segmenter)
    concepts = builtin_concepts()
    samples = [s for folder in args.data for s in list_samples(folder)]
    unknown = sorted({s.set_name for s in samples} - set(concepts))
    if unknown:
        raise InputError(f"no built-in concept for {unknown}")
    excluded = set(model.metadata.get("excluded_subjects", []))
    train, calibration = training_samples(samples, args.organ_images, excluded, args.seed)
    store = segmenter.store
    calibration_keys = store_images([s.image_path for s in calibration], store)
    if not args.recalibrate:
        train_adapter_into(args, model, segmenter, concepts, train, calibration,
                           calibration_keys)
    model = load_grounding_model(args.out, segmenter=segmenter)
    data = build_region_data(calibration, calibration_keys, store,
                             {s.set_name: concepts[s.set_name] for s in samples})
    sources, report = calibrate_decoder_source(model, segmenter, data, CalibrationConfig())
    save_mask_sources(args.out, sources, report)
    for concept, row in report.items():
        print(f"{concept}: {row}")
    print(f"saved {args.out}; use it with --text-model {args.out}")
    return 0


def train_adapter_into(args: argparse.Namespace, model, segmenter, concepts: dict, train: list,
                       calibration: list, calibration_keys: list[str]) -> None:
    """Train the adapter on ``train`` (validated on ``calibration``) and save it in OUT."""
    from clipsam.models.embedding_store import store_images
    from clipsam.models.sam.checkpoints import load_model
    from clipsam.models.sam.factory import LITEMEDSAM, segmenter_checkpoint
    from clipsam.models.sam.prompt_adapter import (
        AdaptedDecoder,
        AdapterConfig,
        PromptAdapter,
        save_adapter,
    )
    from clipsam.models.weights import sha256_of
    from clipsam.pipelines.medclipsam import MedClipSamPipeline
    from clipsam.train.decoder_adapter import AdapterTraining, adapter_cases, train_adapter

    targets = {name: concept.target for name, concept in concepts.items()}
    pipeline = MedClipSamPipeline(segmenter, model)
    store = segmenter.store
    train_keys = store_images([s.image_path for s in train], store)
    size = 4 * LITEMEDSAM.grid_size
    print(f"{len(train)} training and {len(calibration)} calibration images; preparing cases")
    cases = adapter_cases(train, train_keys, store, model, pipeline, targets, size)
    validation = adapter_cases(calibration, calibration_keys, store, model, pipeline, targets,
                               size)
    checkpoint = segmenter_checkpoint("litemedsam")
    text_dim = len(model.text_vector(cases[0].concept))
    decoder = AdaptedDecoder(load_model(LITEMEDSAM, checkpoint),
                             PromptAdapter(AdapterConfig(text_dim=text_dim)), "litemedsam")
    training = AdapterTraining(steps=args.steps, learning_rate=args.learning_rate,
                               max_seconds=60 * args.max_minutes, seed=args.seed)
    record = train_adapter(decoder, cases, validation, training)
    record["data"] = [str(folder) for folder in args.data]
    record["train_images"] = {name: sum(s.set_name == name for s in train)
                              for name in sorted({s.set_name for s in train})}
    record["command"] = " ".join(sys.argv)
    save_adapter(args.out, decoder, sha256_of(checkpoint), record)


if __name__ == "__main__":
    raise SystemExit(main())
