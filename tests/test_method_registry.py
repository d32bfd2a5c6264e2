"""One registry of methods: the CLI, ``clipsam eval``, the server and its page all read it."""

from __future__ import annotations

import argparse

import pytest
from fastapi.testclient import TestClient

from clipsam.apps import cli
from clipsam.apps.server import create_app
from clipsam.config import RunConfig
from clipsam.errors import InputError
from clipsam.eval.methods import METHODS, ORACLES, build_method
from clipsam.pipelines.registry import (
    PIPELINES,
    SERVED_METHODS,
    TEXT_FREE_METHODS,
    build_pipeline,
)


def method_choices(command: str) -> list[str]:
    """The ``--method`` choices of ``clipsam <command>``."""
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = subparsers.choices[command]
    return list(next(a for a in sub._actions if a.dest == "method").choices)


def test_segment_offers_every_registered_pipeline():
    assert sorted(method_choices("segment")) == sorted(PIPELINES)
    assert "weak" in method_choices("segment")


def test_eval_offers_the_registry_plus_the_oracles():
    assert set(ORACLES) == {"gt-box"}
    assert set(METHODS) == set(PIPELINES) | set(ORACLES)
    assert sorted(method_choices("eval")) == sorted(METHODS)
    assert "gt-box" not in PIPELINES and "gt-box" not in method_choices("segment")


def test_the_server_lists_the_methods_that_need_no_model_folder():
    assert tuple(n for n, spec in PIPELINES.items() if not spec.own_model) == SERVED_METHODS
    assert "weak" not in SERVED_METHODS and {"medclipsam", "salip"} <= set(SERVED_METHODS)
    app = create_app(lambda method, presence: pytest.fail("no segmentation expected"))
    client = TestClient(app)
    health = client.get("/health").json()
    assert health["methods"] == list(SERVED_METHODS)
    assert health["presence_points"] == ["recall", "balanced", "precision"]
    refused = client.post("/segment", files={"image": ("a.png", b"x", "image/png")},
                          data={"prompt": "fetal head", "method": "weak"})
    assert refused.status_code == 400 and "unknown method 'weak'" in refused.json()["error"]


def test_the_page_takes_its_method_menu_from_the_server():
    page = TestClient(create_app(lambda method, presence: None)).get("/").text
    assert '<select id="method" name="method"></select>' in page
    assert "<option" not in page and 'fetch("health")' in page


def test_registry_flags_drive_eval_methods():
    assert {"unprompted", "whole-box", "weak", "weak-box"} == TEXT_FREE_METHODS
    with pytest.raises(InputError, match="needs --model"):
        build_method("weak", RunConfig())
    with pytest.raises(InputError, match="unknown method 'nope'"):
        build_pipeline(RunConfig(method="nope"), None)
    with pytest.raises(InputError, match="needs the segmenter"):
        build_pipeline(RunConfig(method="whole-box"), None)


def test_weak_train_labels_images_with_the_methods_that_read_the_prompt():
    assert sorted(method_choices("weak-train")) == sorted(
        name for name, spec in PIPELINES.items() if spec.reads_text or spec.own_model)
    assert {"weak", "weak-box"} <= set(method_choices("weak-train"))  # self-training
    assert not {"unprompted", "whole-box"} & set(method_choices("weak-train"))
    assert {"medclipsam", "salip"} <= set(method_choices("weak-train"))
