"""``clipsam finetune`` end to end on tiny sets, from segmentation folders and a caption table.

A stand-in segmenter gives embeddings whose features mark the bright target, so the heads have
something real to learn; a "tiny" recipe (small heads) and a hashing sentence encoder keep the
test fast."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from clipsam.apps import cli
from clipsam.config import ModelConfig
from clipsam.io.image import segmenter_input
from clipsam.io.labelled_sets import list_samples
from clipsam.io.masks import read_mask
from clipsam.io.read import read_image
from clipsam.io.splits import split_of
from clipsam.models.grounding import HeadsConfig, load_grounding_model
from clipsam.models.grounding.grid import mask_to_grid
from clipsam.models.segmenter import Geometry, ImageEmbedding
from clipsam.pipelines.registry import load_segmenter
from clipsam.train.recipes import DEFAULT_RECIPE, RECIPES, Recipe
from clipsam.train.trainer import TrainConfig
from conftest import BoxFillingSegmenter
from synthetic_grounding import one_torch_thread  # noqa: F401  (autouse fixture)
from test_grounding import HashEncoder

TINY = Recipe("tiny", train=TrainConfig(epochs=2, batch_size=2, learning_rate=1e-2,
                                        contrastive_draws=2),
              heads=HeadsConfig(text_dim=HashEncoder.dim, hidden_dim=16, embed_dim=8,
                                dilations=(1, 2)))


class BrightFeatureSegmenter(BoxFillingSegmenter):
    name = "bright-features"

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        self.encoded += 1
        h, w = image.shape[:2]
        scale = 256 / max(h, w)
        geometry = Geometry((h, w), (round(h * scale), round(w * scale)), 256)
        small = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize(
            (geometry.resized_size[1] // 4, geometry.resized_size[0] // 4)), np.float32) / 255
        grid = np.zeros((64, 64), np.float32)
        grid[:small.shape[0], :small.shape[1]] = small
        rng = np.random.default_rng(0)
        features = rng.normal(0, 0.1, (1, 256, 64, 64)).astype(np.float32)
        features[0, :32] += grid * 2
        return ImageEmbedding(features, geometry, self.name)


def make_set(root, count: int = 6):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    for index in range(count):
        cy, cx = rng.uniform(20, 44, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 100
        Image.fromarray(np.where(disc, 220, 40).astype(np.uint8)).save(
            root / "images" / f"{index}.png")
        Image.fromarray(disc.astype(np.uint8) * 255).save(root / "masks" / f"{index}.png")
    return root


@pytest.fixture
def segmenter():
    return BrightFeatureSegmenter()


@pytest.fixture
def stand_in(monkeypatch, tmp_path, segmenter):
    monkeypatch.setattr("clipsam.models.sam.load_litemedsam", lambda *a, **k: segmenter)
    monkeypatch.setattr("clipsam.train.fit.SentenceEncoder", HashEncoder)
    monkeypatch.setitem(RECIPES, "tiny", TINY)
    return tmp_path / "cache"


def test_finetune_from_segmentation_sets_writes_a_loadable_model(tmp_path, stand_in,
                                                                 segmenter):
    data = make_set(tmp_path / "discs")
    out = tmp_path / "model"
    code = cli.main(["-q", "finetune", "--data", str(data), "--prompt", "bright disc",
                     "--out", str(out), "--recipe", "tiny", "--epochs", "8",
                     "--embedding-cache", str(stand_in)])
    assert code == 0
    assert segmenter.encoded == 6  # each image once
    # the segmenter eval and segment load (same store, same identity) finds every one of them
    stored = load_segmenter(ModelConfig(embedding_cache=stand_in))
    for path in sorted((data / "images").iterdir()):
        stored.encode(segmenter_input(read_image(path)))
    assert (stored.hits, stored.misses, segmenter.encoded) == (6, 0, 6)
    model = load_grounding_model(out, text_encoder=HashEncoder())
    assert model.metadata["recipe"] == "tiny" and model.metadata["training"]["epochs"] == 8
    assert model.metadata["part"] == "all" and model.metadata["concepts"] == ["bright disc"]
    embedding = BrightFeatureSegmenter().encode(
        np.asarray(Image.open(data / "images" / "0.png")))
    probability = model.similarity_map(embedding, "bright disc")
    mask = read_mask(data / "masks" / "0.png")
    cells = mask_to_grid(mask, embedding.geometry, probability.shape[-1]) > 0.5
    # the map is higher on the disc than off it
    assert probability[cells].mean() > probability[~cells].mean() + 0.2


def test_finetune_from_a_caption_table(tmp_path, stand_in):
    data = make_set(tmp_path / "discs", count=4)
    table = tmp_path / "captions.tsv"
    lines = ["filepath\ttitle"] + [f"{data / 'images' / f'{i}.png'}\ta bright disc on dark"
                                   for i in range(4)]
    table.write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    code = cli.main(["-q", "finetune", "--captions", str(table), "--csv-separator", "\t",
                     "--out", str(out), "--recipe", "tiny", "--epochs", "1",
                     "--embedding-cache", str(stand_in)])
    assert code == 0
    assert (out / "heads.safetensors").is_file() and (out / "config.json").is_file()


def test_finetune_needs_a_prompt_for_an_unknown_set(tmp_path, stand_in, capsys):
    data = make_set(tmp_path / "unknown_set", count=2)
    code = cli.main(["-q", "finetune", "--data", str(data), "--out", str(tmp_path / "m"),
                     "--embedding-cache", str(stand_in)])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "unknown_set" in error and "give --prompt" in error and "\n" not in error


def test_finetune_rejects_an_unknown_recipe(tmp_path, stand_in, capsys):
    data = make_set(tmp_path / "discs", count=2)
    assert cli.main(["-q", "finetune", "--data", str(data), "--prompt", "disc", "--out",
                     str(tmp_path / "m"), "--recipe", "fancy",
                     "--embedding-cache", str(stand_in)]) == 2
    error = capsys.readouterr().err
    assert "recipe" in error and "fancy" in error and "builtin" in error
    assert not (tmp_path / "m").exists()


def _with_subjects(root, subjects):
    make_set(root, count=len(subjects))
    rows = "\n".join(f"{i},{s}" for i, s in enumerate(subjects))
    (root / "meta.csv").write_text(f"id,subject\n{rows}\n")
    return root


def test_subset_train_and_exclude_leave_subjects_out(tmp_path, stand_in, segmenter,
                                                   monkeypatch):
    data = _with_subjects(tmp_path / "discs", [f"p{i // 2}" for i in range(16)])
    samples = list_samples(data)
    test_subjects = {s.subject for s in samples if split_of(s) == "test"}
    train_subjects = sorted({s.subject for s in samples} - test_subjects)
    assert test_subjects and len(train_subjects) >= 2
    examples = tmp_path / "examples"
    (examples / "images").mkdir(parents=True)
    excluded = next(s for s in samples if s.subject == train_subjects[0])
    Image.open(excluded.image_path).save(examples / "images" / excluded.image_path.name)
    calls = []

    def fake_fit(samples, store, concepts, recipe, out_dir, **kwargs):
        calls.append((samples, store, recipe, kwargs))
        return SimpleNamespace(presence=SimpleNamespace(threshold=0.5))

    monkeypatch.setattr("clipsam.train.fit.fit_from_samples", fake_fit)
    code = cli.main(["-q", "finetune", "--data", str(data), "--prompt", "disc", "--out",
                     str(tmp_path / "m"), "--subset", "train", "--exclude", str(examples),
                     "--lr", "0.5", "--embedding-cache", str(stand_in)])
    assert code == 0
    (used, store, recipe, kwargs), = calls
    expected = [s for s in samples if s.subject not in test_subjects | {train_subjects[0]}]
    assert used == expected and all(split_of(s) == "train" for s in used)
    assert kwargs["metadata"]["part"] == "train"
    assert kwargs["metadata"]["excluded_subjects"] == [f"discs/{train_subjects[0]}"]
    # the default recipe (from random weights), with the option's override
    assert recipe.name == DEFAULT_RECIPE and recipe.train.learning_rate == 0.5
    # the segmenter, keeping its embeddings in the one store (fit encodes what it lacks)
    assert kwargs["segmenter"].inner is segmenter and kwargs["segmenter"].store is store
    assert store.folder == stand_in


def test_data_sets_train_in_one_order_whatever_the_command_line_order(tmp_path):
    from clipsam.apps.cmd_finetune import ordered_sets
    from clipsam.errors import InputError

    folders = [make_set(tmp_path / name, count=1)
               for name in ("zeta", "busi", "alpha", "hc18")]
    expected = [tmp_path / n for n in ("hc18", "busi", "alpha", "zeta")]  # concepts.json first
    assert [f for f, _ in ordered_sets(folders)] == expected
    assert [f for f, _ in ordered_sets(folders[::-1])] == expected
    # each prompt stays with its set
    assert dict(ordered_sets(folders, ["z", "b", "a", "h"]))[tmp_path / "alpha"] == "a"
    twin = make_set(tmp_path / "other" / "busi", count=1)
    with pytest.raises(InputError, match="two --data sets are named busi"):
        ordered_sets([*folders, twin])


REPO = Path(__file__).resolve().parents[1]
CARD = REPO / "src" / "clipsam" / "data" / "grounding" / "MODEL_CARD.md"


def rebuild_commands(document: Path) -> list[str]:
    """The ``clipsam finetune --recipe ...`` commands of a document, in order, each with its
    continued lines joined and indentation dropped."""
    lines = document.read_text(encoding="utf-8").splitlines()
    commands, current = [], None
    for line in lines:
        if current is None and line.strip().startswith(".venv/bin/clipsam finetune --recipe"):
            current = []
        if current is not None:
            current.append(line.strip().removesuffix("\\").strip())
            if not line.rstrip().endswith("\\"):
                commands.append(" ".join(current))
                current = None
    assert current is None, f"a command in {document} does not end"
    return commands


def _option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def brace_expand(word: str) -> list[str]:
    """Bash's expansion of one ``prefix{a,b,c}suffix`` group (no nesting)."""
    match = re.fullmatch(r"([^{}]*)\{([^{}]*)\}([^{}]*)", word)
    if match is None:
        assert "{" not in word and "}" not in word, word
        return [word]
    head, items, tail = match.groups()
    return [head + item + tail for item in items.split(",")]


