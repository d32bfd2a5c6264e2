"""Static int8 quantisation of LiteMedSAM's image encoder: speed, embedding cosine, gt-box Dice.

A study: nothing of it ships (no variant met the shipping criterion below). Its per-node
sensitivity scan is the int8 table of docs/BENCHMARKS.md (``sensitivity.csv``).

Static int8 quantisation (QDQ, per-channel weights, uint8 activations / int8 weights), with
``quantize_static`` calibrated on preprocessed images from the TRAIN part of the subject split
(:func:`clipsam.io.splits.split_of`) of every set: MinMax, Percentile and Entropy calibration;
all operators, Conv/MatMul/Gemm, Conv/Gemm with the attention MatMuls and first/last convs in
fp32, and only the transformer stages (layers.1-3) and neck, on the ``quant_pre_process``
graph and on ONNX Runtime's EXTENDED-optimised graph (GELU fused). The best calibration is
picked on train images not used for calibration. A sensitivity scan quantises one Conv/Gemm
at a time. For each variant: speed ratio to fp32 (timed interleaved in this one process, order
rotated every round, the fp32 reference in the library's own session options), cosine of the
embedding to fp32, and ground-truth-box Dice with LiteMedSAM on the TEST images of every set.
Shipping criterion: |Dice int8 - Dice fp32| <= 0.005 on every set and at least 1.3x faster
(Dice is measured only for the variants that pass the speed criterion).

Writes ``quantisation.csv``, ``sensitivity.csv`` and ``int8_run.json`` into ``--out``; graphs
and calibration caches go to ``--work`` (reused by a rerun unless ``--fresh``).

    .venv/bin/python scripts/bench_encoder_int8.py --data ../shared/data \
        --out docs/results/encoder
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import torch
from encoder_timing import (  # scripts/ is on the path when run as a script
    SessionChange,
    Variant,
    evenly,
    litemedsam_graphs,
    model_input,
    paired_ratio,
    run_encoder,
    run_record,
    set_dirs,
    test_images,
    time_creation,
    time_passes,
    timing_inputs,
    write_csv,
)
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from clipsam.eval.gt_box import GtBoxOracle
from clipsam.eval.metrics import dice
from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import Sample, list_samples
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.io.splits import split_of
from clipsam.models.onnx_session import default_threads
from clipsam.models.sam import LITEMEDSAM, SamSegmenter
from clipsam.models.sam.runtime import OnnxRuntime

METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}
CONV_MATMUL = ("Conv", "MatMul", "Gemm")
SHIP_DICE = 0.005
SHIP_SPEED = 1.3


@dataclass(frozen=True)
class Images:
    calibration: list[Sample]
    selection: list[Sample]  # train images not used for calibration, to pick a calibration
    test: dict[str, list[Sample]]  # test images with a non-empty mask, per set


def choose_images(data: Path, calib_per_set: int, test_per_set: int) -> Images:
    calibration, selection = [], []
    for folder in set_dirs(data):
        train = [s for s in list_samples(folder) if split_of(s) == "train"]
        chosen = evenly(train, calib_per_set)
        calibration += chosen
        selection += evenly([s for s in train if s not in chosen], 2)
    return Images(calibration, selection, test_images(data, test_per_set))


class Reader(CalibrationDataReader):
    """Preprocessed calibration images; ``set_range`` lets ``quantize_static`` collect them a
    few at a time (extra option ``CalibStridedMinMax``) so all-tensor outputs fit in memory."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.arrays = list(arrays)
        self.position, self.end = 0, len(self.arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        self.position += 1
        return {"image": self.arrays[self.position - 1]}

    def __len__(self) -> int:
        return len(self.arrays)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, end_index


# ---------------------------------------------------------------------------------------------
# part 2: int8

STAGES_1_3 = r"^/(layers\.[123]|neck)/"  # node names of the transformer stages and the neck


@dataclass(frozen=True)
class QuantSpec:
    """One int8 variant: its base graph ("pre": ``quant_pre_process`` output; "ext": ONNX
    Runtime's EXTENDED-optimised graph with GELU fused), calibration method and what is
    quantised."""

    name: str
    method: str
    base: str = "pre"
    op_types: tuple[str, ...] | None = CONV_MATMUL  # None: every op type QDQ supports
    exclude_attention: bool = False  # keep the activation x activation MatMuls in fp32
    exclude_ends: bool = False  # keep the first and the last two (neck) convolutions in fp32
    only: str | None = None  # quantise only nodes whose name matches this regex

    def describe(self) -> str:
        ops = "all ops" if self.op_types is None else "+".join(self.op_types)
        extra = [x for x, on in (("attention MatMuls fp32", self.exclude_attention),
                                 ("first/last convs fp32", self.exclude_ends),
                                 ("only layers.1-3 + neck (patch_embed, layers.0 fp32)",
                                  self.only == STAGES_1_3)) if on]
        base = {"pre": "quant_pre_process graph",
                "ext": "EXTENDED-optimised graph (GELU fused)"}[self.base]
        return f"{self.method}, {ops}, {base}" + (f", {', '.join(extra)}" if extra else "")


def node_selection(model_path: Path, spec: QuantSpec) -> tuple[list[str], list[str]]:
    """(nodes to quantise, [] for all; nodes to keep in fp32)."""
    model = onnx.load(str(model_path), load_external_data=False)
    initialisers = {i.name for i in model.graph.initializer}
    exclude = []
    if spec.exclude_attention:
        exclude += [n.name for n in model.graph.node if n.op_type == "MatMul"
                    and not any(i in initialisers for i in n.input)]
    if spec.exclude_ends:
        convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
        exclude += convs[:1] + convs[-2:]
    include = []
    if spec.only:
        include = [n.name for n in model.graph.node if re.search(spec.only, n.name)
                   and (spec.op_types is None or n.op_type in spec.op_types)
                   and n.name not in exclude]
        if not include:
            raise ValueError(f"{spec.name}: no node matches {spec.only}")
    return include, exclude


def gelu_fused_graph(encoder: Path, target: Path) -> Path:
    """ONNX Runtime's EXTENDED-level optimisation of ``encoder`` (GELU, LayerNorm and MatMul
    fusions; no hardware-specific layouts), with the shapes of the contrib-op outputs (Gelu,
    FusedMatMul) written in so the quantiser can calibrate and quantise around them."""
    if target.exists():
        return target
    raw = target.with_suffix(".raw.onnx")
    SessionChange(level="EXTENDED").session(encoder, save_to=raw)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(raw)))
    for _ in range(100):
        known = {v.name: v for v in (*model.graph.value_info, *model.graph.input,
                                     *model.graph.output)}
        added = 0
        for node in model.graph.node:
            if node.domain != "com.microsoft" or node.output[0] in known:
                continue
            if node.op_type == "Gelu" and node.input[0] in known:
                info = onnx.ValueInfoProto()
                info.CopyFrom(known[node.input[0]])
                info.name = node.output[0]
            elif node.op_type == "FusedMatMul" and all(i in known for i in node.input[:2]):
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
                a, b = ([d.dim_value for d in known[i].type.tensor_type.shape.dim]
                        for i in node.input[:2])
                if attrs.get("transA", 0):
                    a[-2:] = a[-1], a[-2]
                if attrs.get("transB", 0):
                    b[-2:] = b[-1], b[-2]
                info = onnx.helper.make_tensor_value_info(node.output[0],
                                                          onnx.TensorProto.FLOAT,
                                                          [*a[:-1], b[-1]])
            else:
                continue
            model.graph.value_info.append(info)
            added += 1
        model = onnx.shape_inference.infer_shapes(model)
        if not added:
            break
    onnx.save(model, str(target))
    raw.unlink()
    return target


