"""Guard against Qt bindings that drop references to None/True/False in the per-frame draw path.

PySide6 6.12.0 returned an undefined QObject property without a reference to None; pyqtgraph reads
such properties on every PlotDataItem paint, so a live session aborted after a few thousand frames
("Fatal Python error: none_dealloc"). pyproject excludes that release; this test fails if a Qt/pyqtgraph
combination with such a leak comes back.
"""

from __future__ import annotations

import gc
import sys

import numpy as np
from PySide6.QtCore import QObject

from sevgg_gui.app.widgets.excitation_chart import ExcitationChart, chart_series


def _counts() -> tuple[int, int, int]:
    gc.collect()
    return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)


def test_undefined_qt_property_keeps_none_alive(qapp):
    obj = QObject()
    before = _counts()
    for _ in range(500):
        obj.property("undefined")
    after = _counts()
    assert after[0] - before[0] > -50, "this PySide6 release leaks references to None (see pyproject.toml)"


def test_chart_redraws_do_not_drain_singletons(qtbot):
    chart = ExcitationChart("features.4", "SE1 · 64", 64)
    qtbot.addWidget(chart)
    chart.resize(600, 120)
    chart.show()
    rng = np.random.default_rng(0)
    before = _counts()
    for _ in range(200):
        v = rng.random(64).astype(np.float32)
        chart.show_series(v, chart_series(v, v * 0.9, "gates", False), True, v)
        chart.grab()  # a real paint of every item
    after = _counts()
    assert all(a - b > -50 for a, b in zip(after, before, strict=True)), (before, after)