def test_the_rebuild_command_reproduces_the_recorded_set_list(shared_data):
    from clipsam.apps.cmd_finetune import _excluded_ids, ordered_sets
    from clipsam.models.grounding import builtin_model_dir

    readme, card = rebuild_commands(REPO / "README.md"), rebuild_commands(CARD)
    assert readme == card and card
    recorded = json.loads((builtin_model_dir() / "config.json").read_text())["metadata"]
    steps = [[w for word in shlex.split(c) for w in brace_expand(word)] for c in card]
    # the last command makes the shipped model; each --init is an earlier command's --out,
    # made by the recipe the shipped one starts from
    assert _option(steps[-1], "--recipe") == recorded["recipe"]
    for i, words in enumerate(steps):
        if (init := _option(words, "--init")) is not None:
            earlier = [w for w in steps[:i] if _option(w, "--out") == init]
            assert earlier and _option(earlier[-1], "--recipe") == RECIPES[
                _option(words, "--recipe")].init
    assert (recorded.get("init") is not None) == ("--init" in steps[-1])
    for words in steps:
        start = words.index("--data") + 1
        end = next(i for i in range(start, len(words)) if words[i].startswith("-"))
        given = [REPO / word for word in words[start:end]]
        assert all(path.resolve().parent == shared_data.resolve() for path in given)
        for order in (given, given[::-1], sorted(given)):  # any command-line order
            sets = [folder for folder, _ in ordered_sets(order)]
            assert [os.path.relpath(f, REPO) for f in sets] == recorded["data"]
        assert _option(words, "--subset") == recorded["part"]
        examples = REPO / _option(words, "--exclude")
        ids = _excluded_ids([examples])
        hc18 = list_samples(shared_data / "hc18")
        assert sorted(f"hc18/{s.subject}" for s in hc18 if s.image_id in ids) == \
            recorded["excluded_subjects"]
