"""A JSON record of one run (inputs, prompts, boxes, scores, model, timings, versions)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from clipsam.io.atomic import write_text_atomic

VERSIONED_PACKAGES = ("clipsam", "torch", "onnxruntime", "numpy", "transformers")


def software_versions() -> dict[str, str | None]:
    """Installed versions of clipsam and its main runtimes (None when not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def to_jsonable(value: Any) -> Any:
    """Plain JSON values from numpy scalars/arrays, paths, dataclasses, tuples and sets.

    Non-finite floats become None, so the file stays strict JSON.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_record_json(path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``record`` as indented JSON, adding ``versions`` unless the record has them."""
    full = {**record}
    full.setdefault("versions", software_versions())
    text = json.dumps(to_jsonable(full), indent=2, allow_nan=False, default=str)
    return write_text_atomic(path, text + "\n")
