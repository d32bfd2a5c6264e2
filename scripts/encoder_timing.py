"""What the two LiteMedSAM encoder benchmarks share: sessions, interleaved timing, images, records.

Imported by ``bench_encoder_options.py`` and ``bench_encoder_int8.py`` (``scripts/`` is on the
path when they run). Every session starts from the library's own options
(:func:`clipsam.models.onnx_session.session_options`); a :class:`SessionChange` changes only
what it names.
"""

from __future__ import annotations

import csv
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import Sample, list_samples
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.io.splits import split_of
from clipsam.models.onnx_session import CPU_PROVIDER, default_threads, session_options
from clipsam.models.sam import LITEMEDSAM, load_litemedsam
from clipsam.models.sam.preprocess import prepare_image
from clipsam.models.sam.runtime import onnx_paths
from clipsam.train.captions import builtin_concepts

LEVELS = {"DISABLE": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
          "BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


@dataclass(frozen=True)
class SessionChange:
    """Changes to the library's session options; None keeps the library's setting."""

    level: str | None = None
    intra: int | None = None
    inter: int | None = None
    arena: bool | None = None
    pattern: bool | None = None
    parallel: bool | None = None
    spinning: bool | None = None  # None: ONNX Runtime's default (spin)

    def options(self, save_to: Path | None = None) -> ort.SessionOptions:
        options = session_options()
        if self.level is not None:
            options.graph_optimization_level = LEVELS[self.level]
        if self.intra is not None:
            options.intra_op_num_threads = self.intra
        if self.inter is not None:
            options.inter_op_num_threads = self.inter
        if self.arena is not None:
            options.enable_cpu_mem_arena = self.arena
        if self.pattern is not None:
            options.enable_mem_pattern = self.pattern
        if self.parallel is not None:
            options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if self.parallel
                                      else ort.ExecutionMode.ORT_SEQUENTIAL)
        if self.spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning",
                                             "1" if self.spinning else "0")
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
        return options

    def session(self, graph: Path, save_to: Path | None = None) -> ort.InferenceSession:
        return ort.InferenceSession(str(graph), self.options(save_to), providers=[CPU_PROVIDER])


def describe(options: ort.SessionOptions) -> str:
    """A session's settings in the words of the options table ("ALL, intra 2, inter 1, ...")."""
    level = next(name for name, value in LEVELS.items()
                 if value == options.graph_optimization_level)
    memory = {(True, True): "arena+pattern", (True, False): "arena",
              (False, True): "pattern", (False, False): "no arena, no pattern"}[
        (options.enable_cpu_mem_arena, options.enable_mem_pattern)]
    mode = ("parallel" if options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
            else "sequential")
    return (f"{level}, intra {options.intra_op_num_threads}, inter "
            f"{options.inter_op_num_threads}, {memory}, {mode}")


@dataclass
class Variant:
    """One encoder session to time, made by ``make``."""

    option: str
    value: str
    make: Callable[[], ort.InferenceSession]
    session: ort.InferenceSession | None = None
    times: list[float] = field(default_factory=list)
    create_times: list[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.option}={self.value}"

    def create(self) -> ort.InferenceSession:
        start = time.perf_counter()
        session = self.make()
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


def set_dirs(data: Path) -> list[Path]:
    """The folders of the built-in training sets (2-D images with masks) found in ``data``."""
    return sorted(data / name for name in builtin_concepts() if (data / name / "images").is_dir())


def evenly(items: Sequence, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def model_input(sample: Sample) -> np.ndarray:
    """The (1, 3, 256, 256) float32 encoder input the segmenter makes from ``sample``."""
    pixels = segmenter_input(read_image(sample.image_path))
    return prepare_image(pixels, LITEMEDSAM.input_size, LITEMEDSAM.normalisation)[0]


def test_images(data: Path, per_set: int) -> dict[str, list[Sample]]:
    """Per set, ``per_set`` TEST-part images (:func:`clipsam.io.splits.split_of`) with a
    non-empty mask, spread evenly over the set."""
    test = {}
    for folder in set_dirs(data):
        tested = [s for s in list_samples(folder)
                  if split_of(s) == "test" and read_mask(s.mask_path).any()]
        test[folder.name] = evenly(tested, per_set)
    return test


def timing_inputs(test: dict[str, list[Sample]], count: int = 4) -> list[np.ndarray]:
    """The encoder inputs of ``count`` of the test images, spread evenly over all sets."""
    return [model_input(s) for s in evenly([s for samples in test.values() for s in samples],
                                           count)]


def litemedsam_graphs(check: Sample) -> tuple[Path, Path, Path]:
    """(checkpoint, encoder graph, decoder graph) of the library's LiteMedSAM on ONNX Runtime,
    after checking that :func:`model_input` through its encoder session gives the features of
    the segmenter's own ``encode``."""
    segmenter = load_litemedsam(runtime="onnx")
    encoder, decoder, _ = onnx_paths("litemedsam", segmenter.checkpoint)
    expected = segmenter.encode(segmenter_input(read_image(check.image_path))).features
    direct = run_encoder(segmenter.runtime.encoder, model_input(check))
    if not np.allclose(expected, direct, atol=1e-5):
        raise SystemExit("the benchmark's encoder input differs from the segmenter's encode()")
    checkpoint = segmenter.checkpoint
    del segmenter
    gc.collect()
    return checkpoint, encoder, decoder


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "amx")))
    except OSError:
        pass
    return []


def run_record(started: float, load_start: tuple[float, ...], **fields: Any) -> dict:
    """Date, command, machine (with the load average at start and end) and ``fields``."""
    return {
        "date": f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "onnxruntime": ort.__version__, "default_threads": default_threads(),
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        **fields,
        "total_seconds": round(time.perf_counter() - started),
    }
