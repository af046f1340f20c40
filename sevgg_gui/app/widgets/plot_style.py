"""The compact look every bar chart shares (gates, evidence, compare): small ticks inside the axes, no
pyqtgraph menu or buttons, a fixed view the mouse cannot drag, so charts stacked in a column line up."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QPointF
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget


def style_compact_plot(pi: pg.PlotItem, left_width: int, left_label: str | None = None) -> pg.ViewBox:
    """Style ``pi`` in place; returns its view box. ``left_width`` is shared by charts meant to align."""
    pi.setMenuEnabled(False)
    pi.hideButtons()
    pi.showGrid(y=True, alpha=0.15)
    if left_label is not None:
        pi.setLabel("left", left_label)
    small = QFont()
    small.setPointSize(7)
    for name in ("left", "bottom"):
        ax = pi.getAxis(name)
        ax.setTickFont(small)
        ax.enableAutoSIPrefix(False)
        ax.setStyle(tickLength=-4, tickTextOffset=2)
    pi.getAxis("left").setWidth(left_width)
    pi.getAxis("bottom").setHeight(16)
    vb = pi.getViewBox()
    vb.setMouseEnabled(x=False, y=False)
    vb.setDefaultPadding(0.0)
    return vb


def channel_under(vb: pg.ViewBox, scene_pos: QPointF, order, channels: int) -> int | None:
    """The channel whose bar is under the mouse; ``order[i]`` is the channel drawn at x = i (sorting)."""
    if not vb.sceneBoundingRect().contains(scene_pos):
        return None
    i = int(round(vb.mapSceneToView(scene_pos).x()))
    return int(order[i]) if 0 <= i < channels else None


def chart_column() -> tuple[QVBoxLayout, QScrollArea]:
    """A vertical stack of charts inside a frameless scroll area: (the stack's layout, the scroll area)."""
    box = QVBoxLayout()
    box.setContentsMargins(0, 0, 0, 0)
    box.setSpacing(2)
    inner = QWidget()
    inner.setLayout(box)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(inner)
    return box, scroll
