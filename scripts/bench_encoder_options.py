"""Measure ONNX Runtime session options and static int8 quantisation of LiteMedSAM's image encoder.

Everything is timed interleaved in this one process (variant A, B, C, ... then again, with the
order rotated every round) on real preprocessed images, and reported as medians and ratios:

1. Session options of the fp32 encoder against the library's own session (ORT_ENABLE_ALL,
   intra-op threads = ``default_threads()``, inter-op 1, memory arena and pattern on, sequential):
   graph optimisation level, a cached optimised graph (``optimized_model_filepath`` saved once,
   then loaded with optimisations disabled), intra-op threads, thread spinning, memory arena /
   memory pattern, sequential vs parallel execution. Per-pass median and session-creation median.
2. Static int8 quantisation (QDQ, per-channel weights, uint8 activations / int8 weights), with
   ``quantize_static`` calibrated on preprocessed images from the TRAIN part of the subject split
   (:func:`clipsam.io.splits.split_of`) of every set: MinMax, Percentile and Entropy calibration;
   all operators, Conv/MatMul/Gemm, Conv/Gemm with the attention MatMuls and first/last convs in
   fp32, and only the transformer stages (layers.1-3) and neck, on the ``quant_pre_process``
   graph and on ONNX Runtime's EXTENDED-optimised graph (GELU fused). The best calibration is
   picked on train images not used for calibration. A sensitivity scan quantises one Conv/Gemm
   at a time. For each variant: speed ratio to fp32 (interleaved), cosine of the embedding to
   fp32, and ground-truth-box Dice with LiteMedSAM on the TEST images of every set. Shipping
   criterion: |Dice int8 - Dice fp32| <= 0.005 on every set and at least 1.3x faster (Dice is
   measured only for the variants that pass the speed criterion).

Writes ``options.csv``, ``quantisation.csv``, ``sensitivity.csv`` and ``run.json`` into
``--out``; graphs and calibration caches go to ``--work`` (reused by a rerun unless
``--fresh``).

    .venv/bin/python scripts/bench_encoder_options.py --data ../shared/data \
        --out docs/results/encoder
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from bench_encoder import cpu_name  # scripts/ is on the path when run as a script
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
from clipsam.models.sam import LITEMEDSAM, SamSegmenter, load_litemedsam
from clipsam.models.sam.preprocess import prepare_image
from clipsam.models.sam.runtime import OnnxRuntime, onnx_paths

try:  # where the thread default lives moved between versions of the library
    from clipsam.models.onnx_session import default_threads
except ImportError:
    from clipsam.models.sam.runtime import default_threads

LEVELS = {"DISABLE": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
          "BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
           "entropy": CalibrationMethod.Entropy}
CONV_MATMUL = ("Conv", "MatMul", "Gemm")
SHIP_DICE = 0.005
SHIP_SPEED = 1.3


# ---------------------------------------------------------------------------------------------
# sessions and interleaved timing


@dataclass(frozen=True)
class SessionConfig:
    """The SessionOptions of one variant; the defaults are the library's (runtime.py)."""

    level: str = "ALL"
    intra: int | None = None  # None: default_threads()
    inter: int = 1
    arena: bool = True
    pattern: bool = True
    parallel: bool = False
    spinning: bool | None = None  # None: ONNX Runtime's default (spin)

    def options(self, save_to: Path | None = None) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra or default_threads()
        options.inter_op_num_threads = self.inter
        options.graph_optimization_level = LEVELS[self.level]
        options.enable_cpu_mem_arena = self.arena
        options.enable_mem_pattern = self.pattern
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if self.parallel
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
        if self.spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning",
                                             "1" if self.spinning else "0")
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
        return options


@dataclass
class Variant:
    """One encoder session to time: a graph file and its session options."""

    option: str
    value: str
    path: Path
    config: SessionConfig = field(default_factory=SessionConfig)
    session: ort.InferenceSession | None = None
    times: list[float] = field(default_factory=list)
    create_times: list[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.option}={self.value}"

    def create(self) -> ort.InferenceSession:
        start = time.perf_counter()
        session = ort.InferenceSession(str(self.path), self.config.options(),
                                       providers=["CPUExecutionProvider"])
        self.create_times.append(time.perf_counter() - start)
        return session


def run_encoder(session: ort.InferenceSession, image: np.ndarray) -> np.ndarray:
    return session.run(None, {"image": image})[0]


def time_creation(variants: Sequence[Variant], repeats: int) -> None:
    """Create every variant's session ``repeats`` times, interleaved; keep the last one."""
    for r in range(repeats):
        for variant in rotated(variants, r):
            variant.session = None
            gc.collect()
            variant.session = variant.create()