def quantise(bases: dict[str, Path], spec: QuantSpec, calibration: Sequence[np.ndarray],
             work: Path, log: Callable[[str], None]) -> Path:
    target = work / f"encoder-int8-{spec.name}.onnx"
    if target.exists():
        log(f"reusing {target.name}")
        return target
    base = bases[spec.base]
    if spec.op_types is not None and set(spec.op_types) <= set(CONV_MATMUL):
        calibrate_ops: list[str] | None = list(CONV_MATMUL)  # one calibration serves them all
    else:
        calibrate_ops = None if spec.op_types is None else list(spec.op_types)
    ops = "-".join(calibrate_ops) if calibrate_ops else "all"
    cache = work / f"calibration-{spec.base}-{spec.method}-{ops}-{len(calibration)}.json"
    start = time.perf_counter()
    common = {"quant_format": QuantFormat.QDQ, "per_channel": True, "reduce_range": False,
              "activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
              "calibrate_method": METHODS[spec.method], "calibration_cache_path": str(cache)}
    if not cache.exists():
        # calibrate once per base graph and method over the superset of op types
        quantize_static(str(base), str(work / "scratch.onnx"), Reader(calibration),
                        op_types_to_quantize=calibrate_ops,
                        extra_options={"CalibStridedMinMax": 1}, **common)
        log(f"calibrated {spec.method} on the {spec.base} graph ({ops}) with "
            f"{len(calibration)} images in {time.perf_counter() - start:.0f} s")
    include, exclude = node_selection(base, spec)
    for stale in work.glob(f"{target.stem}.ort-*.onnx"):  # the library's optimised copies
        stale.unlink()
    quantize_static(str(base), str(target), None,
                    op_types_to_quantize=None if spec.op_types is None else list(spec.op_types),
                    nodes_to_quantize=include or None, nodes_to_exclude=exclude, **common)
    log(f"quantised {spec.name}: {spec.describe()} ({len(include) or 'all'} nodes selected, "
        f"{len(exclude)} excluded), {time.perf_counter() - start:.0f} s")
    return target


