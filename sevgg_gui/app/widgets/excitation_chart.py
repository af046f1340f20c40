"""One SE block's excitation vector as a bar chart, updated in place every frame.

Items (bars, running-mean line, selection highlight) are created once; each frame only their data
changes. The y range is fixed for gates ([0, 1]) and adjusted with hysteresis for the unbounded
squeeze and difference views, never auto-ranged per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QAction, QCursor
from PySide6.QtWidgets import QMenu, QToolTip

from .plot_style import channel_under, style_compact_plot

MODES = ("gates", "squeeze", "diff")
MODE_LABELS = {
    "gates": "Excitation (gate)",
    "squeeze": "Squeeze (channel mean)",
    "diff": "Difference from mean",
}


@dataclass
class Series:
    heights: np.ndarray  # bar heights in display order
    order: np.ndarray  # display position -> channel
    mean_line: np.ndarray | None  # running mean in display order
    y_range: tuple[float, float]


def chart_series(values: np.ndarray, mean: np.ndarray | None, mode: str, sort: bool) -> Series:
    """What to draw for one block: pure numpy, shared by the chart and its tests."""
    values = np.asarray(values, dtype=np.float32)
    if mode == "diff":
        base = mean if mean is not None else values
        shown = values - base
        line = None
        r = float(np.max(np.abs(shown))) if shown.size else 0.0
        y_range = (-max(r, 0.02), max(r, 0.02))
    else:
        shown = values
        line = mean
        top = 1.0 if mode == "gates" else max(float(values.max(initial=0.0)), 1e-6)
        lo = 0.0 if mode == "gates" else min(0.0, float(values.min(initial=0.0)))
        y_range = (lo, top)
    order = np.argsort(-shown, kind="stable") if sort else np.arange(shown.size)
    return Series(shown[order], order, None if line is None else np.asarray(line)[order], y_range)


def disable_unless_allowed(menu: QMenu, action: QAction, note: str | None) -> None:
    """Grey out an intervention menu entry, with ``note`` (why) as its tooltip, when ``note`` is set."""
    if note:
        action.setEnabled(False)
        action.setToolTip(note)
        menu.setToolTipsVisible(True)


class ExcitationChart(pg.PlotWidget):
    """Bars for one block; hover shows block/channel/value/rank, click selects, right-click intervenes."""

    channelSelected = Signal(str, int)
    interventionRequested = Signal(str, int, str)  # block, channel, "mute" | "boost" | "reset"
    hovered = Signal(str)

    BAR = (86, 156, 214)
    SEL = (255, 170, 40)

    def __init__(self, block: str, title: str, channels: int, parent=None) -> None:
        super().__init__(parent=parent)
        self.block, self.title, self.channels = block, title, channels
        self.intervention_note: str | None = None  # why mute / boost are disabled (a runtime backend)
        self.order = np.arange(channels)
        self.values = np.zeros(channels, np.float32)
        self.selected: int | None = None
        self._y = (0.0, 1.0)
        pi = self.getPlotItem()
        style_compact_plot(pi, 52, title)
        x = np.arange(channels)
        self.bars = pg.BarGraphItem(x=x, height=np.zeros(channels), width=0.85, brush=self.BAR, pen=None)
        self.mean_line = pg.PlotDataItem(x, np.zeros(channels), pen=pg.mkPen((230, 230, 230, 160), width=1))
        self.profile_line = pg.PlotDataItem(x, np.zeros(channels), pen=pg.mkPen((255, 120, 200), width=1.5))
        self.profile_line.setVisible(False)
        self.highlight = pg.BarGraphItem(x=[0], height=[0], width=0.95, brush=self.SEL, pen=None)
        self.highlight.setVisible(False)
        self.zero = pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen((200, 200, 200, 90)))
        for line in (self.mean_line, self.profile_line):
            # pyqtgraph reads these Qt properties on every paint; defined, they never come back as None
            # (PySide6 6.12.0 leaks a reference to None for undefined properties).
            for name in ("styleWasChanged", "xViewRangeWasChanged", "yViewRangeWasChanged"):
                line.setProperty(name, False)
        for item in (self.bars, self.highlight, self.mean_line, self.profile_line, self.zero):
            self.addItem(item)
        self.setXRange(-0.5, channels - 0.5, padding=0)
        self.setYRange(0, 1, padding=0)
        self.setMinimumHeight(60)
        self.scene().sigMouseMoved.connect(self._on_move)
        self.scene().sigMouseClicked.connect(self._on_click)

    # ------------------------------------------------------------------ data
    def show_series(
        self, values: np.ndarray, series: Series, show_mean: bool, profile: np.ndarray | None = None
    ) -> None:
        """Draw one frame; ``profile`` (channel order) is a class's mean gate from `sevgg analyze`."""
        self.values = np.asarray(values, dtype=np.float32)
        self.order = series.order
        self.bars.setOpts(height=series.heights)
        self.profile_line.setVisible(profile is not None)
        if profile is not None:
            self.profile_line.setData(np.arange(self.channels), np.asarray(profile)[series.order])
        has_line = show_mean and series.mean_line is not None
        self.mean_line.setVisible(has_line)
        if has_line:
            self.mean_line.setData(np.arange(self.channels), series.mean_line)
        self._set_y(series.y_range)
        self._place_highlight(series.heights)

    def _set_y(self, y: tuple[float, float]) -> None:
        lo, hi = self._y
        nlo, nhi = y
        # Hysteresis: grow at once, shrink only when the data uses under half of the range.
        if nhi > hi or nlo < lo or (nhi - nlo) < 0.5 * (hi - lo):
            pad = 0.0 if y == (0.0, 1.0) else 0.05 * (nhi - nlo)
            self._y = (nlo - pad if nlo < 0 else nlo, nhi + pad)
            self.setYRange(*self._y, padding=0)

    def select(self, channel: int | None) -> None:
        self.selected = channel
        self._place_highlight(None)

    def _place_highlight(self, heights: np.ndarray | None) -> None:
        if self.selected is None or self.selected >= self.channels:
            self.highlight.setVisible(False)
            return
        pos = int(np.nonzero(self.order == self.selected)[0][0])
        if heights is None:
            heights = self.bars.opts["height"]
        self.highlight.setOpts(x=[pos], height=[float(heights[pos])])
        self.highlight.setVisible(True)

    # ------------------------------------------------------------------ interaction
    def channel_at(self, scene_pos: QPointF) -> int | None:
        return channel_under(self.getPlotItem().getViewBox(), scene_pos, self.order, self.channels)

    def describe(self, channel: int) -> str:
        v = float(self.values[channel]) if channel < self.values.size else float("nan")
        rank = int(np.sum(self.values > v)) + 1
        return f"{self.title}  ·  channel {channel}  ·  value {v:.4f}  ·  rank {rank}/{self.channels}"

    def _on_move(self, pos: QPointF) -> None:
        ch = self.channel_at(pos)
        if ch is None:
            return
        text = self.describe(ch)
        QToolTip.showText(QCursor.pos(), text, self)
        self.hovered.emit(text)

    def _on_click(self, ev) -> None:
        ch = self.channel_at(ev.scenePos())
        if ch is None:
            return
        if ev.button() == Qt.MouseButton.LeftButton:
            self.channelSelected.emit(self.block, ch)
        elif ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            self.context_menu(ch).popup(QCursor.pos())

    def context_menu(self, channel: int) -> QMenu:
        menu = QMenu(self)
        menu.setTitle(f"channel {channel}")
        for label, action in (
            (f"Mute channel {channel} (gate = 0)", "mute"),
            (f"Boost channel {channel} (gate x 2)", "boost"),
            ("Reset all interventions", "reset"),
        ):
            act = QAction(label, menu)
            act.triggered.connect(
                lambda _=False, a=action: self.interventionRequested.emit(self.block, channel, a)
            )
            disable_unless_allowed(menu, act, self.intervention_note)
            menu.addAction(act)
        sel = QAction(f"Select channel {channel}", menu)
        sel.triggered.connect(lambda: self.channelSelected.emit(self.block, channel))
        menu.insertAction(menu.actions()[0], sel)
        return menu
