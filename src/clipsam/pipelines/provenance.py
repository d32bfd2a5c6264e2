"""What made a result: the one description of a run that records, summaries and resume use.

:func:`run_identity` resolves a :class:`~clipsam.config.RunConfig` before any model is loaded:
``auto`` runtime and device, the model files each model of the method reads (with their SHA-256,
computed once per process per file version; the text model's include its sentence encoder
and the prompt library its prompts are expanded with) and the clipsam version. Its ``key``
hashes everything that can change the output, so ``clipsam segment`` and ``clipsam eval`` reuse
only results made the same way. File locations (``weights_dir``, ``weak_model``, a text-model
folder's path) are not part of the key: the hashes of the files they lead to are; nor is
``keep_intermediates``, which changes no mask or score.

:meth:`RunIdentity.describe` adds what the loaded models report (the runtime and the device
they actually run on, the ONNX Runtime provider and graph files) and gives the ``provenance`` of
every record and summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipsam.config import SEGMENTERS, RunConfig
from clipsam.errors import InputError
from clipsam.io.record import software_versions, to_jsonable
from clipsam.models.weights import sha256_of

ROLES = ("segmenter", "text_model", "weak_model")
SENTENCE_ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json",
                          "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
"""What the grounding model's locked sentence encoder reads from its folder."""
NOT_IN_KEY = ("config.models.weights_dir", "config.models.embedding_cache",
              "config.models.threads", "config.weak_model", "config.keep_intermediates")


