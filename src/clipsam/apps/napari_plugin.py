"""The napari plugin (extra ``clipsam[napari]``): a dock widget that segments an image layer for
text targets.

Pick an image layer, type the targets (one per line) or tick "every trained target" (what is in
this image?), and a method; clipsam segments the plane the viewer shows (a 2-D or RGB layer is
one plane; for a stack, the last two axes at the current position of the others) in a worker
thread, with progress, and puts each target's mask into a Labels layer named after the target
(only that plane changes, so several planes can be segmented in turn) and the method's saliency
map, when it has one, into a hidden image layer. With "whole stack" ticked, a gray stack is
segmented as a volume instead (every slice along the axis before the plane, at the current
position of any axis before that), consistently along the slice axis as
:meth:`clipsam.api.Segmenter.segment` does, with a progress bar over its slices. The status line
says which targets were found (with every trained target: which, with their presence scores)
and notes a target that is not a trained one. Encodings are kept per image plane
(:class:`clipsam.api.Segmenter` caches them by
content), so asking for other targets on a plane already seen costs no encoder pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from clipsam.errors import require

require("napari", "the napari plugin")

import numpy as np  # noqa: E402  (after the extra check: napari brings Qt)
from napari.qt.threading import thread_worker  # noqa: E402
from qtpy.QtCore import Signal  # noqa: E402
from qtpy.QtWidgets import (  # noqa: E402
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from clipsam.api import Segmenter, SegmentResult, found_line  # noqa: E402
from clipsam.errors import ClipsamError, InputError  # noqa: E402
from clipsam.io.image import MedicalImage  # noqa: E402
from clipsam.pipelines.prompts import validate_prompt  # noqa: E402
from clipsam.pipelines.registry import SERVED_METHODS  # noqa: E402

SegmenterFor = Callable[[str], Segmenter]
CACHED_PLANES = 8


def default_segmenters() -> SegmenterFor:
    """The built-in models, loaded on first use and shared by every method."""
    from clipsam.apps.server import SegmenterPool
    from clipsam.config import ModelConfig

    return SegmenterPool(ModelConfig(), cache_images=CACHED_PLANES)


def shown_plane(layer: Any, point: tuple[float, ...]) -> tuple[tuple[int, ...], np.ndarray]:
    """(index of the leading axes, 2-D or RGB plane) of an image layer at the viewer's point."""
    if getattr(layer, "multiscale", False):
        raise InputError(f"layer {layer.name!r} is multiscale; clipsam needs a single-scale image")
    plane_dims = 3 if layer.rgb else 2
    leading = layer.ndim - plane_dims
    coords = np.asarray(layer.world_to_data(point))[:leading] if leading else []
    index = tuple(int(np.clip(round(float(c)), 0, n - 1))
                  for c, n in zip(coords, layer.data.shape[:leading], strict=True))
    return index, np.asarray(layer.data[index])


def shown_stack(layer: Any, point: tuple[float, ...]) -> tuple[tuple[int, ...], MedicalImage]:
    """(index of the axes before the stack, the (Z, H, W) stack as a volume) of a gray image
    layer at the viewer's point: the slices along the axis before the plane."""
    index, _ = shown_plane(layer, point)
    if layer.rgb or not index:
        raise InputError(f"layer {layer.name!r} is not a stack of gray slices: untick "
                         "'whole stack' to segment the plane shown")
    stack = np.asarray(layer.data[index[:-1]], np.float32)
    spacing = tuple(float(v) for v in layer.scale[-2:])
    return index[:-1], MedicalImage(stack, spacing, "napari", is_volume=len(stack) > 1)


