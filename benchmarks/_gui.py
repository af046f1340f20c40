"""What the window benchmarks (bench_pipeline, bench_compare, bench_backend_pipeline) share: a real
window offscreen with throw-away settings, an event-loop wait, the sample frames, lossless live feeding,
and percentiles. Import it inside ``main``
after ``start``/``setup_torch``: it imports Qt and the app."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
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


class LiveFeed:
    """The window's live pipeline fed losslessly: a thread hands the worker the next frame as soon as it
    took the last one (the worker never waits, no frame is dropped), Results counted on the UI thread."""

    def __init__(self, win, frames: list[np.ndarray]) -> None:
        from PySide6.QtCore import QObject, Qt

        self.win, self.frames = win, frames
        self.n, self.t_last = 0, 0.0
        feed = self

        class _Counter(QObject):  # a QObject on the UI thread, so the queued slot runs there
            def on_result(self, _r) -> None:
                feed.n += 1
                feed.t_last = time.perf_counter()

        self._counter = _Counter()
        win.worker_thread.worker.resultReady.connect(
            self._counter.on_result, Qt.ConnectionType.QueuedConnection
        )

    def frame(self, i: int, t: float | None = None):
        from sevgg_gui.sources import Frame

        return Frame(
            rgb=self.frames[i % len(self.frames)],
            index=i,
            timestamp=time.perf_counter() if t is None else t,
            origin="bench",
            capture_ms=0.0,
        )

    def fps(self, n: int, timeout: float = 600.0) -> float:
        """Frames per second of ``n`` frames through the worker, the window drawing every Result."""
        win = self.win
        self.n = 0
        start_t = time.perf_counter()

        def feed() -> None:
            for i in range(n):
                win.frames.wait_empty()
                win.frames.put(self.frame(i))

        th = threading.Thread(target=feed)
        th.start()
        spin(lambda: self.n >= n, timeout=timeout, what="pipeline")
        th.join()
        elapsed = self.t_last - start_t
        spin(lambda: win.worker_thread.worker.idle and not win._draw_scheduled, what="pipeline")
        return n / elapsed
