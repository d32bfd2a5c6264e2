"""Where the CLIP-family checkpoints come from: the Hugging Face repositories' own file layouts.

Each model is one local folder (named like the upstream repository) holding the upstream files
unchanged; :func:`resolve_folder` finds it through :func:`clipsam.models.weights.resolve`
(caller's directory, ``$CLIPSAM_WEIGHTS_DIR``, cache, else a download from the official URL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from clipsam.errors import WeightsError
from clipsam.models.weights import WeightSpec, find_local, resolve


@dataclass(frozen=True)
class ModelFiles:
    """The files one model needs, by the Hugging Face repository each comes from."""

    folder: str
    repo: str
    files: tuple[str, ...]
    weights: tuple[str, ...]
    licence: str
    other_repo_files: tuple[tuple[str, str], ...] = ()

    def spec(self, filename: str, repo: str | None = None) -> WeightSpec:
        path = f"{self.folder}/{filename}"
        url = f"https://huggingface.co/{repo or self.repo}/resolve/main/{filename}"
        return WeightSpec(name=path, filename=path, url=url, licence=self.licence)


def _openai(folder: str) -> ModelFiles:
    return ModelFiles(folder=folder, repo=f"openai/{folder}",
                      files=("config.json", "vocab.json", "merges.txt"),
                      weights=("model.safetensors", "pytorch_model.bin"), licence="MIT")


CLIP_VIT_B32 = _openai("clip-vit-base-patch32")
CLIP_VIT_B16 = _openai("clip-vit-base-patch16")
CLIP_VIT_L14 = _openai("clip-vit-large-patch14")
CLIP_VIT_L14_336 = _openai("clip-vit-large-patch14-336")
BIOMEDCLIP = ModelFiles(
    folder="BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    repo="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    files=("open_clip_config.json",),
    weights=("open_clip_pytorch_model.bin",),
    licence="MIT",
    other_repo_files=(("vocab.txt", "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"),),
)


def resolve_folder(
    model: ModelFiles, weights_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> Path:
    """The one folder holding all of ``model``'s files (``weights_dir`` may be that folder)."""
    needed = [*model.files, *(name for name, _ in model.other_repo_files)]
    if weights_dir is not None:
        direct = Path(weights_dir)
        if all((direct / name).is_file() for name in needed) and any(
                (direct / name).is_file() for name in model.weights):
            return direct
    repos = dict(model.other_repo_files)
    weights = next((spec for spec in (model.spec(n) for n in model.weights)
                    if find_local(spec, weights_dir) is not None), model.spec(model.weights[0]))
    paths = [resolve(model.spec(name, repos.get(name)), weights_dir, download) for name in needed]
    paths.append(resolve(weights, weights_dir, download))
    folders = {path.parent for path in paths}
    if len(folders) != 1:
        raise WeightsError(f"the files of {model.folder} are split between "
                           f"{', '.join(sorted(map(str, folders)))}: put them in one folder")
    return folders.pop()


def model_file_paths(
    model: ModelFiles, weights_dir: str | os.PathLike[str] | None = None, download: bool = True
) -> list[Path]:
    """Every file of ``model`` that a load reads: its folder's named files and the weights."""
    folder = resolve_folder(model, weights_dir, download)
    needed = [*model.files, *(name for name, _ in model.other_repo_files)]
    weights = next(name for name in model.weights if (folder / name).is_file())
    return [folder / name for name in (*needed, weights)]