class SegmentWidget(QWidget):
    """Dock widget: image layer, targets, method -> a Labels layer per target."""

    finished = Signal()  # emitted once the layers of a run are in the viewer (or it failed)

    def __init__(self, napari_viewer: Any, segmenter_for: SegmenterFor | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.segmenter_for = segmenter_for
        self.layer_box = QComboBox()
        self.targets = QPlainTextEdit()
        self.targets.setPlaceholderText("one target per line, e.g.\nleft and right lungs")
        self.targets.setMaximumHeight(6 * self.targets.fontMetrics().lineSpacing())
        self.every_target = QCheckBox("every trained target (what is in this image?)")
        self.every_target.toggled.connect(lambda on: self.targets.setEnabled(not on))
        self.method = QComboBox()
        self.method.addItems(SERVED_METHODS)
        self.whole_stack = QCheckBox("whole stack (a volume: every slice)")
        self.run_button = QPushButton("Segment")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("image", self.layer_box)
        form.addRow("targets", self.targets)
        form.addRow(self.every_target)
        form.addRow("method", self.method)
        form.addRow(self.whole_stack)
        form.addRow(self.run_button)
        form.addRow(self.progress)
        form.addRow(self.status)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addStretch()
        self.run_button.clicked.connect(self.run)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed,
                      napari_viewer.layers.events.changed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, *_: Any) -> None:
        current = self.layer_box.currentText()
        names = [layer.name for layer in self.viewer.layers
                 if type(layer).__name__ == "Image"]
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)

    def run(self) -> None:
        """Segment the shown plane (or, with "whole stack", the stack) of the chosen layer in a
        worker thread."""
        lines = self.targets.toPlainText().splitlines()
        every = self.every_target.isChecked()
        try:
            prompts = [] if every else [validate_prompt(line) for line in lines if line.strip()]
            if not prompts and not every:
                raise InputError("no target: type what to segment, one target per line")
            if self.layer_box.currentText() not in self.viewer.layers:
                raise InputError("no image layer: open an image first")
            layer = self.viewer.layers[self.layer_box.currentText()]
            point = tuple(self.viewer.dims.point)
            if self.whole_stack.isChecked():
                index, image = shown_stack(layer, point)
            else:
                index, image = shown_plane(layer, point)
        except ClipsamError as exc:
            self._failed(exc)
            return
        if self.segmenter_for is None:
            self.segmenter_for = default_segmenters()
        self.run_button.setEnabled(False)
        steps = image.num_slices if isinstance(image, MedicalImage) else len(prompts) or 1
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.status.setText("segmenting…")
        work = _segment_stack if isinstance(image, MedicalImage) else _segment
        work(self.segmenter_for, self.method.currentText(), image, prompts,
             _connect={"yielded": self.progress.setValue, "errored": self._failed,
                       "returned": lambda results: self._show(layer, index, results, every)})

    def _show(self, layer: Any, index: tuple[int, ...], results: list[SegmentResult],
              every: bool = False) -> None:
        """Each result's mask (a plane's or a stack's) into its target's Labels layer at
        ``index``, and its saliency map, when it has one of the mask's size, hidden."""
        shape = layer.data.shape[:-1] if layer.rgb else layer.data.shape
        for result in results:
            labels = self._layer(result.prompt, shape, np.uint8, "labels", layer)
            labels.data[index] = result.mask.astype(np.uint8)
            labels.refresh()
            saliency = result.intermediates.get("saliency")
            if isinstance(saliency, np.ndarray) and saliency.ndim == result.mask.ndim:
                view = self._layer(f"{result.prompt} saliency", shape, np.float32, "image", layer)
                view.data[index] = (_resized(saliency, result.mask.shape) if saliency.ndim == 2
                                    else saliency.astype(np.float32))
                view.visible = False
                view.refresh()
        self.status.setText(found_text(results, every))
        self._done()

    def _layer(self, name: str, shape: tuple[int, ...], dtype: type, kind: str,
               like: Any) -> Any:
        """The layer ``name`` of the right kind and shape, made (empty) when missing."""
        if name in self.viewer.layers:
            existing = self.viewer.layers[name]
            if existing.data.shape == shape and type(existing).__name__.lower() == kind:
                return existing
            self.viewer.layers.remove(name)
        add = self.viewer.add_labels if kind == "labels" else self.viewer.add_image
        return add(np.zeros(shape, dtype), name=name, scale=like.scale[-len(shape):],
                   translate=like.translate[-len(shape):])

    def _failed(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, ClipsamError) else f"{type(exc).__name__}: {exc}"
        self.status.setText(f"error: {message}")
        self._done()

    def _done(self) -> None:
        self.run_button.setEnabled(True)
        self.finished.emit()


@thread_worker
def _segment(segmenter_for: SegmenterFor, method: str, plane: np.ndarray,
             prompts: list[str]) -> Iterator[int]:
    """Each prompt in turn (one encoder pass, cached), yielding how many are done; no prompt:
    every trained concept (:meth:`clipsam.api.Segmenter.segment_all`)."""
    segmenter = segmenter_for(method)
    if not prompts:
        results = segmenter.segment_all(plane)
        yield 1
        return results
    results = []
    for done, prompt in enumerate(prompts, start=1):
        results.extend(segmenter.segment(plane, [prompt]))
        yield done
    return results


@thread_worker
def _segment_stack(segmenter_for: SegmenterFor, method: str, volume: MedicalImage,
                   prompts: list[str]) -> Iterator[int]:
    """Every prompt on a stack as a volume (each slice encoded once), yielding how many slices
    are done; no prompt: every trained concept, the results of those found (as
    :meth:`clipsam.api.Segmenter.segment_all` gives a volume's)."""
    segmenter = segmenter_for(method)
    stream = segmenter.segment_stream(volume, prompts or segmenter.concepts())
    while True:
        try:
            done, _ = next(stream)
        except StopIteration as stop:
            return stop.value if prompts else [r for r in stop.value if r.found]
        yield done


def found_text(results: list[SegmentResult], every: bool) -> str:
    """The status line: each target found or not (with every trained target: those found and
    their presence scores), then the note of any target that is not a trained one."""
    if every:
        return found_line(results)
    found = ", ".join(f"{r.prompt}: {'found' if r.found else 'not found'}" for r in results)
    return "; ".join([found, *(r.concept_note for r in results if r.concept_note)])


def _resized(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map resampled (bilinear) to the plane's (H, W)."""
    if values.shape == size:
        return values.astype(np.float32)
    from skimage.transform import resize

    return resize(values.astype(np.float32), size, order=1, anti_aliasing=False)