def time_passes(variants: Sequence[Variant], inputs: Sequence[np.ndarray], rounds: int,
                log: Callable[[str], None]) -> None:
    """One warm-up pass per session, then ``rounds`` rounds of one pass of each session (order
    rotated each round, the same image for every session within a round)."""
    for variant in variants:
        run_encoder(variant.session, inputs[0])
    for r in range(rounds):
        image = inputs[r % len(inputs)]
        for variant in rotated(variants, r):
            start = time.perf_counter()
            run_encoder(variant.session, image)
            variant.times.append(time.perf_counter() - start)
        if (r + 1) % 5 == 0 or r + 1 == rounds:
            log(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{v.key} {statistics.median(v.times):.3f}s" for v in variants))


def rotated(items: Sequence, shift: int) -> list:
    shift %= max(1, len(items))
    return list(items[shift:]) + list(items[:shift])


def paired_ratio(times: Sequence[float], reference: Sequence[float]) -> float:
    """Median over rounds of time / reference time within the same round."""
    return statistics.median(t / ref for t, ref in zip(times, reference, strict=True))


# ---------------------------------------------------------------------------------------------
# images


def set_dirs(data: Path) -> list[Path]:
    return sorted(p for p in data.iterdir() if (p / "images").is_dir() and (p / "masks").is_dir())


def evenly(items: Sequence, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def model_input(sample: Sample) -> np.ndarray:
    """The (1, 3, 256, 256) float32 encoder input the segmenter makes from ``sample``."""
    pixels = segmenter_input(read_image(sample.image_path))
    return prepare_image(pixels, LITEMEDSAM.input_size, LITEMEDSAM.normalisation)[0]


@dataclass(frozen=True)
class Images:
    calibration: list[Sample]
    selection: list[Sample]  # train images not used for calibration, to pick a calibration
    test: dict[str, list[Sample]]  # test images with a non-empty mask, per set


def choose_images(data: Path, calib_per_set: int, test_per_set: int) -> Images:
    calibration, selection, test = [], [], {}
    for folder in set_dirs(data):
        samples = list_samples(folder)
        train = [s for s in samples if split_of(s) == "train"]
        chosen = evenly(train, calib_per_set)
        calibration += chosen
        selection += evenly([s for s in train if s not in chosen], 2)
        tested = [s for s in samples if split_of(s) == "test" and read_mask(s.mask_path).any()]
        test[folder.name] = evenly(tested, test_per_set)
    return Images(calibration, selection, test)


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
# part 1: session options


def option_variants(encoder: Path, work: Path, log: Callable[[str], None]) -> list[Variant]:
    threads = default_threads()
    variants = [Variant("default", f"ALL, intra {threads}, inter 1, arena+pattern, sequential",
                        encoder)]
    variants += [Variant("graph_optimization_level", level, encoder, SessionConfig(level=level))
                 for level in ("DISABLE", "BASIC", "EXTENDED")]
    for level in ("ALL", "EXTENDED"):
        cached = work / f"encoder-optimised-{level.lower()}.onnx"
        if not cached.exists():
            start = time.perf_counter()
            ort.InferenceSession(str(encoder), SessionConfig(level=level).options(cached),
                                 providers=["CPUExecutionProvider"])
            log(f"saved the {level}-optimised graph to {cached} "
                f"({time.perf_counter() - start:.1f} s)")
        variants.append(Variant("cached_optimised_graph", f"saved at {level}, loaded DISABLE",
                                cached, SessionConfig(level="DISABLE")))
    variants += [Variant("intra_op_num_threads", str(n), encoder, SessionConfig(intra=n))
                 for n in (1, 2, 4) if n != threads and n <= 2 * (os.cpu_count() or 1)]
    variants += [
        Variant("allow_spinning", "0", encoder, SessionConfig(spinning=False)),
        Variant("enable_cpu_mem_arena", "off", encoder, SessionConfig(arena=False)),
        Variant("enable_mem_pattern", "off", encoder, SessionConfig(pattern=False)),
        Variant("arena+mem_pattern", "both off", encoder,
                SessionConfig(arena=False, pattern=False)),
        Variant("execution_mode", "PARALLEL, inter 2", encoder,
                SessionConfig(parallel=True, inter=2)),
    ]
    return variants


def bench_options(encoder: Path, work: Path, inputs: Sequence[np.ndarray], rounds: int,
                  create_repeats: int, log: Callable[[str], None]) -> list[dict]:
    variants = option_variants(encoder, work, log)
    log(f"session creation, {create_repeats} interleaved repeats of {len(variants)} variants")
    time_creation(variants, create_repeats)
    reference = variants[0].session.run(None, {"image": inputs[0]})[0]
    log(f"per-pass times, {rounds} interleaved rounds")
    time_passes(variants, inputs, rounds, log)
    default = variants[0]
    rows = []
    for v in variants:
        out = v.session.run(None, {"image": inputs[0]})[0]
        rows.append({
            "option": v.option, "value": v.value,
            "median_s": round(statistics.median(v.times), 4),
            "ratio_to_default": round(statistics.median(v.times)
                                      / statistics.median(default.times), 3),
            "paired_ratio_to_default": round(paired_ratio(v.times, default.times), 3),
            "session_create_s": round(statistics.median(v.create_times), 3),
            "max_abs_diff_to_default": float(f"{np.abs(out - reference).max():.2g}"),
            "passes": len(v.times),
        })
        v.session = None
    gc.collect()
    return rows


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
    ort.InferenceSession(str(encoder), SessionConfig(level="EXTENDED").options(raw),
                         providers=["CPUExecutionProvider"])
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
    session = ort.InferenceSession(str(path), SessionConfig().options(),
                                   providers=["CPUExecutionProvider"])
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
    variants = [Variant("fp32", "library graph", encoder)]
    variants += [Variant(name, "", path) for name, path in paths.items()]
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


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "amx")))
    except OSError:
        pass
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/encoder"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/clipsam_encoder_bench"),
                        help="quantised graphs and calibration caches (reused by a rerun)")
    parser.add_argument("--fresh", action="store_true", help="empty --work first")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--create-repeats", type=int, default=3)
    parser.add_argument("--calib-per-set", type=int, default=5,
                        help="calibration images per set (TRAIN split)")
    parser.add_argument("--test-per-set", type=int, default=20,
                        help="TEST images with a non-empty mask per set for Dice and cosine")
    parser.add_argument("--dice-threads", type=int, default=1,
                        help="intra-op threads of the sessions of the Dice part")
    parser.add_argument("--skip-options", action="store_true")
    parser.add_argument("--skip-quant", action="store_true")
    parser.add_argument("--skip-sensitivity", action="store_true",
                        help="skip quantising one node at a time")
    args = parser.parse_args()

    started = time.perf_counter()
    phases: dict[str, float] = {}
    load_start = os.getloadavg()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f}s] {message}", flush=True)

    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    reused = sorted(p.name for p in args.work.iterdir() if p.suffix == ".json"
                    or (p.name.startswith("encoder-int8-") and ".ort-" not in p.name))
    args.out.mkdir(parents=True, exist_ok=True)

    segmenter = load_litemedsam(runtime="onnx")
    checkpoint = segmenter.checkpoint
    encoder, decoder = onnx_paths("litemedsam", checkpoint)
    log(f"encoder graph {encoder}")
    images = choose_images(args.data, args.calib_per_set, args.test_per_set)
    timing_inputs = [model_input(s) for s in evenly(
        [s for samples in images.test.values() for s in samples], 4)]
    check = segmenter.encode(segmenter_input(read_image(images.selection[0].image_path)))
    direct = run_encoder(segmenter.runtime.encoder, model_input(images.selection[0]))
    assert np.allclose(check.features, direct, atol=1e-5), "raw input differs from encode()"
    del segmenter, check, direct
    gc.collect()
    log(f"{len(images.calibration)} calibration (train), {len(images.selection)} selection "
        f"(train), {sum(map(len, images.test.values()))} test images")

    if not args.skip_options:
        phase = time.perf_counter()
        rows = bench_options(encoder, args.work, timing_inputs, args.rounds,
                             args.create_repeats, log)
        write_csv(args.out / "options.csv", rows)
        phases["options"] = time.perf_counter() - phase
        log(f"wrote {args.out / 'options.csv'}")

    quant_notes: dict[str, object] = {}
    if not args.skip_quant:
        quant_notes = bench_quantisation(args, images, encoder, decoder, checkpoint,
                                         timing_inputs, phases, log)

    run = {
        "date": f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                    "default_threads": default_threads(),
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "timing": f"medians of {args.rounds} interleaved rounds (rotated order, one warm-up "
                  f"pass each) on {len(timing_inputs)} preprocessed test images; session "
                  f"creation medians of {args.create_repeats} interleaved repeats",
        "quantisation": quant_notes,
        "reused_from_work_dir": reused,
        "phase_seconds": {k: round(v) for k, v in phases.items()},
        "total_seconds": round(time.perf_counter() - started),
    }
    (args.out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    log(f"wrote {args.out / 'run.json'}")


if __name__ == "__main__":
    main()