@dataclass(frozen=True)
class ModelFile:
    """One file a model of the run reads, under a ``label`` unique within its role (the file
    name, or ``sentence_encoder/<name>``), and its SHA-256."""

    role: str
    label: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class RunIdentity:
    """A run resolved before loading: configuration (runtime and device resolved), the models
    it uses (``roles``), their files and the clipsam version."""

    config: RunConfig
    roles: tuple[str, ...]
    files: tuple[ModelFile, ...]
    version: str | None
    text_folder: bool = False
    """Whether ``config.models.text_model`` is the path of a grounding-model folder."""

    def fields(self) -> dict[str, Any]:
        """Everything the key covers, flat: ``config.*`` fields, ``file.<role>.<label>``
        hashes and ``clipsam`` (the version)."""
        fields = _flatten(to_jsonable(self.config), "config")
        for name in NOT_IN_KEY:
            fields.pop(name, None)
        if self.text_folder:
            fields["config.models.text_model"] = "<folder>"
        fields.update({f"file.{f.role}.{f.label}": f.sha256 for f in self.files})
        fields["clipsam"] = self.version
        return fields

    @property
    def key(self) -> str:
        """A short hash of :meth:`fields`: equal keys, equal settings."""
        text = json.dumps(self.fields(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self, segmenter: object = None, text: object = None,
                 weak: object = None) -> Provenance:
        """This identity plus what the loaded models report (None for a model not loaded)."""
        loaded = {"segmenter": segmenter, "text_model": text, "weak_model": weak}
        return Provenance(self, {role: _describe(self, role, loaded[role]) for role in self.roles})


@dataclass(frozen=True)
class Provenance:
    """A run's identity and its loaded models' descriptions; :meth:`record` is the JSON."""

    identity: RunIdentity
    models: dict[str, dict[str, Any]]

    @property
    def key(self) -> str:
        return self.identity.key

    def record(self) -> dict[str, Any]:
        """The ``provenance`` of a record or summary.

        ``runtime`` and ``device`` are what the loaded segmenter (the weak network for
        ``weak``) reports, None when it does not say; ``models`` lists each model's name,
        runtime, device, ONNX provider, files and exported graphs with their SHA-256.
        """
        config = self.identity.config
        main = self.models.get("segmenter") or self.models.get("weak_model") or {}
        return to_jsonable({
            "settings": self.key,
            "clipsam": self.identity.version,
            "segmenter": self.models.get("segmenter", {}).get("name"),
            "text_model": config.models.text_model if "text_model" in self.models else None,
            "runtime": main.get("runtime"),
            "device": main.get("device"),
            "models": self.models,
            "versions": software_versions(),
            "config": config,
        })


def run_identity(config: RunConfig, roles: tuple[str, ...] | None = None) -> RunIdentity:
    """Resolve ``config`` without loading a model (see the module notes).

    ``roles`` are the models the method uses; by default what the method registry says
    (``gt-box`` and other evaluation oracles pass ``("segmenter",)``). Raises a one-line
    :class:`~clipsam.errors.ClipsamError` for a missing device, an unknown runtime or
    segmenter, a text model trained for another segmenter, or a missing model file.
    """
    from clipsam.models.device import resolve_device
    from clipsam.models.sam.factory import pick_runtime, takes_points
    from clipsam.pipelines.registry import PIPELINES, check_text_model_fits, grounding_dir
    from clipsam.proposals.generate import defaults_for

    roles = roles or model_roles(config)
    models = config.models
    device = resolve_device(models.device)
    if "segmenter" in roles and models.segmenter not in SEGMENTERS:
        raise InputError(f"unknown segmenter {models.segmenter!r}; choose one of "
                         f"{', '.join(SEGMENTERS)}")
    runtime = pick_runtime(models.runtime, models.segmenter, device)
    resolved = dataclasses.replace(
        config, models=dataclasses.replace(models, runtime=runtime, device=device))
    spec = PIPELINES.get(config.method)  # None for an evaluation oracle (gt-box)
    if spec is not None and spec.proposes and config.salip.proposals is None:
        proposals = defaults_for(takes_points(models.segmenter))
        resolved = dataclasses.replace(
            resolved, salip=dataclasses.replace(config.salip, proposals=proposals))
    text_folder = False
    if "text_model" in roles:
        check_text_model_fits(resolved.models)
        text_folder = models.text_model != "builtin" and grounding_dir(models) is not None
    files = tuple(ModelFile(role, label, path, sha256_of(path))
                  for role in roles for label, path in _role_files(role, resolved))
    return RunIdentity(resolved, roles, files, software_versions()["clipsam"], text_folder)


def model_roles(config: RunConfig) -> tuple[str, ...]:
    """The models ``config``'s method loads: its own folder and/or the segmenter, and (if it
    reads text) the text model."""
    from clipsam.pipelines.registry import loads_segmenter, method_spec

    spec = method_spec(config.method)
    roles = ("segmenter",) if loads_segmenter(config) else ()
    if spec.own_model:
        return ("weak_model", *roles)
    return (*roles, "text_model") if spec.reads_text else roles


def differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``name: old -> new`` for each field that differs between two :meth:`RunIdentity.fields`
    (hashes shortened)."""

    def show(value: Any) -> str:
        if isinstance(value, str) and len(value) == 64:
            return value[:12]
        return "(none)" if value is None else repr(value)

    missing = object()
    return [f"{name.removeprefix('config.')}: "
            f"{'(not recorded)' if before.get(name, missing) is missing else show(before[name])}"
            f" -> {show(after.get(name))}"
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]


def _role_files(role: str, config: RunConfig) -> list[tuple[str, Path]]:
    """(label, path) of every file the model in ``role`` reads."""
    if role == "segmenter":
        from clipsam.models.sam.factory import segmenter_checkpoint

        path = segmenter_checkpoint(config.models.segmenter, config.models.weights_dir)
        return [(path.name, path)]
    if role == "text_model":
        from clipsam.pipelines.prompts import library_path
        from clipsam.pipelines.registry import grounding_dir

        folder = grounding_dir(config.models)
        if folder is not None:
            from clipsam.models.grounding.model import (
                ADAPTER_CONFIG,
                ADAPTER_FILE,
                ADAPTER_GRAPH,
                CONFIG_FILE,
                HEADS_FILE,
            )
            from clipsam.models.grounding.text_encoder import text_model_dir

            encoder = text_model_dir()
            paths = [(name, folder / name) for name in (CONFIG_FILE, HEADS_FILE)]
            adapter = (ADAPTER_FILE, ADAPTER_CONFIG, ADAPTER_GRAPH)  # when it has one
            paths += [(name, folder / name) for name in adapter if (folder / name).is_file()]
            paths += [(f"sentence_encoder/{name}", encoder / name)
                      for name in SENTENCE_ENCODER_FILES if (encoder / name).is_file()]
        else:
            from clipsam.models.clip.factory import image_text_files  # imports transformers

            paths = [(p.name, p) for p in image_text_files(config.models.text_model,
                                                           config.models.weights_dir)]
        return [*paths, ("prompts.json", library_path())]
    if role == "weak_model":
        from clipsam.models.weak_net import model_files

        if config.weak_model is None:
            raise InputError(f"method {config.method!r} needs --model MODEL_DIR (a folder "
                             "from clipsam weak-train)")
        return [(p.name, p) for p in model_files(config.weak_model)]
    raise InputError(f"unknown model role {role!r}; choose from {', '.join(ROLES)}")


def _describe(identity: RunIdentity, role: str, model: object) -> dict[str, Any]:
    """A model's name, runtime, device, provider and files; only the files when not loaded."""
    described: dict[str, Any] = {
        "files": [{"file": f.label, "path": str(f.path), "sha256": f.sha256}
                  for f in identity.files if f.role == role]}
    if model is None:
        return described
    described["name"] = getattr(model, "name", None)
    described["device"] = getattr(model, "device", None)
    if getattr(model, "warning", ""):  # a weak model whose training found it had not learned
        described["warning"] = model.warning
    runtime = getattr(model, "runtime", None)
    if runtime is not None:
        described["runtime"] = getattr(runtime, "name", None)
        described["provider"] = getattr(runtime, "provider", None)
        graphs = getattr(runtime, "files", ())
        if graphs:
            described["graphs"] = [{"path": str(p), "sha256": sha256_of(Path(p))}
                                   for p in graphs]
    return described


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}"))
        return flat
    return {prefix: value}
