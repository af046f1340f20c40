"""Headless mode: process N frames offscreen, wait until the worker is idle, save the window, exit."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Qt, QTimer, Slot


def run_headless(app, win, source: str | None, args) -> int:
    """Process N frames offscreen, wait until the worker is idle, save the window, exit."""
    run = _HeadlessRun(app, win, args)
    queued = Qt.ConnectionType.QueuedConnection
    worker = win.worker_thread.worker
    worker.modelLoaded.connect(run.on_model_loaded, queued)
    worker.modelFailed.connect(run.on_model_failed, queued)
    worker.inferenceFailed.connect(run.on_inference_failed, queued)
    win.resultDrawn.connect(run.on_drawn)
    win.sourceError.connect(run.fail, queued)
    win.sourceFailed.connect(run.fail, queued)  # e.g. a camera that could not be opened
    if not source:
        run.fail("no source given and no bundled samples found")
        return 2
    if not win.open_source(source):
        run.fail(win.error_banner.label.text())
        return 2
    timer = QTimer(win, interval=100)
    timer.timeout.connect(run.poll)
    timer.start()
    QTimer.singleShot(int(args.timeout * 1000), run.on_timeout)
    code = app.exec()
    win.close()
    return run.code or code


class _HeadlessRun(QObject):
    """Receives the worker's and the pump's signals on the main thread (a QObject, so queued)."""

    def __init__(self, app, win, args) -> None:
        super().__init__(win)
        self.app, self.win, self.args = app, win, args
        self.want = max(1, args.frames or 1)
        self.code = 0
        self.done = False

    @Slot(str)
    def fail(self, message: str, code: int = 2) -> None:
        if self.done:
            return
        self.done = True
        print(f"sevgg-gui: {message}", file=sys.stderr)
        self.code = code
        self.app.exit(code)

    @Slot()
    def on_timeout(self) -> None:
        self.fail(f"timed out after {self.args.timeout:.0f} s", 3)

    @Slot(str)
    def on_inference_failed(self, message: str) -> None:
        self.fail(f"inference: {message}")

    @Slot(str)
    def on_model_failed(self, message: str) -> None:
        self.fail(f"model: {message}")

    @Slot(object)
    def on_model_loaded(self, _info) -> None:
        win, args = self.win, self.args
        if args.block:
            win.select_block_index(args.block - 1)
            if args.channel is not None and win.model_info:
                block = win.model_info.blocks[min(args.block, len(win.model_info.blocks)) - 1][0]
                win.select_channel(block, args.channel)

    @Slot(int)
    def on_drawn(self, _n: int) -> None:
        win = self.win
        if win.last_result is not None and win.last_result.meta.get("rerun"):
            return
        pump = win.pump
        if pump is None:
            return
        if win.frames_drawn >= self.want:
            if pump.streaming:
                pump.pause()  # videos and cameras: stop feeding so the worker can become idle
        elif not pump.streaming:
            pump.step(+1)  # images and folders advance on demand

    @Slot()
    def poll(self) -> None:
        win = self.win
        if (
            self.done
            or win.frames_drawn < self.want
            or not win.worker_thread.worker.idle
            or win._draw_scheduled
        ):
            return
        self.done = True
        if self.args.screenshot and not win.save_screenshot(self.args.screenshot):
            print(f"sevgg-gui: could not write {self.args.screenshot}", file=sys.stderr)
            self.code = 1
        elif self.args.screenshot:
            print(f"saved {self.args.screenshot} after {win.frames_drawn} frame(s)")
        self.app.exit(self.code)
