"""Class evidence mode: a class activation map over the input and the selected block's channel evidence
under its gate chart.

Off by default. While on, the worker explains every frame after predicting it (one forward with autograd
from the first explained layer on, one backward; :class:`~sevgg_gui.evidence.LiveEvidence` in the worker's
``extras``); while off, it is not in ``extras`` and the prediction path is untouched. The mode owns its
widgets (the "Evidence" tab, the map item on the input view, the evidence row in the charts) and wires
itself to the window's signals, so ``window.py`` only creates it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRectF, Qt, QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QWidget,
)

from .widgets.evidence_chart import EvidenceChart, evidence_title

if TYPE_CHECKING:
    from .window import MainWindow

INFO_TEXT = "Click a prediction to see where the model finds that class."
ENABLE_TIP = "Class activation map on the input, channel evidence under the selected block"
METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "layercam": "LayerCAM",
    "eigencam": "Eigen-CAM (gradient-free)",
}


class EvidencePanel(QWidget):
    """The controls: on/off, class (top-1, clicked, or typed), method, layer, opacity."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.enable = QCheckBox("Show class evidence")
        self.enable.setToolTip(ENABLE_TIP)
        self.class_edit = QLineEdit()
        self.class_edit.setPlaceholderText("top-1 (or type a class name / index, Enter)")
        self.top1_btn = QPushButton("Top-1")
        self.top1_btn.setToolTip("Follow each frame's top-1 prediction")
        self.method_box = QComboBox()
        for key, label in METHOD_LABELS.items():
            self.method_box.addItem(label, key)
        self.layer_box = QComboBox()
        self.layer_box.setToolTip(
            "Where the map is computed: the last convolutional block, or an attention block"
        )
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(55)
        self.info = QLabel(INFO_TEXT)
        self.info.setWordWrap(True)
        self.info.setStyleSheet("color:#aaaaaa")

        form = QFormLayout(self)
        form.setContentsMargins(6, 6, 6, 6)
        form.addRow(self.enable)
        row = QHBoxLayout()
        row.addWidget(self.class_edit, 1)
        row.addWidget(self.top1_btn)
        form.addRow("Class:", row)
        form.addRow("Method:", self.method_box)
        form.addRow("Layer:", self.layer_box)
        form.addRow("Opacity:", self.opacity)
        form.addRow(self.info)


