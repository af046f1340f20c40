"""The compact look every bar chart shares (gates, evidence, compare): small ticks inside the axes, no
pyqtgraph menu or buttons, a fixed view the mouse cannot drag, so charts stacked in a column line up."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QFont


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
