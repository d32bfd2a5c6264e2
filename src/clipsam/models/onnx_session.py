"""ONNX Runtime sessions for clipsam's exported graphs: the execution provider of a device, the
thread count, and on the CPU an optimised graph kept in the user cache (never beside the
exported graph, whose folder may be a read-only install or a model folder), so that a new
process skips ONNX Runtime's graph optimisation (its saved form can hold optimisations for this
CPU, so it is keyed by the ONNX Runtime version and the CPU's instruction-set flags, and by the
exported graph's path, size and modification time)."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

from clipsam.errors import InputError, WeightsError
from clipsam.io.atomic import atomic_path

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Intra-op threads: ``$CLIPSAM_THREADS``, else every core this process may use."""
    env = os.environ.get("CLIPSAM_THREADS")
    if env:
        return max(1, int(env))
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return max(1, len(usable) if usable else (os.cpu_count() or 1))


def onnx_providers(device: str) -> list[str]:
    """The ONNX Runtime execution providers for ``device``: CUDA's when asked for (an error when
    this onnxruntime build has none), else the CPU's."""
    if device == "cpu":
        return [CPU_PROVIDER]
    import onnxruntime as ort

    if CUDA_PROVIDER not in ort.get_available_providers():
        raise InputError(f"device {device!r} with runtime 'onnx' needs onnxruntime-gpu: this "
                         f"onnxruntime has no {CUDA_PROVIDER}; use runtime 'torch' or device "
                         "'cpu'")
    return [CUDA_PROVIDER]


@cache
def cpu_key() -> str:
    """ONNX Runtime version, machine and CPU flags, hashed: where a saved optimised graph holds."""
    import onnxruntime as ort

    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        flags = platform.processor()
    text = f"{ort.__version__}|{platform.machine()}|{flags}"
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def optimised_path(graph: Path) -> Path:
    """Where the CPU-optimised form of ``graph`` is kept: ``<cache>/ort/`` (the user cache of
    :func:`clipsam.models.weights.cache_dir`), one file per graph file version and CPU."""
    from clipsam.models.weights import cache_dir

    graph = Path(graph).resolve()
    stat = graph.stat()
    version = hashlib.blake2b(f"{graph}|{stat.st_size}|{stat.st_mtime_ns}".encode(),
                              digest_size=8).hexdigest()
    return cache_dir() / "ort" / f"{graph.stem}.{version}.ort-{cpu_key()}.onnx"


def session_options(threads: int | None = None, optimise: bool = True) -> Any:
    """The ``SessionOptions`` of every clipsam session: ``threads`` intra-op threads (default
    :func:`default_threads`), one inter-op thread, every graph optimisation (none with
    ``optimise=False``, for a graph saved already optimised); ONNX Runtime's defaults otherwise
    (memory arena and memory pattern on, sequential execution)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return options


def onnx_session(graph: Path, device: str = "cpu", threads: int | None = None) -> Any:
    """An ``InferenceSession`` of ``graph`` on ``device`` with :func:`session_options`; on the
    CPU it loads the kept optimised graph (saving it first if need be). A session ONNX Runtime
    started on another provider than asked is an error, not a silent CPU run."""
    import onnxruntime as ort

    providers = onnx_providers(device)
    graph = Path(graph)
    optimised = optimised_path(graph) if providers[0] == CPU_PROVIDER else None
    if optimised is not None and optimised.is_file():
        options = session_options(threads, optimise=False)
        session = ort.InferenceSession(str(optimised), options, providers=providers)
    else:
        options = session_options(threads)
        session = None
        if optimised is not None:
            options.log_severity_level = 3  # saving warns that the graph suits this CPU only
            try:
                optimised.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(optimised) as tmp:
                    options.optimized_model_filepath = str(tmp)
                    session = ort.InferenceSession(str(graph), options, providers=providers)
            except OSError as exc:  # a read-only cache: optimise again in the next process
                log.warning("the optimised graph of %s could not be kept in %s (%s): every "
                            "new process optimises it again", graph.name, optimised.parent, exc)
                options.optimized_model_filepath = ""
        if session is None:
            session = ort.InferenceSession(str(graph), options, providers=providers)
    used = session.get_providers()[0]
    if used != providers[0]:
        raise WeightsError(f"ONNX Runtime could not start {providers[0]} (it runs on {used}); "
                           "check the CUDA libraries or use device 'cpu'")
    return session