class EvidenceMode(QObject):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.worker = window.worker_thread.worker
        # evidence.EvidenceRequest fields; the core (torch) is imported when the mode is first turned on,
        # so the window still shows before torch loads.
        self.request: dict[str, Any] = {
            "class_index": None,
            "method": "gradcam",
            "layer": None,
            "block": None,
        }
        self.live: Any = None  # evidence.LiveEvidence, in the worker's extras while on
        self.on = False
        self.unavailable: str | None = None  # why the current model cannot be explained (set_unavailable)
        self._rerun_queued = False
        self.class_names: list[str] = []
        self.class_label: str | None = None  # the fixed class's name (None: following the top-1)

        self.panel = EvidencePanel()
        window.tabs.addTab(self.panel, "Evidence")
        self.cam_item = pg.ImageItem(axisOrder="row-major")
        self.cam_item.setLookupTable(pg.colormap.get("turbo").getLookupTable(nPts=256, alpha=False))
        self.cam_item.setZValue(10)  # above the channel / spatial-attention overlay
        self.cam_item.setVisible(False)
        window.input_view.vb.addItem(self.cam_item)
        self.chart = EvidenceChart()
        self.chart.setVisible(False)
        self._chart_after: Any = None  # the gate chart the evidence row sits under
        self._set_opacity(self.panel.opacity.value())
        window.predictions.setToolTip("Top-5 predictions of the current frame; click one to see its evidence")

        p = self.panel
        p.enable.toggled.connect(self.set_enabled)
        p.top1_btn.clicked.connect(lambda: self.set_class(None))
        p.class_edit.returnPressed.connect(self._class_typed)
        p.method_box.currentIndexChanged.connect(
            lambda _i: self._update_request(method=p.method_box.currentData())
        )
        p.layer_box.currentIndexChanged.connect(self._layer_chosen)
        p.opacity.valueChanged.connect(self._set_opacity)
        window.predictions.rowClicked.connect(self._prediction_clicked)
        window.resultDrawn.connect(self._draw)
        window.charts.blockSelected.connect(self._block_selected)
        window.charts.optionsChanged.connect(self._redraw)
        self.worker.modelLoaded.connect(self._model_loaded, Qt.ConnectionType.QueuedConnection)
        if window.model_info is not None:
            self._model_loaded(window.model_info)

    # ------------------------------------------------------------------ requests to the worker
    def set_unavailable(self, note: str | None) -> None:
        """``note``: why this model cannot be explained (a runtime backend): the mode turns off and its
        switch is greyed out with ``note`` as tooltip and text; None: available again."""
        before, self.unavailable = self.unavailable, note
        if note:
            self.set_enabled(False)
            self.panel.info.setText(note)
        elif before and self.panel.info.text() == before:
            self.panel.info.setText(INFO_TEXT)
        self.panel.enable.setEnabled(note is None)
        self.panel.enable.setToolTip(note or ENABLE_TIP)

    def set_enabled(self, on: bool) -> None:
        if on and self.unavailable:
            self.window.statusBar().showMessage(self.unavailable, 5000)
            return
        if on == self.on:
            return
        self.on = on
        if self.panel.enable.isChecked() != on:
            self.panel.enable.setChecked(on)
        if self.live is None:
            charts = self.window.charts
            names = [c.block for c in charts.charts]
            if on and names and charts.selected_block == names[0]:
                # First use, block untouched: start at the last block, nearest the class decision (the
                # first block's evidence needs a backward through nearly the whole network).
                charts.select_block(names[-1])
            from ..evidence import EvidenceRequest, LiveEvidence

            self.live = LiveEvidence(EvidenceRequest(**self.request))
        live, extras = self.live, self.worker.extras

        def toggle() -> None:  # on the worker thread, between frames
            if on and live not in extras:
                extras.append(live)
            elif not on and live in extras:
                extras.remove(live)

        self.worker.submit(toggle)
        if not on:
            self.cam_item.setVisible(False)
            self.chart.setVisible(False)
        self._rerun()

    def _rerun(self) -> None:
        """Re-run the current frame once for any number of changes made before the worker gets to it."""
        if self._rerun_queued:
            return
        self._rerun_queued = True
        worker = self.worker

        def run() -> None:
            self._rerun_queued = False
            worker._rerun()

        worker.submit(run)

    def _update_request(self, **changes: Any) -> None:
        self.request = {**self.request, **changes}
        live = self.live
        if live is None:
            return  # the request is built from these settings when the mode is first turned on
        from ..evidence import EvidenceRequest

        request = EvidenceRequest(**self.request)
        self.worker.submit(lambda: setattr(live, "request", request))
        if self.on:
            self._rerun()

    def set_class(self, index: int | None) -> None:
        """Explain ``index`` from now on (None: each frame's top-1)."""
        self.class_label = None if index is None else self._label(index)
        self.panel.class_edit.setText(self.class_label or "")
        self._update_request(class_index=index)

    def _prediction_clicked(self, row: int) -> None:
        result = self.window.last_result
        if result is None or row >= len(result.topk):
            return
        self.set_class(result.topk[row].index)
        self.window.tabs.setCurrentWidget(self.panel)
        self.set_enabled(True)

    def _class_typed(self) -> None:
        from ..evidence import EvidenceError, class_index_of

        text = self.panel.class_edit.text().strip()
        if not text:
            self.set_class(None)
            return
        try:
            index = class_index_of(text, self.class_names)
        except EvidenceError as exc:
            self.window.show_error(str(exc))
            return
        self.set_class(index)
        self.set_enabled(True)

    def _layer_chosen(self, _i: int) -> None:
        layer = self.panel.layer_box.currentData()
        self._update_request(layer=layer or None)

    def _block_selected(self, block: str) -> None:
        self._update_request(block=block)
        self._place_chart()

    # ------------------------------------------------------------------ model
    def _model_loaded(self, info: Any) -> None:
        self.class_names = list(info.class_names)
        completer = QCompleter(self.class_names, self.panel)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.activated.connect(lambda _text: self._class_typed())
        self.panel.class_edit.setCompleter(completer)
        box = self.panel.layer_box
        box.blockSignals(True)
        box.clear()
        box.addItem("Last convolutional block (auto)", "")
        for i, (name, channels) in enumerate(info.blocks, 1):
            box.addItem(f"Attention block {i} · {name} · {channels} ch", name)
        box.blockSignals(False)
        self.class_label = None
        self.panel.class_edit.clear()
        self._update_request(class_index=None, layer=None, block=self.window.charts.selected_block)
        self._chart_after = None
        self._place_chart()

    # ------------------------------------------------------------------ drawing
    def _place_chart(self) -> None:
        """Put the evidence row right under the selected block's gate chart."""
        charts = self.window.charts
        target = next((c for c in charts.charts if c.block == charts.selected_block), None)
        if target is None or target is self._chart_after:
            return
        box = charts.chart_box
        box.removeWidget(self.chart)
        box.insertWidget(box.indexOf(target) + 1, self.chart, 1)
        self._chart_after = target
        if self.chart.isVisible():
            self._reveal_chart()

    def _redraw(self) -> None:
        # The panel announces new options before it redraws its own bars: draw after it, in their order.
        QTimer.singleShot(0, lambda: self._draw(0))

    def _draw(self, _count: int) -> None:
        result = self.window.last_result
        ev = getattr(result, "evidence", None) if result is not None else None
        if not self.on or ev is None:
            self.cam_item.setVisible(False)
            self.chart.setVisible(False)
            if self.on and result is not None and result.meta.get("evidence_error"):
                self.panel.info.setText(result.meta["evidence_error"])
            return
        self._draw_cam(ev, result.meta.get("crop_box"))
        self._draw_chart(ev)
        label = self._label(ev.class_index)
        self.panel.info.setText(
            f"{label} (class {ev.class_index}) · {METHOD_LABELS.get(ev.method, ev.method)} at {ev.layer} · "
            f"score {ev.score:.3g} · {ev.ms:.0f} ms"
        )

    def _draw_cam(self, ev: Any, crop_box: tuple[int, int, int, int] | None) -> None:
        if crop_box is None:
            return
        top, left, ch, cw = crop_box
        m = ev.cam_resized((min(ch, 224), min(cw, 224)))
        hi = float(m.max()) if m.size else 0.0
        self.cam_item.setImage(m, autoLevels=False, levels=(0.0, hi if hi > 0 else 1.0))
        self.cam_item.setRect(QRectF(left, top, cw, ch))
        self.cam_item.setVisible(True)
        self.window.input_view.overlay.setVisible(False)  # one heat map at a time: the class map wins

    def _draw_chart(self, ev: Any) -> None:
        self._place_chart()
        block = next(iter(ev.evidence), None)
        target = self._chart_after
        if block is None or target is None or target.block != block:
            self.chart.setVisible(False)  # the frame was explained for another block; the next one will do
            return
        self.chart.show_evidence(block, ev.evidence[block], ev.gates.get(block), target.order)
        r, rho = ev.correlation(block)
        self.chart.set_title(evidence_title(self._label(ev.class_index), target.title, r, rho))
        if not self.chart.isVisible():
            self.chart.setVisible(True)
            self._reveal_chart()

    def _reveal_chart(self) -> None:
        """Scroll the charts so the evidence row shows, once the layout has made room for it."""
        scroll, chart = self.window.charts.scroll, self.chart

        def reveal() -> None:
            sb, g = scroll.verticalScrollBar(), chart.geometry()
            view = scroll.viewport().height()
            if g.bottom() + 4 > sb.value() + view:
                sb.setValue(min(sb.maximum(), g.bottom() + 4 - view))
            elif g.top() < sb.value():
                sb.setValue(max(0, g.top() - 4))

        QTimer.singleShot(100, reveal)

    def _label(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else f"class {index}"

    def _set_opacity(self, value: int) -> None:
        self.cam_item.setOpacity(value / 100.0)

    def current_cam(self) -> np.ndarray | None:
        """The map on screen (tests)."""
        return self.cam_item.image if self.cam_item.isVisible() else None
