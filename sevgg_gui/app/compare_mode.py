"""Compare mode: model B beside the current model A, every frame through both.

Two halves, so the window and the worker each gain only a few lines of wiring:

* :class:`CompareSlot` lives on the inference worker's side. The worker calls :meth:`CompareSlot.run`
  after A's forward (same thread, same latest-wins frame), and :meth:`CompareSlot.a_changed` when a new
  A is installed. B is any spec :func:`~sevgg_gui.backends.open_predictor` opens (checkpoints, torch
  models, ``.onnx`` files through onnxruntime). The comparison itself is core code
  (:class:`~sevgg_gui.model_diff.LiveComparison`); this module only moves its results.
* :class:`CompareMode` lives on the UI thread: the Model → Compare with… menu, the view that replaces
  the charts while comparing, the HUD line, Shift+drop. It never touches a model: requests go to the
  worker as commands.

Interventions stay on A (the worker's Predictor); B is the reference. A B that fails to load, or fails
on a frame (out of memory...), is dropped with one line in the window while A keeps running.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import QFileDialog, QLabel, QMenu

from .widgets.compare_view import CompareView

B_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".safetensors", ".onnx"}


@dataclass
class CompareInfo:
    """What the UI needs to know about B (plain data, crosses threads)."""

    spec: str
    provenance: str
    device: str
    warning: str | None = None


class CompareSlot(QObject):
    """Worker-thread half: owns B. Signals are emitted on the worker thread, delivered queued."""

    loaded = Signal(object)  # CompareInfo
    failed = Signal(str)  # B could not be loaded (one line); A keeps running
    stopped = Signal(str)  # B failed on a frame and was dropped (one line); A keeps running
    closed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.comparison: Any = None  # model_diff.LiveComparison
        self._a: tuple = (None, None, None)  # (sha256, path, prune record) of A
        self._last: tuple[Any, Any] | None = None  # (frame, B's Result) for re-runs of that frame

    # ------------------------------------------------------------------ worker thread only
    def load(self, spec: str, device: str = "auto") -> None:
        from ..backends import open_predictor

        try:
            opened = open_predictor(spec, device=device)
        except Exception as exc:  # any failure to load B is one line; A is untouched
            self.failed.emit(_one_line(exc))
            return
        self.install(opened.predictor, opened.name, opened.provenance, opened.warning, opened.identity)

    def install(
        self,
        predictor: Any,
        name: str,
        provenance: str | None = None,
        warning: str | None = None,
        identity: tuple = (None, None, None),
    ) -> None:
        """Make a ready predictor model B (also for benchmarks and models built elsewhere)."""
        from ..model_diff import LiveComparison

        self.drop(emit=False)
        self.comparison = LiveComparison(predictor, name=name, identity=identity)
        self.comparison.set_a(*self._a)
        self.loaded.emit(CompareInfo(name, provenance or name, str(predictor.device), warning))

    def drop(self, emit: bool = True) -> None:
        """Leave compare mode: B's predictor is closed (its hooks removed) and released."""
        cmp, self.comparison, self._last = self.comparison, None, None
        if cmp is not None:
            cmp.close()
            if emit:
                self.closed.emit()

    def a_changed(self, predictor: Any, info: Any) -> None:
        record = getattr(getattr(predictor, "model", None), "prune_record", None)
        self._a = (getattr(info, "sha256", None), getattr(info, "checkpoint", None), record)
        self._last = None
        if self.comparison is not None:
            self.comparison.set_a(*self._a)

    def run(self, frame: Any, result: Any, rerun: bool = False) -> None:
        """B on A's frame; the comparison goes into ``result.meta["compare"]``."""
        if self.comparison is None:
            return
        reuse = self._last[1] if rerun and self._last is not None and self._last[0] is frame else None
        try:
            cmp = self.comparison.run(frame.rgb, result, reuse)
        except Exception as exc:  # B out of memory, or a frame B cannot take: drop B, keep A
            self.drop(emit=False)
            self.stopped.emit(_one_line(exc))
            return
        self._last = (frame, cmp.result_b)
        result.meta["compare"] = cmp


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class CompareMode(QObject):
    """UI-thread half: menu, view, HUD line; wired into the window by a few lines."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.win = window
        self.active = False
        self.info: CompareInfo | None = None
        self.slot = CompareSlot()
        worker = window.worker_thread.worker
        worker.compare = self.slot
        queued = Qt.ConnectionType.QueuedConnection
        self.slot.loaded.connect(self._on_loaded, queued)
        self.slot.failed.connect(self._on_failed, queued)
        self.slot.stopped.connect(self._on_stopped, queued)
        self.slot.closed.connect(self._on_closed, queued)

        self.view = CompareView()
        self.view.setVisible(False)
        self.view.interventionRequested.connect(window.request_intervention)
        self.view.closeRequested.connect(self.stop)
        splitter = window.charts.parentWidget()
        splitter.insertWidget(splitter.indexOf(window.charts), self.view)
        self.hud = QLabel("")
        self.hud.setVisible(False)
        window.statusBar().addPermanentWidget(self.hud)
        self._build_menu()

    def _build_menu(self) -> None:
        from ..model_specs import MODEL_CHOICES

        menu = next(
            a.menu() for a in self.win.menuBar().actions() if a.menu() is not None and "Model" in a.text()
        )
        sub = QMenu("Compare with…", menu)
        first = next((a for a in menu.actions() if a.isSeparator()), None)
        menu.insertMenu(first, sub) if first is not None else menu.addMenu(sub)
        pick = QAction("Checkpoint or ONNX file…", sub)
        pick.triggered.connect(self.choose_file)
        sub.addAction(pick)
        sub.addSeparator()
        for label, spec in MODEL_CHOICES:
            a = QAction(label, sub)
            a.triggered.connect(lambda _=False, sp=spec: self.start(sp))
            sub.addAction(a)
        sub.addSeparator()
        self.stop_action = QAction("Stop comparing", sub)
        self.stop_action.setEnabled(False)
        self.stop_action.triggered.connect(self.stop)
        sub.addAction(self.stop_action)
        self.menu = sub

    # ------------------------------------------------------------------ requests
    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.win,
            "Compare with model B",
            self.win._last_dir(),
            "Models (*.pth *.pt *.ckpt *.safetensors *.bin *.onnx);;All files (*)",
        )
        if path:
            self.start(path)

    def start(self, spec: str | None) -> None:
        """Load B beside A (on the worker thread); a failure shows one line, A keeps running."""
        self.win.statusBar().showMessage(f"Loading model B: {Path(str(spec)).name}…")
        device = self.win.device
        self.win.worker_thread.worker.submit(lambda: self.slot.load(spec, device))
        self.win.worker_thread.worker.rerun()

    def stop(self) -> None:
        self.win.worker_thread.worker.submit(self.slot.drop)
        self._leave()

    def wants_drop(self, path: str) -> bool:
        """A dropped model file becomes B with Shift held (an ONNX file always: it can only be B)."""
        shift = bool(QGuiApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier)
        return Path(path).suffix.lower() == ".onnx" or (shift and Path(path).suffix.lower() in B_SUFFIXES)

    # ------------------------------------------------------------------ worker replies
    @Slot(object)
    def _on_loaded(self, info: CompareInfo) -> None:
        self.info = info
        self.active = True
        self.stop_action.setEnabled(True)
        self.view.set_models(self.win.model_info, info)
        if not self.view.isVisible():
            splitter = self.view.parentWidget()
            sizes = splitter.sizes()
            total = sum(sizes)
            self.view.setVisible(True)
            self.win.charts.setVisible(False)
            # The view takes the charts' place and most of the height; the thumbnails keep the rest.
            splitter.setSizes([int(0.8 * total) if w is self.view else (0 if w is self.win.charts else int(0.2 * total))
                               for w in (splitter.widget(i) for i in range(splitter.count()))])  # fmt: skip
        self.hud.setVisible(True)
        note = f" ({info.warning})" if info.warning else ""
        self.win.statusBar().showMessage(f"Comparing with B: {info.provenance}{note}", 6000)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        kept = " — A keeps running" if self.win.model_info else ""
        self.win.show_error(f"Could not load model B: {message}{kept}")

    @Slot(str)
    def _on_stopped(self, message: str) -> None:
        self._leave()
        self.win.show_error(f"Model B stopped: {message} — compare mode left, A keeps running")

    @Slot()
    def _on_closed(self) -> None:
        self._leave()

    def _leave(self) -> None:
        self.active = False
        self.info = None
        self.stop_action.setEnabled(False)
        self.view.setVisible(False)
        self.win.charts.setVisible(True)
        self.hud.setVisible(False)

    # ------------------------------------------------------------------ per frame
    def draw(self, result: Any) -> None:
        cmp = result.meta.get("compare")
        if cmp is None or not self.active:
            return
        with contextlib.suppress(RuntimeError):  # the window is closing
            if self.view.a_info is not self.win.model_info:  # another A was loaded meanwhile
                self.view.set_models(self.win.model_info, self.info)
            self.view.update_comparison(result, cmp)
            self.view.set_interventions(self.win.charts.interventions_label.text())
            ta = result.timings.get("model", 0.0)
            tb = cmp.result_b.timings.get("model", 0.0)
            self.hud.setText(f"A model {ta:.0f} ms · B model {tb:.0f} ms")
