"""The napari plugin, headless (Qt offscreen, a viewer model without a canvas): the widget's
Labels layers equal the Python API's masks, and a plane already seen is not encoded again."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from napari.components import ViewerModel
from npe2 import PluginManifest

from clipsam.api import Segmenter
from clipsam.apps.napari_plugin import SegmentWidget
from clipsam.config import RunConfig
from clipsam.errors import WeightsError
from conftest import BoxFillingSegmenter
from test_api import FakePipeline, sample_image

MANIFEST = Path(__file__).resolve().parents[1] / "src" / "clipsam" / "napari.yaml"


def fake_segmenters() -> tuple[BoxFillingSegmenter, Callable[[str], Segmenter]]:
    """One stand-in segmenter per method, all on one counting encoder."""
    encoder = BoxFillingSegmenter()
    made: dict[str, Segmenter] = {}

    def segmenter_for(method: str) -> Segmenter:
        config = RunConfig(method=method, keep_intermediates=True)
        return made.setdefault(method, Segmenter(config, pipeline=FakePipeline(),
                                                 encoder=encoder, cache_images=4))

    return encoder, segmenter_for


def run_widget(qtbot, widget: SegmentWidget, layer: str, targets: str, method: str) -> None:
    widget.layer_box.setCurrentText(layer)
    widget.targets.setPlainText(targets)
    widget.method.setCurrentText(method)
    with qtbot.waitSignal(widget.finished, timeout=30_000):
        widget.run_button.click()


def test_widget_labels_equal_the_api_masks_and_planes_are_encoded_once(qtbot):
    viewer = ViewerModel()
    stack = np.stack([sample_image(), np.roll(sample_image(), 7, axis=1)]).astype(np.float32)
    viewer.add_image(stack, name="scan", scale=(3.0, 0.5, 0.5))
    encoder, segmenter_for = fake_segmenters()
    widget = SegmentWidget(viewer, segmenter_for=segmenter_for)
    qtbot.addWidget(widget)
    assert [widget.layer_box.itemText(i) for i in range(widget.layer_box.count())] == ["scan"]

    viewer.dims.set_current_step(0, 1)  # the second plane is shown
    run_widget(qtbot, widget, "scan", "bright square\nabsent thing", "salip")
    assert widget.status.text() == "bright square: found, absent thing: not found"
    assert widget.progress.value() == 2
    api = Segmenter(RunConfig(method="salip"), pipeline=FakePipeline(),
                    encoder=BoxFillingSegmenter()).segment(stack[1], ["bright square"])[0]
    labels = viewer.layers["bright square"]
    assert type(labels).__name__ == "Labels" and labels.data.shape == stack.shape
    assert np.array_equal(labels.data[1] == 1, api.mask) and api.mask.any()
    assert not labels.data[0].any()  # only the shown plane was segmented
    assert not viewer.layers["absent thing"].data.any()
    assert tuple(labels.scale) == (3.0, 0.5, 0.5)
    saliency = viewer.layers["bright square saliency"]
    assert not saliency.visible and saliency.data[1].shape == (40, 60) and saliency.data[1].any()
    assert encoder.encoded == 1

    run_widget(qtbot, widget, "scan", "dark background", "salip")  # same plane: cached
    assert encoder.encoded == 1
    dark = Segmenter(RunConfig(method="salip"), pipeline=FakePipeline(),
                     encoder=BoxFillingSegmenter()).segment(stack[1], ["dark background"])[0]
    assert np.array_equal(viewer.layers["dark background"].data[1] == 1, dark.mask)

    viewer.dims.set_current_step(0, 0)
    run_widget(qtbot, widget, "scan", "bright square", "salip")  # a new plane: one encode
    assert encoder.encoded == 2
    assert labels.data[0].any() and np.array_equal(labels.data[1] == 1, api.mask)


def test_whole_stack_is_segmented_as_a_volume_with_progress_per_slice(qtbot):
    from clipsam.io.image import MedicalImage

    viewer = ViewerModel()
    stack = np.stack([sample_image(), np.zeros((40, 60), np.uint8),
                      np.roll(sample_image(), 5, axis=1)]).astype(np.float32)
    viewer.add_image(stack, name="scan", scale=(3.0, 0.5, 0.5))
    encoder, segmenter_for = fake_segmenters()
    widget = SegmentWidget(viewer, segmenter_for=segmenter_for)
    qtbot.addWidget(widget)
    widget.whole_stack.setChecked(True)
    run_widget(qtbot, widget, "scan", "bright square\nabsent thing", "salip")
    assert widget.progress.maximum() == 3 and widget.progress.value() == 3
    assert encoder.encoded == 3  # every slice once, for both targets
    api = Segmenter(RunConfig(method="salip"), pipeline=FakePipeline(),
                    encoder=BoxFillingSegmenter()).segment(
        MedicalImage(stack, (0.5, 0.5), "napari", is_volume=True), ["bright square"])[0]
    labels = viewer.layers["bright square"]
    assert np.array_equal(labels.data == 1, api.mask) and api.mask.shape == stack.shape
    assert labels.data[0].any() and labels.data[2].any() and not labels.data[1].any()
    assert not viewer.layers["absent thing"].data.any()
    assert widget.status.text() == "bright square: found, absent thing: not found"

    flat = ViewerModel()
    flat.add_image(sample_image(), name="plane")
    widget = SegmentWidget(flat, segmenter_for=segmenter_for)
    qtbot.addWidget(widget)
    widget.whole_stack.setChecked(True)
    run_widget(qtbot, widget, "plane", "bright square", "salip")
    assert widget.status.text().startswith("error: layer 'plane' is not a stack")


def test_widget_reports_bad_input_on_one_line(qtbot):
    viewer = ViewerModel()
    viewer.add_image(sample_image(), name="scan")
    encoder, segmenter_for = fake_segmenters()
    widget = SegmentWidget(viewer, segmenter_for=segmenter_for)
    qtbot.addWidget(widget)
    run_widget(qtbot, widget, "scan", "   ", "medclipsam")
    assert widget.status.text().startswith("error: no target")
    run_widget(qtbot, widget, "scan", "x" * 400, "medclipsam")
    assert widget.status.text().startswith("error: prompt too long")
    assert "\n" not in widget.status.text() and widget.run_button.isEnabled()
    assert encoder.encoded == 0

    def no_weights(method: str) -> Segmenter:
        raise WeightsError("weights for sam-vit-b not found in ~/.cache/clipsam/weights")

    widget.segmenter_for = no_weights  # raised in the worker thread
    run_widget(qtbot, widget, "scan", "lungs", "salip")
    assert widget.status.text() == ("error: weights for sam-vit-b not found in "
                                    "~/.cache/clipsam/weights")
    assert widget.run_button.isEnabled() and "lungs" not in viewer.layers


def test_every_trained_target_from_one_encoder_pass_and_the_untrained_note(qtbot):
    """The tiny grounding model of word_fakes through the library's pipeline: ticking "every
    trained target" fills a Labels layer per concept found; a target that is not trained is
    noted in the status line."""
    from word_fakes import FeatureSegmenter, word_model, word_segmenter

    viewer = ViewerModel()
    image = sample_image(64, 64)
    viewer.add_image(image, name="scan")
    encoder = FeatureSegmenter()
    segmenter = word_segmenter(RunConfig(keep_intermediates=True),
                               word_model({"breast tumour": 0.0, "lungs": 0.0,
                                           "brain tumour": 1.0}), encoder)
    widget = SegmentWidget(viewer, segmenter_for=lambda method: segmenter)
    qtbot.addWidget(widget)
    widget.every_target.setChecked(True)
    assert not widget.targets.isEnabled()
    run_widget(qtbot, widget, "scan", "", "medclipsam")
    status = widget.status.text()
    assert status.startswith("found ") and "breast tumour (" in status and "lungs (" in status
    api = segmenter.segment_all(image)
    assert {r.prompt for r in api} == {"breast tumour", "lungs"}
    for result in api:
        assert np.array_equal(viewer.layers[result.prompt].data == 1, result.mask)
    assert "brain tumour" not in viewer.layers and encoder.encoded == 1

    widget.every_target.setChecked(False)
    run_widget(qtbot, widget, "scan", "liver", "medclipsam")
    assert widget.status.text() == ("liver: not found; 'liver' is not a trained target; "
                                    "nearest: lungs (0.45); teach it with clipsam adapt")


def test_manifest_names_the_widget():
    manifest = PluginManifest.from_file(MANIFEST)
    (widget,) = manifest.contributions.widgets
    (command,) = manifest.contributions.commands
    assert widget.command == command.id
    assert command.python_name == "clipsam.apps.napari_plugin:SegmentWidget"


@pytest.mark.slow
def test_widget_with_the_real_models_equals_the_python_api(qtbot, litemedsam, examples_dir):
    import clipsam
    from clipsam.io import read_image

    path = sorted((examples_dir / "images").glob("*.png"))[0]
    viewer = ViewerModel()
    viewer.add_image(read_image(path).pixels, name="ultrasound")
    widget = SegmentWidget(viewer)  # the built-in models
    qtbot.addWidget(widget)
    with qtbot.waitSignal(widget.finished, timeout=600_000):
        widget.targets.setPlainText("fetal head")
        widget.run_button.click()
    api = clipsam.segment(path, "fetal head")
    assert widget.status.text() == "fetal head: found" and api.found
    assert np.array_equal(viewer.layers["fetal head"].data == 1, api.mask)
