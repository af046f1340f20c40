"""Compare mode's view: top-5 of A and B with their agreement, and per paired block A's and B's gates
on one chart (A up, B down) or their difference (B − A), titled with how alike they are on this frame.

Pure drawing: every number comes from :class:`~sevgg_gui.model_diff.FrameComparison`, computed on the
worker thread. Plot items are created once per pairing; each frame only sets their data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QAction, QCursor
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from .excitation_chart import disable_unless_allowed
from .plot_style import chart_column, style_compact_plot
from .predictions import PredictionsView

A_COLOR = (86, 156, 214)
B_COLOR = (240, 160, 48)
UP, DOWN = (90, 200, 120), (230, 90, 90)
VIEWS = (("mirrored", "Gates: A ↑  B ↓"), ("diff", "Difference B − A"))


def _short(name: str, n: int = 48) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1) :]


class CompareBlockChart(pg.PlotWidget):
    """One paired block: A's gates up, B's down (or B − A), channels in pairing order (A's)."""

    interventionRequested = Signal(str, int, str)
    hovered = Signal(str)

    def __init__(self, index: int, pair: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.index, self.pair = index, pair
        self.intervention_note: str | None = None  # why mute / boost are disabled (a runtime backend)
        n = pair.channels
        self.a = np.zeros(n, np.float32)
        self.b = np.zeros(n, np.float32)
        self.mode = "mirrored"
        self._y = 1.0
        pi = self.getPlotItem()
        style_compact_plot(pi, 34)
        x = np.arange(n)
        self.bars_a = pg.BarGraphItem(x=x, height=np.zeros(n), width=0.85, brush=A_COLOR, pen=None)
        self.bars_b = pg.BarGraphItem(x=x, height=np.zeros(n), width=0.85, brush=B_COLOR, pen=None)
        # B − A as two fixed-colour items (rises, falls): per-bar brushes cost ~18 ms per 512 bars a frame.
        self.bars_d = pg.BarGraphItem(x=x, height=np.zeros(n), width=0.85, brush=UP, pen=None)
        self.bars_dn = pg.BarGraphItem(x=x, height=np.zeros(n), width=0.85, brush=DOWN, pen=None)
        for item in (self.bars_a, self.bars_b, self.bars_d, self.bars_dn):
            self.addItem(item)
        self.bars_d.setVisible(False)
        self.bars_dn.setVisible(False)
        self.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen((200, 200, 200, 110))))
        self.setXRange(-0.5, n - 0.5, padding=0)
        self.setYRange(-1, 1, padding=0)
        self.setMinimumHeight(90)
        self.set_title("")
        self.scene().sigMouseMoved.connect(self._on_move)
        self.scene().sigMouseClicked.connect(self._on_click)

    @property
    def label(self) -> str:
        p = self.pair
        names = p.a if p.a == p.b else f"{p.a} ↔ {p.b}"
        return f"{self.index} · {_short(names, 40)} · {p.channels} ch{' by origin' if p.by_origin else ''}"

    def set_title(self, stats: str) -> None:
        self.title_text = f"{self.label}   {stats}".rstrip()
        self.getPlotItem().setTitle(self.title_text, size="8pt", color="#d0d0d0")

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        diff = mode == "diff"
        self.bars_a.setVisible(not diff)
        self.bars_b.setVisible(not diff)
        self.bars_d.setVisible(diff)
        self.bars_dn.setVisible(diff)
        self._y = 0.0
        self._draw()

    def show_frame(self, frame: Any) -> None:
        self.a, self.b = frame.a, frame.b
        k = min(10, frame.pair.channels)
        sp = "—" if frame.spearman != frame.spearman else f"{frame.spearman:.2f}"
        self.set_title(
            f"cos {frame.cosine:.3f} · ρ {sp} · top-{k} {round(frame.top10_overlap * k)}/{k} "
            f"· |B−A| {frame.mean_abs_diff:.3g}"
        )
        self._draw()

    def _draw(self) -> None:
        if self.mode == "diff":
            d = self.b - self.a
            self.bars_d.setOpts(height=np.maximum(d, 0.0))
            self.bars_dn.setOpts(height=np.minimum(d, 0.0))
            r = max(0.02, float(np.abs(d).max(initial=0.0)) * 1.1)
            if r > self._y or r < 0.5 * self._y:  # grow at once, shrink with hysteresis
                self._y = r
                self.setYRange(-r, r, padding=0)
        else:
            self.bars_a.setOpts(height=self.a)
            self.bars_b.setOpts(height=-self.b)
            if self._y != 1.0:
                self._y = 1.0
                self.setYRange(-1, 1, padding=0)

    # ------------------------------------------------------------------ interaction
    def position_at(self, scene_pos: QPointF) -> int | None:
        vb = self.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            return None
        i = int(round(vb.mapSceneToView(scene_pos).x()))
        return i if 0 <= i < self.pair.channels else None

    def describe(self, i: int) -> str:
        p = self.pair
        ca, cb = int(p.a_index[i]), int(p.b_index[i])
        a, b = float(self.a[i]), float(self.b[i])
        chan = f"A ch {ca}" if ca == cb else f"A ch {ca} ↔ B ch {cb}"
        return f"block {self.index} · {chan} · A {a:.4f} · B {b:.4f} · B−A {b - a:+.4f}"

    def _on_move(self, pos: QPointF) -> None:
        i = self.position_at(pos)
        if i is not None:
            text = self.describe(i)
            QToolTip.showText(QCursor.pos(), text, self)
            self.hovered.emit(text)

    def _on_click(self, ev) -> None:
        i = self.position_at(ev.scenePos())
        if i is not None and ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            self.context_menu(i).popup(QCursor.pos())

    def context_menu(self, i: int) -> QMenu:
        """Interventions act on A (B is the reference)."""
        ch = int(self.pair.a_index[i])
        menu = QMenu(self)
        for label, action in (
            (f"Mute A's channel {ch} (gate = 0)", "mute"),
            (f"Boost A's channel {ch} (gate x 2)", "boost"),
            ("Reset all interventions", "reset"),
        ):
            act = QAction(label, menu)
            act.triggered.connect(
                lambda _=False, a=action: self.interventionRequested.emit(self.pair.a, ch, a)
            )
            disable_unless_allowed(menu, act, self.intervention_note)
            menu.addAction(act)
        return menu


