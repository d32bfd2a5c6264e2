"""Time ONNX Runtime session options of LiteMedSAM's image encoder against the library's session.

The reference is the library's own options (:func:`clipsam.models.onnx_session.session_options`:
all graph optimisations, intra-op threads = ``default_threads()``, one inter-op thread, memory
arena and pattern on, sequential) on the exported graph; each other variant changes one option
of those (graph optimisation level, intra-op threads, thread spinning, memory arena / pattern,
parallel execution). ``cached_optimised_graph`` rows load a graph saved already optimised with
optimisation off; the one saved at ALL is the library's own session
(:func:`clipsam.models.onnx_session.onnx_session`, which keeps that graph in the cache).
Everything is timed interleaved in this one process (variant A, B, C, ... then again, with the
order rotated every round) on real preprocessed TEST-part images, as medians and ratios; the
largest feature difference to the reference is reported too.

Writes ``options.csv`` and ``options_run.json`` (date, command, machine, load average) into
``--out``; the saved EXTENDED graph goes to ``--work``.

    .venv/bin/python scripts/bench_encoder_options.py --data ../shared/data \
        --out docs/results/encoder
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from encoder_timing import (  # scripts/ is on the path when run as a script
    SessionChange,
    Variant,
    describe,
    litemedsam_graphs,
    paired_ratio,
    run_record,
    test_images,
    time_creation,
    time_passes,
    timing_inputs,
    write_csv,
)

from clipsam.models.onnx_session import default_threads, onnx_session, session_options


def option_variants(encoder: Path, work: Path, log: Callable[[str], None]) -> list[Variant]:
    """The library's options first, then one variant per changed option."""
    threads = default_threads()
    library = SessionChange()
    variants = [Variant("default", describe(session_options()), partial(library.session, encoder))]
    variants += [Variant("graph_optimization_level", level, partial(
        SessionChange(level=level).session, encoder)) for level in ("DISABLE", "BASIC", "EXTENDED")]
    onnx_session(encoder)  # saves the library's optimised graph if it is not cached yet
    variants.append(Variant("cached_optimised_graph", "saved at ALL, loaded DISABLE",
                            partial(onnx_session, encoder)))
    extended = work / "encoder-optimised-extended.onnx"
    if not extended.exists():
        start = time.perf_counter()
        SessionChange(level="EXTENDED").session(encoder, save_to=extended)
        log(f"saved the EXTENDED-optimised graph to {extended} "
            f"({time.perf_counter() - start:.1f} s)")
    variants.append(Variant("cached_optimised_graph", "saved at EXTENDED, loaded DISABLE",
                            partial(SessionChange(level="DISABLE").session, extended)))
    variants += [Variant("intra_op_num_threads", str(n), partial(
        SessionChange(intra=n).session, encoder))
                 for n in (1, 2, 4) if n != threads and n <= 2 * (os.cpu_count() or 1)]
    changes = [("allow_spinning", "0", SessionChange(spinning=False)),
               ("enable_cpu_mem_arena", "off", SessionChange(arena=False)),
               ("enable_mem_pattern", "off", SessionChange(pattern=False)),
               ("arena+mem_pattern", "both off", SessionChange(arena=False, pattern=False)),
               ("execution_mode", "PARALLEL, inter 2", SessionChange(parallel=True, inter=2))]
    variants += [Variant(option, value, partial(change.session, encoder))
                 for option, value, change in changes]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/encoder"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/clipsam_encoder_bench"),
                        help="the EXTENDED-optimised graph (reused by a rerun)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--create-repeats", type=int, default=3,
                        help="interleaved session creations per variant")
    parser.add_argument("--test-per-set", type=int, default=20,
                        help="TEST images with a non-empty mask per set, of which 4 spread "
                             "over all sets are timed")
    args = parser.parse_args()

    started, load_start = time.perf_counter(), os.getloadavg()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f}s] {message}", flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    test = test_images(args.data, args.test_per_set)
    inputs = timing_inputs(test)
    _, encoder, _ = litemedsam_graphs(next(s for samples in test.values() for s in samples))
    log(f"encoder graph {encoder}; {len(inputs)} timed images")
    rows = bench_options(encoder, args.work, inputs, args.rounds, args.create_repeats, log)
    write_csv(args.out / "options.csv", rows)
    log(f"wrote {args.out / 'options.csv'}")
    record = run_record(
        started, load_start,
        timing=f"medians of {args.rounds} interleaved rounds (rotated order, one warm-up pass "
               f"each) on {len(inputs)} preprocessed test images; session creation medians of "
               f"{args.create_repeats} interleaved repeats")
    (args.out / "options_run.json").write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {args.out / 'options_run.json'}")


if __name__ == "__main__":
    main()
