"""What made a run: settings keys, model file hashes, devices actually used, refusals."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
from pathlib import Path

import pytest
import torch

from clipsam.api import Segmenter, run_config
from clipsam.config import MedClipSamConfig, ModelConfig, RunConfig
from clipsam.errors import InputError
from clipsam.models import device, weights
from clipsam.models.device import resolve_device
from clipsam.models.grounding import builtin_model_dir, load_grounding_model
from clipsam.models.weights import sha256_of
from clipsam.pipelines.provenance import differences, run_identity
from clipsam.pipelines.registry import check_text_model_fits, load_text_model
from test_api import FakeEncoder, FakePipeline, sample_image

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def grounding_copy(tmp_path, **metadata):
    """A copy of the shipped grounding model folder, its metadata updated with ``metadata``
    (without ``subjects`` and ``image_sha256`` unless given)."""
    folder = tmp_path / "grounding"
    shutil.copytree(builtin_model_dir(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["metadata"].pop("subjects", None)
    config["metadata"].pop("image_sha256", None)
    config["metadata"].update(metadata)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@no_cuda
def test_identity_resolves_auto_and_hashes_every_model_file():
    identity = run_identity(RunConfig())
    assert identity.config.models.device == "cpu"
    assert identity.config.models.runtime in ("onnx", "torch")
    names = {(f.role, f.label) for f in identity.files}
    assert names >= {("segmenter", "lite_medsam.pth"), ("text_model", "config.json"),
                     ("text_model", "heads.safetensors"), ("text_model", "prompts.json"),
                     ("text_model", "sentence_encoder/model.safetensors")}
    assert {role for role, _ in names} == {"segmenter", "text_model"}
    assert all(len(f.sha256) == 64 for f in identity.files)
    assert [f.role for f in run_identity(RunConfig(method="whole-box")).files] == ["segmenter"]


def test_key_follows_settings_and_file_contents_not_locations(tmp_path):
    base = run_identity(RunConfig())
    v1 = run_identity(RunConfig(medclipsam=MedClipSamConfig(version="v1")))
    assert v1.key != base.key
    assert differences(base.fields(), v1.fields()) == ["medclipsam.version: 'v2' -> 'v1'"]
    same = RunConfig(models=ModelConfig(weights_dir=tmp_path), keep_intermediates=True)
    assert run_identity(same).key == base.key

    folder = grounding_copy(tmp_path)
    before = run_identity(RunConfig(models=ModelConfig(text_model=str(folder))))
    with (folder / "heads.safetensors").open("ab") as handle:
        handle.write(b"\0")  # other weights, same place
    after = run_identity(RunConfig(models=ModelConfig(text_model=str(folder))))
    assert after.key != before.key
    [change] = differences(before.fields(), after.fields())
    assert change.startswith("file.text_model.heads.safetensors: ")
    moved = folder.rename(tmp_path / "moved")
    assert run_identity(RunConfig(models=ModelConfig(text_model=str(moved)))).key == after.key


@no_cuda
def test_missing_cuda_is_a_one_line_error_before_loading():
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="device 'cuda'") as info:
        resolve_device("cuda")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="device 'cuda'"):
        Segmenter(run_config(device="cuda"))


@pytest.mark.skipif(not sys.platform.startswith("linux") or "microsoft" in platform.release(),
                    reason="the driver check is Linux's")
def test_cuda_is_ruled_out_by_the_driver_file_without_asking_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "NVIDIA_DRIVER", str(tmp_path / "none"))
    assert not device.cuda_possible()
    assert resolve_device("auto") == "cpu"
    (tmp_path / "version").write_text("NVRM version: 1\n")
    monkeypatch.setattr(device, "NVIDIA_DRIVER", str(tmp_path / "version"))
    assert device.cuda_possible()
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_grounding_heads_refuse_features_of_another_segmenter(tmp_path):
    with pytest.raises(InputError, match="trained on litemedsam image features") as info:
        load_text_model(ModelConfig(segmenter="sam-vit-b"), segmenter=None)
    assert "sam-vit-b" in str(info.value) and "\n" not in str(info.value)
    folder = grounding_copy(tmp_path, segmenter="medsam-vit-b")
    check_text_model_fits(ModelConfig(segmenter="medsam-vit-b", text_model=str(folder)))
    with pytest.raises(InputError, match="trained on medsam-vit-b"):
        run_identity(RunConfig(models=ModelConfig(text_model=str(folder))))
    check_text_model_fits(ModelConfig(segmenter="sam-vit-b", text_model="clip-vit-b32"))


@no_cuda
def test_record_device_is_the_loaded_models_not_the_options():
    class ElsewhereEncoder(FakeEncoder):
        device = "cuda:3"

    segmenter = Segmenter(RunConfig(), pipeline=FakePipeline(), encoder=ElsewhereEncoder())
    provenance = segmenter.segment(sample_image(), "bright")[0].provenance
    assert provenance["device"] == "cuda:3" and provenance["config"]["models"]["device"] == "cpu"
    assert provenance["settings"] == run_identity(RunConfig()).key
    assert provenance["models"]["segmenter"]["files"][0]["path"].endswith("lite_medsam.pth")
    assert set(provenance["versions"]) >= {"clipsam", "torch", "onnxruntime", "numpy",
                                           "transformers"}


def test_auto_device_loads_where_it_resolves_and_records_where_the_weights_are():
    segmenter = Segmenter(run_config("whole-box", runtime="torch", device="auto"))
    weights = {str(p.device) for p in segmenter.encoder.runtime.model.parameters()}
    assert len(weights) == 1
    [actual] = weights
    assert actual.split(":")[0] == resolve_device("auto")
    assert segmenter.encoder.device == actual
    provenance = segmenter.provenance
    assert (provenance["device"], provenance["runtime"]) == (actual, "torch")
    described = provenance["models"]["segmenter"]
    assert (described["name"], described["device"], described["provider"]) == (
        "litemedsam", actual, None)
    assert "text_model" not in provenance["models"]


def test_grounding_model_heads_load_on_the_given_device():
    # "meta" is a torch device on every machine: the heads go where asked and report it
    model = load_grounding_model(device="meta")
    assert model.device == "meta"
    assert {p.device.type for p in model.engine.heads.parameters()} == {"meta"}
    assert load_grounding_model().device == "cpu"


def test_file_hashes_are_computed_once_per_file_version(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 10)
    first = sha256_of(path)

    def no_reading(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(Path, "open", no_reading)
    assert sha256_of(path) == first
    monkeypatch.undo()
    path.write_bytes(b"b" * 11)
    assert sha256_of(path) != first


def test_file_hashes_are_kept_across_processes_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "weights.bin"
    path.write_bytes(b"c" * 12)
    first = sha256_of(path)
    monkeypatch.setattr(weights, "_DIGESTS", {})  # as in a new process

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again")

    monkeypatch.setattr(hashlib, "sha256", no_hashing)
    assert sha256_of(path) == first
    monkeypatch.undo()
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache"))
    path.write_bytes(b"d" * 13)
    assert sha256_of(path) == hashlib.sha256(b"d" * 13).hexdigest()


def test_proposal_methods_record_the_resolved_proposal_settings():
    from dataclasses import replace

    from clipsam.config import SalipConfig
    from clipsam.proposals.generate import BOX_PROMPT_DEFAULTS

    salip = run_identity(RunConfig(method="salip"))
    assert salip.config.salip.proposals == BOX_PROMPT_DEFAULTS  # LiteMedSAM takes boxes only
    assert salip.fields()["config.salip.proposals.box_margins"] == [0.0, 0.2]
    as_is = SalipConfig(proposals=replace(BOX_PROMPT_DEFAULTS, box_margins=(0.0,)))
    other = run_identity(RunConfig(method="salip", salip=as_is))
    assert differences(salip.fields(), other.fields()) == [
        "salip.proposals.box_margins: [0.0, 0.2] -> [0.0]"]
    assert run_identity(RunConfig()).config.salip.proposals is None  # MedCLIP-SAM has none
    from clipsam.config import ProposalConfig
    from clipsam.models.sam.factory import takes_points
    from clipsam.proposals.generate import defaults_for

    assert takes_points("sam-vit-b") and takes_points("medsam") and not takes_points("litemedsam")
    assert defaults_for(True) == ProposalConfig()  # SAM's own defaults for point prompts
