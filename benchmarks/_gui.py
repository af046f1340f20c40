"""What the window benchmarks (bench_pipeline, bench_compare) share: a real window offscreen with
throw-away settings, an event-loop wait, the sample frames, and percentiles. Import it inside ``main``
after ``start``/``setup_torch``: it imports Qt and the app."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable

import numpy as np


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]


def open_bench_window():
    """(QApplication, MainWindow) at 1280x800, styled as the app, settings in a temp folder, no model."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from sevgg_gui.app.main import _style
    from sevgg_gui.app.window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    _style(app)
    tmp = tempfile.mkdtemp(prefix="sevgg-bench-")
    win = MainWindow(QSettings(os.path.join(tmp, "s.ini"), QSettings.Format.IniFormat), load_model=False)
    win.resize(1280, 800)
    win.show()
    return app, win


def spin(cond: Callable[[], bool], timeout: float = 120.0, what: str = "pipeline") -> None:
    """Run the Qt event loop until ``cond()`` holds; TimeoutError after ``timeout`` seconds."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    timer = QTimer(interval=5)
    timer.timeout.connect(lambda: cond() and loop.quit())
    timer.start()
    deadline = QTimer(singleShot=True, interval=int(timeout * 1000))
    deadline.timeout.connect(loop.quit)
    deadline.start()
    if not cond():
        loop.exec()
    timer.stop()
    if not cond():
        raise TimeoutError(f"{what} did not finish in time")


def sample_frames(width: int = 640, height: int = 480) -> list[np.ndarray]:
    """The bundled sample photos as webcam-sized RGB frames."""
    import cv2

    from sevgg_gui.bundled import SAMPLES
    from sevgg_gui.images import load_image

    pics = [load_image(p) for p in sorted(SAMPLES.iterdir()) if p.suffix in (".png", ".jpg")]
    return [cv2.resize(pic, (width, height), interpolation=cv2.INTER_AREA) for pic in pics]
