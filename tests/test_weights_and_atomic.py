import hashlib
import os

import pytest

from clipsam.errors import WeightsError
from clipsam.io.atomic import atomic_path, write_text_atomic
from clipsam.models import weights
from clipsam.models.weights import WeightSpec, resolve


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPSAM_WEIGHTS_DIR", raising=False)
    return tmp_path / "cache"


def test_atomic_write_replaces_target(tmp_path):
    target = tmp_path / "sub" / "record.json"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["record.json"]


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    target = write_text_atomic(tmp_path / "out.json", "{}")
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "mask.png"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]


def test_atomic_temp_name_keeps_suffixes(tmp_path):
    with atomic_path(tmp_path / "vol.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")


def test_resolve_prefers_explicit_dir_then_env(tmp_path, isolated_cache, monkeypatch):
    spec = WeightSpec(name="tiny", filename="tiny.pth", url="http://127.0.0.1:9/tiny.pth")
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    env.mkdir()
    (env / "tiny.pth").write_bytes(b"env")
    monkeypatch.setenv("CLIPSAM_WEIGHTS_DIR", str(env))
    assert resolve(spec, download=False) == env / "tiny.pth"
    (explicit / "tiny.pth").write_bytes(b"explicit")
    assert resolve(spec, weights_dir=explicit, download=False) == explicit / "tiny.pth"


def test_missing_weights_offline_names_file_source_and_place(isolated_cache):
    spec = WeightSpec(name="sam-vit-b", filename="sam_vit_b.pth", url="http://127.0.0.1:9/sam.pth")
    with pytest.raises(WeightsError) as info:
        resolve(spec, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "sam_vit_b.pth" in message and "http://127.0.0.1:9/sam.pth" in message
    assert str(isolated_cache / "weights") in message


def test_failed_download_leaves_no_partial_file(isolated_cache):
    spec = WeightSpec(name="x", filename="x.pth", url="http://127.0.0.1:9/x.pth")
    with pytest.raises(WeightsError, match="download failed"):
        resolve(spec)
    folder = isolated_cache / "weights"
    assert not folder.exists() or not any(folder.iterdir())


def test_download_checks_sha256(isolated_cache, tmp_path):
    source = tmp_path / "w.bin"
    source.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    ok = WeightSpec(name="w", filename="w.bin", url=source.as_uri(), sha256=good)
    assert resolve(ok).read_bytes() == b"weights"
    bad = WeightSpec(name="v", filename="v.bin", url=source.as_uri(), sha256="0" * 64)
    with pytest.raises(WeightsError, match="checksum"):
        resolve(bad)
    assert not (isolated_cache / "weights" / "v.bin").exists()


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSAM_CACHE_DIR", os.fspath(tmp_path))
    assert weights.cache_dir() == tmp_path
