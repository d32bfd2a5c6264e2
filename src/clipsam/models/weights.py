"""Where model weights come from: a local directory, the per-user cache, or a checked download.

Lookup order for a :class:`WeightSpec`: the directory given by the caller, then
``$CLIPSAM_WEIGHTS_DIR``, then the cache (``$CLIPSAM_CACHE_DIR`` or ``~/.cache/clipsam``). If the
file is in none of them it is downloaded from ``spec.url`` into the cache, verified against its
SHA-256, and moved into place atomically. Offline, the error says which file to get, from where,
and where to put it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from clipsam.errors import WeightsError
from clipsam.io.atomic import atomic_path, write_text_atomic


@dataclass(frozen=True)
class WeightSpec:
    """One weights file: the name users put it under, and its official source."""

    name: str
    filename: str
    url: str
    sha256: str | None = None
    licence: str = ""


def cache_dir() -> Path:
    """The per-user cache (ONNX exports, downloads): ``$CLIPSAM_CACHE_DIR`` or ~/.cache/clipsam."""
    root = os.environ.get("CLIPSAM_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "clipsam"


def search_dirs(weights_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    dirs = []
    if weights_dir:
        dirs.append(Path(weights_dir))
    if os.environ.get("CLIPSAM_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["CLIPSAM_WEIGHTS_DIR"]))
    dirs.append(cache_dir() / "weights")
    return dirs


def find_local(spec: WeightSpec, weights_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The first existing copy of ``spec`` (as a file or a folder) in the search directories."""
    for folder in search_dirs(weights_dir):
        for candidate in (folder / spec.filename, folder / spec.name / spec.filename,
                          folder / spec.name):
            if candidate.exists():
                return candidate
    return None


_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """The file's SHA-256, computed once per (resolved path, mtime, size): kept in memory and in
    the per-user cache (``<cache>/sha256/``), so a new process does not re-read large weights."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _DIGESTS:
        return _DIGESTS[key]
    name = hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
    record = cache_dir() / "sha256" / name
    try:
        stored = record.read_text().strip()
    except OSError:
        stored = ""
    if len(stored) == 64:
        _DIGESTS[key] = stored
        return stored
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    _DIGESTS[key] = digest.hexdigest()
    try:
        write_text_atomic(record, _DIGESTS[key] + "\n")
    except OSError as exc:  # a read-only cache only costs the next process a re-read
        logging.getLogger(__name__).debug("digest of %s not cached: %s", path, exc)
    return _DIGESTS[key]


def resolve(
    spec: WeightSpec,
    weights_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Path:
    """Return a local path to ``spec``'s file, downloading it into the cache if allowed."""
    local = find_local(spec, weights_dir)
    if local is not None:
        return local
    target = cache_dir() / "weights" / spec.filename
    hint = (f"get {spec.filename} from {spec.url} and put it in "
            f"{search_dirs(weights_dir)[0]} (or set CLIPSAM_WEIGHTS_DIR)")
    if not download:
        raise WeightsError(f"weights for {spec.name} not found: {hint}")
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(spec.url, timeout=30) as response, tmp.open("wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
            if spec.sha256 and sha256_of(tmp) != spec.sha256:
                raise WeightsError(f"download of {spec.name} failed its checksum: {hint}")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise WeightsError(f"weights for {spec.name} not found and download failed "
                           f"({exc.__class__.__name__}): {hint}") from exc
    return target