class CompareView(QWidget):
    interventionRequested = Signal(str, int, str)
    closeRequested = Signal()
    hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.a_info: Any = None
        self.b_info: Any = None
        self.charts: list[CompareBlockChart] = []
        self.intervention_note: str | None = None
        self._pairs_key: tuple | None = None
        self.mode = "mirrored"
        self._agree: bool | None = None

        self.a_label = QLabel("A: —")
        self.b_label = QLabel("B: —")
        for lab, color in ((self.a_label, A_COLOR), (self.b_label, B_COLOR)):
            lab.setStyleSheet(f"color: rgb{color}; font-weight: bold")
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pred_a = PredictionsView()
        self.pred_b = PredictionsView()
        self.pred_a.setToolTip("Top-5 of model A (the app's model; interventions apply here)")
        self.pred_b.setToolTip("Top-5 of model B (the reference)")
        self.agreement = QLabel("")
        self.agreement.setStyleSheet("font-weight: bold")
        self.view_box = QComboBox()
        for key, text in VIEWS:
            self.view_box.addItem(text, key)
        self.view_box.currentIndexChanged.connect(lambda _i: self.set_mode(self.view_box.currentData()))
        self.stop_btn = QPushButton("Stop comparing")
        self.stop_btn.clicked.connect(self.closeRequested)

        top = QGridLayout()
        top.setContentsMargins(4, 2, 4, 2)
        top.setHorizontalSpacing(8)
        top.addWidget(self.a_label, 0, 0)
        top.addWidget(self.b_label, 0, 1)
        top.addWidget(self.pred_a, 1, 0)
        top.addWidget(self.pred_b, 1, 1)
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 0, 4, 0)
        bar.addWidget(self.agreement, 1)
        self.interventions = QLabel("")
        self.interventions.setStyleSheet("color: #ffaa28")
        self.interventions.setToolTip("Interventions act on model A; right-click a bar for more, or Reset")
        self.interventions.setVisible(False)
        bar.addWidget(self.interventions)
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.view_box)
        bar.addWidget(self.stop_btn)

        self.chart_box, self.scroll = chart_column()
        self.unpaired = QLabel("")
        self.unpaired.setWordWrap(True)
        self.unpaired.setStyleSheet("color: #e0a0a0")

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addLayout(bar)
        lay.addWidget(self.scroll, 1)
        lay.addWidget(self.unpaired)

    def set_models(self, a_info: Any, b_info: Any) -> None:
        self.a_info, self.b_info = a_info, b_info
        a = getattr(a_info, "provenance", None) or "—"
        b = getattr(b_info, "provenance", None) or "—"
        self.a_label.setText(f"A: {_short(str(a), 70)}")
        self.b_label.setText(f"B (reference): {_short(str(b), 58)}")
        self.a_label.setToolTip(str(a))
        self.b_label.setToolTip(str(b))

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        keys = [k for k, _t in VIEWS]
        if self.view_box.currentData() != mode and mode in keys:
            self.view_box.blockSignals(True)
            self.view_box.setCurrentIndex(keys.index(mode))
            self.view_box.blockSignals(False)
        for c in self.charts:
            c.set_mode(mode)

    def set_interventions(self, text: str) -> None:
        """The window's intervention list (they act on A), shown here while the charts are hidden."""
        if self.interventions.text() != text:
            self.interventions.setText(text)
            self.interventions.setVisible(bool(text))

    def set_intervention_note(self, note: str | None) -> None:
        """``note``: why A takes no interventions (a runtime backend); None: it does."""
        self.intervention_note = note
        for c in self.charts:
            c.intervention_note = note

    def _rebuild(self, frames: list[Any]) -> None:
        for c in self.charts:
            c.setParent(None)
            c.deleteLater()
        self.charts = []
        for i, f in enumerate(frames, 1):
            chart = CompareBlockChart(i, f.pair)
            chart.intervention_note = self.intervention_note
            chart.set_mode(self.mode)
            chart.interventionRequested.connect(self.interventionRequested)
            chart.hovered.connect(self.hovered)
            self.chart_box.addWidget(chart, 1)
            self.charts.append(chart)

    def update_comparison(self, result: Any, cmp: Any) -> None:
        key = tuple((f.pair.a, f.pair.b, f.pair.channels, f.pair.by_origin) for f in cmp.blocks)
        if key != self._pairs_key:
            self._pairs_key = key
            self._rebuild(cmp.blocks)
        for chart, frame in zip(self.charts, cmp.blocks, strict=True):
            chart.show_frame(frame)
        self.pred_a.set_predictions([(p.label, p.prob) for p in result.topk])
        self.pred_b.set_predictions([(p.label, p.prob) for p in cmp.result_b.topk])
        k = min(5, len(result.topk), len(cmp.result_b.topk))
        self.agreement.setText(
            f"top-1 {'agrees ✓' if cmp.top1_agree else 'differs ✗'} · "
            f"top-{k} overlap {round(cmp.top5_overlap * k)}/{k} · {len(cmp.blocks)} paired block(s)"
        )
        if self._agree is not cmp.top1_agree:  # a style sheet change re-polishes the widget: only on change
            self._agree = cmp.top1_agree
            color = "#8fd18f" if cmp.top1_agree else "#ff9a8a"
            self.agreement.setStyleSheet(f"font-weight: bold; color: {color}")
        if cmp.unpaired:
            text = ", ".join(f"{u['model'].upper()} {u['block']} ({u['channels']} ch)" for u in cmp.unpaired)
            self.unpaired.setText(f"Unpaired (no block of the other model has a matching place): {text}")
        else:
            self.unpaired.setText("")
        self.unpaired.setVisible(bool(cmp.unpaired))
