"""``clipsam models list|path|fetch`` against a private cache and weights folder (no network)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from clipsam.apps.cli import main


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPSAM_WEIGHTS_DIR", raising=False)

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)


def table(capsys) -> dict[str, list[str]]:
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_list_shows_installed_and_missing(tmp_path, capsys):
    assert main(["models", "list"]) == 0
    rows = table(capsys)
    assert rows["litemedsam"][2] == "installed" and rows["litemedsam"][3].endswith(".pth")
    assert rows["sam-vit-b"][2] == "missing" and rows["biomedclip"][2] == "missing"

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "sam_vit_b_01ec64.pth").write_bytes(b"stand-in")
    assert main(["models", "--weights-dir", str(weights), "list"]) == 0
    rows = table(capsys)
    assert rows["sam-vit-b"][2:] == ["installed", str(weights / "sam_vit_b_01ec64.pth")]
    assert main(["models", "--weights-dir", str(weights), "path", "sam-vit-b"]) == 0
    assert capsys.readouterr().out.strip() == str(weights / "sam_vit_b_01ec64.pth")


def test_path_and_fetch_errors_are_one_line(capsys):
    assert main(["models", "path", "sam-vit-l"]) == 2
    assert "sam_vit_l_0b3195.pth" in capsys.readouterr().err
    assert main(["models", "fetch", "sam-vit-h"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("clipsam: error: ")
    assert "download failed" in err and "dl.fbaipublicfiles.com" in err
    assert main(["models", "fetch", "no-such-model"]) == 2
    assert "known models are" in capsys.readouterr().err


def test_fetch_of_shipped_model_prints_its_path(capsys):
    assert main(["models", "fetch", "litemedsam"]) == 0
    assert capsys.readouterr().out.strip().endswith("lite_medsam.pth")
