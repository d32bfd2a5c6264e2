"""The web page in a real browser (Debian chromium driven by Playwright).

Skips when chromium or Playwright is missing, unless ``CI=true`` (then it fails, see
``real_resources.py``): install them with ``scripts/install_browser_test_deps.sh``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsam.api import Segmenter
from clipsam.apps.server import ServerLimits, create_app
from clipsam.config import RunConfig
from clipsam.io.masks import read_mask
from clipsam.pipelines.registry import SERVED_METHODS
from conftest import BoxFillingSegmenter
from real_resources import skip_missing
from test_api import FakeEncoder, FakePipeline, sample_image

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def missing_browser_parts() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = missing_browser_parts()
    if missing:
        skip_missing(f"{missing}: run scripts/install_browser_test_deps.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "health", timeout=2):
            return
        time.sleep(0.2)
    raise TimeoutError(f"server at {url} did not answer within {seconds} s")


@contextlib.contextmanager
def threaded_server(app) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_health(url, 30)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def downloaded_mask(page, index: int = 0) -> np.ndarray:
    href = page.get_attribute(f"#download-{index}", "href")
    assert href.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))))


def run_in_page(page, image: Path, prompt: str, method: str, seconds: float) -> str:
    page.set_input_files("#image", str(image))
    page.fill("#prompt", prompt)
    page.select_option("#method", method)
    page.click("#run")
    page.wait_for_selector('#status:is([data-state="done"], [data-state="error"])',
                           timeout=seconds * 1000)
    return page.get_attribute("#status", "data-state")


def test_page_with_stand_in_models(browser, tmp_path):
    segmenters: dict[str, Segmenter] = {}

    def segmenter_for(method: str, presence: str) -> Segmenter:
        config = RunConfig(method=method, keep_intermediates=True, presence=presence)
        return segmenters.setdefault(method, Segmenter(config, pipeline=FakePipeline(),
                                                       encoder=FakeEncoder()))

    image = tmp_path / "scan.png"
    Image.fromarray(sample_image()).save(image)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with threaded_server(create_app(segmenter_for, ServerLimits())) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#method option", state="attached")
        menu = page.eval_on_selector_all("#method option", "options => options.map(o => o.value)")
        assert menu == list(SERVED_METHODS)
        assert run_in_page(page, image, "bright square", "salip", 60) == "done"
        mask = downloaded_mask(page)
        assert np.array_equal(mask == 255, sample_image() > sample_image().mean())
        assert page.get_attribute("#download-0", "download") == "scan_mask.png"
        assert page.evaluate("document.querySelector('#overlay-0').naturalWidth") == 60
        assert page.locator("figcaption", has_text="saliency").count() == 1
        assert set(segmenters) == {"salip"}

        assert run_in_page(page, bad, "bright square", "medclipsam", 60) == "error"
        assert "cannot read" in page.inner_text("#status")
        assert run_in_page(page, image, "dark background", "medclipsam", 60) == "done"
        assert np.array_equal(downloaded_mask(page) == 255,
                              sample_image() <= sample_image().mean())


def test_box_correction_redecodes_from_the_cached_encoding(browser, tmp_path):
    """Drag a proposed box's corner, then draw a second box: the mask follows, in place, and the
    image is encoded only once."""
    encoder = BoxFillingSegmenter()  # each box decodes to its filled rectangle
    segmenter = Segmenter(RunConfig(keep_intermediates=True), pipeline=FakePipeline(),
                          encoder=encoder, cache_images=2)
    image = tmp_path / "scan.png"
    Image.fromarray(sample_image()).save(image)  # 60x40, the bright square is (20, 10)-(45, 25)
    app = create_app(lambda method, presence: segmenter, ServerLimits())
    with threaded_server(app) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#method option", state="attached")
        assert run_in_page(page, image, "bright square", "medclipsam", 60) == "done"
        page.wait_for_function("document.querySelector('#boxes-0')?.dataset.boxes")
        assert json.loads(page.get_attribute("#boxes-0", "data-boxes")) == [[20, 10, 45, 25]]
        overlay = page.get_attribute("#overlay-0", "src")

        box = page.locator("#boxes-0").bounding_box()

        def drag(start: tuple[int, int], end: tuple[int, int]) -> np.ndarray:
            """Drag in image pixels; the mask downloaded once the page has the new answer."""
            before = page.get_attribute("#download-0", "href")
            for index, (x, y) in enumerate((start, end)):
                page.mouse.move(box["x"] + x * box["width"] / 60,
                                box["y"] + y * box["height"] / 40, steps=1 + 4 * index)
                if index == 0:
                    page.mouse.down()
            page.mouse.up()
            page.wait_for_function("old => document.querySelector('#download-0').href !== old",
                                   arg=before, timeout=30_000)
            assert page.get_attribute("#status", "data-state") == "done"
            return downloaded_mask(page) == 255

        corrected = drag((45, 25), (52, 33))  # the bottom-right corner, further out
        expected = np.zeros((40, 60), bool)
        expected[10:33, 20:52] = True
        assert np.array_equal(corrected, expected)
        assert json.loads(page.get_attribute("#boxes-0", "data-boxes")) == [[20, 10, 52, 33]]
        assert page.get_attribute("#overlay-0", "src") != overlay  # the same figure, updated

        drawn = drag((3, 30), (12, 38))  # a new box on empty background
        expected[30:38, 3:12] = True
        assert np.array_equal(drawn, expected)
        assert encoder.encoded == 1
        assert "cached encoding" in page.inner_text("#status")


def example_with_reference() -> tuple[Path, Path]:
    """The first shipped example image (examples/images) that has a reference mask."""
    for image in sorted((EXAMPLES / "images").glob("*.png")):
        reference = EXAMPLES / "masks" / image.name
        if reference.exists():
            return image, reference
    pytest.fail(f"no example image with a reference mask in {EXAMPLES}/images and /masks")


@pytest.mark.slow
def test_fetal_head_example_end_to_end(browser, tmp_path):
    """``clipsam serve`` with the real models; the browser uploads a shipped HC18 example."""
    image, reference_path = example_with_reference()
    port = free_port()
    env = {**os.environ, "CLIPSAM_CACHE_DIR": os.environ.get("CLIPSAM_CACHE_DIR",
                                                           str(tmp_path / "cache"))}
    server = subprocess.Popen([sys.executable, "-m", "clipsam.apps.cli", "serve",
                               "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_health(url, 60)
        page = browser.new_page()
        page.goto(url)
        state = run_in_page(page, image, "fetal head", "medclipsam", 900)
        assert state == "done", page.inner_text("#status")
        mask = downloaded_mask(page) == 255
        reference = read_mask(reference_path)
        assert mask.shape == reference.shape
        assert mask.any()
        overlap = (mask & reference).sum()
        assert overlap / mask.sum() > 0.5 and overlap / reference.sum() > 0.5
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_page_shows_the_concept_reached_and_finds_every_trained_target(browser, tmp_path):
    """The tiny grounding model of word_fakes through the library's pipeline: the page says
    which trained target the words reached (or that they reached none), and the "every
    target" option lists what the image holds."""
    from word_fakes import FeatureSegmenter, word_model, word_segmenter

    encoder = FeatureSegmenter()
    model = word_model({"breast tumour": 0.0, "lungs": 0.0, "brain tumour": 1.0})
    built = {}

    def segmenter_for(method: str, presence: str):
        if presence not in built:
            config = RunConfig(keep_intermediates=True, presence=presence)
            built[presence] = word_segmenter(config, model, encoder)
        return built[presence]

    image = tmp_path / "scan.png"
    Image.fromarray(sample_image(64, 64)).save(image)
    app = create_app(segmenter_for, ServerLimits())
    with threaded_server(app) as url:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#method option", state="attached")
        assert run_in_page(page, image, "Breast tumours", "medclipsam", 60) == "done"
        line = page.inner_text("#concept-0")
        assert line.startswith("trained target: breast tumour (similarity 0.95)")
        assert "(recall threshold 0.00)" in line
        # the "not found" menu comes from the server, recall first; this model has no other
        points = page.eval_on_selector_all("#presence option", "o => o.map(x => x.value)")
        assert points == ["recall", "balanced", "precision"]
        assert page.input_value("#presence") == "recall"
        page.select_option("#presence", "balanced")
        assert run_in_page(page, image, "lungs", "medclipsam", 60) == "error"
        assert "no 'balanced' presence point" in page.inner_text("#status")
        page.select_option("#presence", "recall")
        assert run_in_page(page, image, "liver", "medclipsam", 60) == "done"
        assert page.inner_text("#concept-0") == ("'liver' is not a trained target; nearest: "
                                                 "lungs (0.45); teach it with clipsam adapt")
        assert page.get_attribute("#concept-0", "data-untrained") == "true"

        page.check("#all")
        assert page.is_disabled("#prompt")
        page.click("#run")
        page.wait_for_selector('#status:is([data-state="done"], [data-state="error"])',
                               timeout=60_000)
        assert page.get_attribute("#status", "data-state") == "done", page.inner_text("#status")
        summary = page.inner_text("#found-summary")
        assert summary.startswith("found 2 of 3 trained targets: ")
        assert {page.inner_text(f"#result section[data-index='{i}'] h2") for i in (0, 1)} == {
            "breast tumour: found", "lungs: found"}
        assert "presence" in page.inner_text("#concept-0")
        assert encoder.encoded == 1
