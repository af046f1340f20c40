"""Run a core download on a plain thread and report to the UI through queued signals."""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal

from ..downloads import DownloadError, download


class Downloader(QObject):
    progress = Signal(int, int)  # bytes done, total (0 = unknown)
    finished = Signal(str)  # path
    failed = Signal(str)  # one line

    def __init__(self, url: str, dest: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.url, self.dest = url, dest
        self.cancel_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sevgg-download", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self.cancel_event.set()

    def _run(self) -> None:
        try:
            path = download(self.url, self.dest, progress=self.progress.emit, cancel=self.cancel_event)
        except DownloadError as exc:
            self.failed.emit(str(exc))
            return
        self.finished.emit(str(path))
