"""A block's channel evidence for one class as bars, in the display order of that block's gate chart.

Drawn as a second row under the gate chart: bar i of both charts is the same channel, also when the gate
chart sorts by value (the order comes from it). Positive evidence (the channel speaks for the class) is
green, negative red. Items are created once and updated in place.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QToolTip

from .plot_style import channel_under, style_compact_plot


def evidence_title(class_label: str, block_title: str, r: float, rho: float) -> str:
    """'Evidence for tabby · SE5 · gate–evidence r = +0.12, ρ = +0.08' (n/a when undefined)."""

    def fmt(v: float) -> str:
        return "n/a" if not np.isfinite(v) else f"{v:+.2f}"

    return f"Evidence for {class_label} · {block_title} · gate–evidence r = {fmt(r)}, ρ = {fmt(rho)}"


class EvidenceChart(pg.PlotWidget):
    POS = (80, 200, 120)
    NEG = (230, 90, 80)

    def __init__(self, parent=None) -> None:
        super().__init__(parent=parent)
        self.channels = 0
        self.order = np.zeros(0, int)
        self.values = np.zeros(0, np.float32)
        self.gates = np.zeros(0, np.float32)
        self.block = ""
        self._y = 1e-6
        pi = self.getPlotItem()
        style_compact_plot(pi, 52, "evidence")
        self.pos_bars = pg.BarGraphItem(x=[0], height=[0], width=0.85, brush=self.POS, pen=None)
        self.neg_bars = pg.BarGraphItem(x=[0], height=[0], width=0.85, brush=self.NEG, pen=None)
        self.zero = pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen((200, 200, 200, 90)))
        for item in (self.pos_bars, self.neg_bars, self.zero):
            self.addItem(item)
        self.setMinimumHeight(110)  # its title and a readable bar height, among many gate charts
        self.scene().sigMouseMoved.connect(self._on_move)

    def set_title(self, text: str) -> None:
        self.getPlotItem().setTitle(text, size="8pt", color="#dddddd")

    def show_evidence(
        self, block: str, values: np.ndarray, gates: np.ndarray | None, order: np.ndarray
    ) -> None:
        """``values``/``gates`` in channel order; ``order``: display position -> channel (the gate chart's)."""
        values = np.asarray(values, np.float32)
        n = values.size
        if n != self.channels:
            self.channels = n
            self.setXRange(-0.5, n - 0.5, padding=0)
        order = np.asarray(order) if len(order) == n else np.arange(n)
        self.block, self.order, self.values = block, order, values
        self.gates = np.asarray(gates, np.float32) if gates is not None else np.full(n, np.nan, np.float32)
        shown = values[order]
        x = np.arange(n)
        self.pos_bars.setOpts(x=x, height=np.maximum(shown, 0))
        self.neg_bars.setOpts(x=x, height=np.minimum(shown, 0))
        top = float(np.max(np.abs(shown))) if n else 0.0
        # Grow at once, shrink only when the data use under half of the range (no jumping per frame).
        if top > self._y or top < 0.5 * self._y:
            self._y = max(top * 1.05, 1e-6)
            self.setYRange(-self._y, self._y, padding=0)

    def channel_at(self, scene_pos: QPointF) -> int | None:
        return channel_under(self.getPlotItem().getViewBox(), scene_pos, self.order, self.channels)

    def _on_move(self, pos: QPointF) -> None:
        ch = self.channel_at(pos)
        if ch is None:
            return
        QToolTip.showText(
            QCursor.pos(),
            f"{self.block} · channel {ch} · evidence {self.values[ch]:+.4g} · gate {self.gates[ch]:.3f}",
            self,
        )