def cosines(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[float]:
    return [float(np.dot(x.ravel(), y.ravel()) / (np.linalg.norm(x) * np.linalg.norm(y)))
            for x, y in zip(a, b, strict=True)]


def embeddings(path: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    session = SessionChange().session(path)
    return [run_encoder(session, x) for x in inputs]


def sensitivity(base: Path, method: str, calibration: Sequence[np.ndarray],
                inputs: Sequence[np.ndarray], work: Path,
                log: Callable[[str], None]) -> list[dict]:
    """Quantise one Conv or Gemm node at a time (the rest fp32): cosine of the embedding to
    fp32 on ``inputs``; saved in ``work`` and reused by a rerun."""
    store = work / f"sensitivity-{method}-{len(calibration)}-{len(inputs)}.json"
    if store.exists():
        log(f"reusing {store}")
        return json.loads(store.read_text())
    reference = embeddings(base, inputs)
    model = onnx.load(str(base), load_external_data=False)
    rows = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        spec = QuantSpec("sensitivity", method, "pre", ("Conv", "Gemm"),
                         only=f"^{re.escape(node.name)}$")
        (work / "encoder-int8-sensitivity.onnx").unlink(missing_ok=True)
        target = quantise({"pre": base}, spec, calibration, work, lambda _: None)
        values = cosines(embeddings(target, inputs), reference)
        target.unlink()
        rows.append({"node": node.name, "op": node.op_type,
                     "cosine_mean": round(float(np.mean(values)), 4),
                     "cosine_min": round(float(np.min(values)), 4)})
    store.write_text(json.dumps(rows))
    worst = sorted(rows, key=lambda r: r["cosine_mean"])[:5]
    log("most sensitive nodes: " + ", ".join(f"{r['node']} {r['cosine_mean']}" for r in worst))
    return rows


def gt_box_dice(paths: dict[str, Path], decoder: Path, checkpoint: Path,
                test: dict[str, list[Sample]], threads: int, work: Path,
                log: Callable[[str], None]) -> tuple[dict, dict]:
    """Per variant and set, the gt-box Dice of every test image; per variant the embedding
    cosines to fp32 (``paths`` starts with "fp32"). One variant at a time (fp32 embeddings kept
    on disk as float16 for the cosines); each finished variant is saved in ``work`` and reused
    by a rerun on the same images."""
    cases = [(set_name, s) for set_name, samples in test.items() for s in samples]
    key = [f"{s.set_name}/{s.image_id}" for _, s in cases]
    store = work / "dice.json"
    done = json.loads(store.read_text()) if store.exists() else {}
    if done.get("images") != key or done.get("threads") != threads:
        done = {"images": key, "threads": threads, "variants": {}}
    embedded = work / "fp32-embeddings"
    embedded.mkdir(exist_ok=True)
    for name, path in paths.items():
        if name in done["variants"]:
            log(f"  {name}: reusing its Dice from {store}")
            continue
        start = time.perf_counter()
        segmenter = SamSegmenter("litemedsam", LITEMEDSAM,
                                 OnnxRuntime(path, decoder, threads=threads), checkpoint)
        scores: dict[str, list[float]] = {}
        cos: list[float] = []
        for i, (set_name, sample) in enumerate(cases):
            pixels = segmenter_input(read_image(sample.image_path))
            mask = read_mask(sample.mask_path)
            embedding = segmenter.encode(pixels)
            result = GtBoxOracle(segmenter).run(pixels, mask, embedding=embedding)
            scores.setdefault(set_name, []).append(dice(result.mask, mask))
            reference = embedded / f"{i:04d}.npy"
            if name == "fp32":
                np.save(reference, embedding.features.astype(np.float16))
            cos += cosines([embedding.features], [np.load(reference).astype(np.float32)])
        done["variants"][name] = {"dice": scores, "cosine": cos}
        store.write_text(json.dumps(done))
        del segmenter
        gc.collect()
        log(f"  {name}: " + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in scores.items())
            + f"; cosine {np.mean(cos):.4f} ({time.perf_counter() - start:.0f} s)")
    variants = done["variants"]
    return ({n: variants[n]["dice"] for n in paths}, {n: variants[n]["cosine"] for n in paths})


# ---------------------------------------------------------------------------------------------


def bench_quantisation(args: argparse.Namespace, images: Images, encoder: Path, decoder: Path,
                       checkpoint: Path, timing_inputs: Sequence[np.ndarray],
                       phases: dict[str, float], log: Callable[[str], None]) -> dict:
    phase = time.perf_counter()
    work = args.work
    bases = {"pre": work / "encoder-preprocessed.onnx", "ext": work / "encoder-extended.onnx"}
    if not bases["pre"].exists():
        quant_pre_process(str(encoder), str(bases["pre"]))
    gelu_fused_graph(encoder, bases["ext"])
    calibration = [model_input(s) for s in images.calibration]
    selection = [model_input(s) for s in images.selection]
    fp32_selection = embeddings(encoder, selection)
    selection_cos: dict[str, float] = {}
    paths: dict[str, Path] = {}
    specs: list[QuantSpec] = []

    def add(spec: QuantSpec) -> None:
        paths[spec.name] = quantise(bases, spec, calibration, work, log)
        selection_cos[spec.name] = float(np.mean(cosines(
            embeddings(paths[spec.name], selection), fp32_selection)))
        specs.append(spec)
        log(f"  {spec.name}: mean cosine to fp32 on {len(selection)} train images "
            f"{selection_cos[spec.name]:.4f}")

    for name, path in (("fp32-preprocessed", bases["pre"]), ("fp32-extended", bases["ext"])):
        paths[name] = path
        selection_cos[name] = float(np.mean(cosines(embeddings(path, selection),
                                                    fp32_selection)))
    add(QuantSpec("minmax-all", "minmax", op_types=None))
    for method in METHODS:
        add(QuantSpec(f"{method}-convmm", method))
    best = max(METHODS, key=lambda m: selection_cos[f"{m}-convmm"])
    log(f"best calibration for Conv+MatMul+Gemm on the selection images: {best}")
    add(QuantSpec(f"{best}-convgemm-noends", best, op_types=("Conv", "Gemm"),
                  exclude_attention=True, exclude_ends=True))
    rows = []
    if not args.skip_sensitivity:
        start = time.perf_counter()
        rows = sensitivity(bases["pre"], best, calibration, selection[::len(selection) // 4 or 1],
                           work, log)
        write_csv(args.out / "sensitivity.csv", rows)
        log(f"wrote {args.out / 'sensitivity.csv'} ({time.perf_counter() - start:.0f} s)")
    for method in METHODS:
        add(QuantSpec(f"{method}-stages123", method, op_types=("Conv", "Gemm"), only=STAGES_1_3))
    best_late = max(METHODS, key=lambda m: selection_cos[f"{m}-stages123"])
    log(f"best calibration for layers.1-3 + neck on the selection images: {best_late}")
    add(QuantSpec(f"{best_late}-ext-stages123", best_late, "ext", ("Conv", "Gemm"),
                  only=STAGES_1_3))
    add(QuantSpec(f"{best_late}-ext-convgemm", best_late, "ext", ("Conv", "Gemm")))
    phases["quantise"] = time.perf_counter() - phase

    phase = time.perf_counter()
    log(f"speed: fp32 and {len(paths)} variants, {args.rounds} interleaved rounds, "
        f"{default_threads()} intra-op threads")
    variants = [Variant("fp32", "library graph", partial(SessionChange().session, encoder))]
    variants += [Variant(name, "", partial(SessionChange().session, path))
                 for name, path in paths.items()]
    time_creation(variants, 1)
    time_passes(variants, timing_inputs, args.rounds, log)
    speed = {v.option: (statistics.median(variants[0].times) / statistics.median(v.times),
                        1 / paired_ratio(v.times, variants[0].times),
                        statistics.median(v.times), v.create_times[0]) for v in variants}
    for v in variants:
        v.session = None
    gc.collect()
    phases["quant_speed"] = time.perf_counter() - phase

    phase = time.perf_counter()
    log(f"gt-box Dice with {args.dice_threads} intra-op thread(s)")
    if args.dice_threads == 1:
        torch.set_num_threads(1)
    # Dice only where it could decide: a variant below the speed criterion is not shipped
    # whatever its Dice (the fp32 run is the reference).
    fast = [s.name for s in specs if speed[s.name][0] >= SHIP_SPEED]
    log(f"at least {SHIP_SPEED}x faster: {', '.join(fast) or 'none'}")
    dice_paths = {"fp32": encoder} | {name: paths[name] for name in fast}
    scores, cos = gt_box_dice(dice_paths, decoder, checkpoint, images.test, args.dice_threads,
                              work, log)
    phases["dice"] = time.perf_counter() - phase
    rows = []
    for name in paths:
        spec = next((s for s in specs if s.name == name), None)
        ratio, paired, median, create = speed[name]
        row: dict[str, object] = {
            "variant": name,
            "description": spec.describe() if spec else "fp32 control: " + {
                "fp32-preprocessed": "quant_pre_process output",
                "fp32-extended": "EXTENDED-optimised graph, GELU fused"}[name],
            "speed_ratio": round(ratio, 3), "paired_speed_ratio": round(paired, 3),
            "median_s": round(median, 4), "fp32_median_s": round(speed["fp32"][2], 4),
            "session_create_s": round(create, 2),
            "cosine_selection_train": round(selection_cos[name], 4),
        }
        if name in cos:
            row["cosine_mean"] = round(float(np.mean(cos[name])), 4)
            row["cosine_min"] = round(float(np.min(cos[name])), 4)
        diffs = []
        for set_name in images.test:
            if name in scores:
                base = float(np.mean(scores["fp32"][set_name]))
                value = float(np.mean(scores[name][set_name]))
                row[f"{set_name}_fp32"] = round(base, 4)
                row[f"{set_name}_int8"] = round(value, 4)
                row[f"{set_name}_diff"] = round(value - base, 4)
                diffs.append(value - base)
        if diffs:
            row["worst_drop"] = round(min(0.0, *diffs), 4)
            row["max_abs_diff"] = round(max(abs(d) for d in diffs), 4)
            row["ships"] = bool(max(abs(d) for d in diffs) <= SHIP_DICE and ratio >= SHIP_SPEED)
        elif spec is not None:
            row["ships"] = False  # below the speed criterion: Dice not measured
        rows.append(row)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(args.out / "quantisation.csv", [{k: r.get(k, "") for k in fields} for r in rows])
    log(f"wrote {args.out / 'quantisation.csv'}")
    return {
        "format": "QDQ, per-channel weights, activations uint8 (asymmetric), weights int8, "
                  "reduce_range False; calibration with CalibStridedMinMax=1 (one image per "
                  "collect) and cached per base graph and method",
        "calibration_images": [f"{s.set_name}/{s.image_id}" for s in images.calibration],
        "selection_images": [f"{s.set_name}/{s.image_id}" for s in images.selection],
        "best_calibration_convmm": best,
        "best_calibration_stages123": best_late,
        "test_images_per_set": {k: len(v) for k, v in images.test.items()},
        "dice_threads": args.dice_threads,
        "shipping_rule": f"|Dice int8 - Dice fp32| <= {SHIP_DICE} on every set and speed "
                         f"ratio >= {SHIP_SPEED}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/encoder"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/clipsam_encoder_bench"),
                        help="quantised graphs and calibration caches (reused by a rerun)")
    parser.add_argument("--fresh", action="store_true", help="empty --work first")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--calib-per-set", type=int, default=5,
                        help="calibration images per set (TRAIN split)")
    parser.add_argument("--test-per-set", type=int, default=20,
                        help="TEST images with a non-empty mask per set for Dice and cosine")
    parser.add_argument("--dice-threads", type=int, default=1,
                        help="intra-op threads of the sessions of the Dice part")
    parser.add_argument("--skip-sensitivity", action="store_true",
                        help="skip quantising one node at a time")
    args = parser.parse_args()

    started, load_start = time.perf_counter(), os.getloadavg()
    phases: dict[str, float] = {}

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f}s] {message}", flush=True)

    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    reused = sorted(p.name for p in args.work.iterdir() if p.suffix == ".json"
                    or (p.name.startswith("encoder-int8-") and ".ort-" not in p.name))
    args.out.mkdir(parents=True, exist_ok=True)

    images = choose_images(args.data, args.calib_per_set, args.test_per_set)
    checkpoint, encoder, decoder = litemedsam_graphs(images.selection[0])
    log(f"encoder graph {encoder}")
    log(f"{len(images.calibration)} calibration (train), {len(images.selection)} selection "
        f"(train), {sum(map(len, images.test.values()))} test images")
    notes = bench_quantisation(args, images, encoder, decoder, checkpoint,
                               timing_inputs(images.test), phases, log)
    record = run_record(
        started, load_start, onnx=onnx.__version__,
        timing=f"medians of {args.rounds} interleaved rounds (rotated order, one warm-up pass "
               "each) on 4 preprocessed test images",
        quantisation=notes, reused_from_work_dir=reused,
        phase_seconds={k: round(v) for k, v in phases.items()})
    (args.out / "int8_run.json").write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {args.out / 'int8_run.json'}")


if __name__ == "__main__":
    main()
