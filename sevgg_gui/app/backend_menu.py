"""Model → Backend: run the current model in torch, onnxruntime or OpenVINO (issue #14).

The choice is kept in the settings (``model/backend``; ``--backend`` overrides it for one run) and goes
to the worker, which reloads the current model spec through the export cache off the UI thread
(``backend_loader.py``); until the new predictor is ready the old one keeps classifying frames. The
menu checks what actually runs: a model that cannot be exported or run there falls back to torch,
and that line is shown in the window.

A runtime graph has every gate and the top-5, but no squeezes, feature maps, autograd (class evidence)
or, until its recorder takes them, interventions: those controls are disabled with a tooltip saying
why, and come back with torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Qt, Slot
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu

from ..backends.export_cache import BACKENDS

if TYPE_CHECKING:  # pragma: no cover
    from .window import MainWindow
    from .worker import ModelInfo

SETTING = "model/backend"
TIPS = {
    "torch": "PyTorch runs the model itself: every feature of the app (interventions, feature maps, "
    "squeeze view, class evidence, cost table)",
    "onnxruntime": "ONNX Runtime (CPU) runs an ONNX export of the model with every gate as an output; "
    "exported once into the cache (seconds to a minute), then opened at once",
    "openvino": "OpenVINO (CPU, fp32) runs the same ONNX export; exported once into the cache, "
    "compiled on each open",
}
LABELS = {
    "torch": "torch (PyTorch)",
    "onnxruntime": "onnxruntime (ONNX Runtime, CPU)",
    "openvino": "openvino (OpenVINO, CPU)",
}


def needs_torch(what: str, runtime: str) -> str:
    return f"{what} need the torch backend ({runtime} runs an exported graph): Model → Backend → torch"


class BackendMenu(QObject):
    """The Backend submenu of the Model menu; applies what the running backend can and cannot do."""

    def __init__(self, window: MainWindow, backend: str | None = None) -> None:
        super().__init__(window)
        self.win = window
        stored = str(window.settings.value(SETTING, "torch") or "torch")
        self.chosen = backend if backend in BACKENDS else stored if stored in BACKENDS else "torch"
        self.running = "torch"
        self.worker = window.worker_thread.worker
        chosen = self.chosen
        self.worker.submit(lambda: setattr(self.worker, "backend", chosen))  # before the first load
        self._build_menu()
        self.worker.modelLoaded.connect(self._on_loaded, Qt.ConnectionType.QueuedConnection)

    def _build_menu(self) -> None:
        menu = next(
            a.menu() for a in self.win.menuBar().actions() if a.menu() is not None and "Model" in a.text()
        )
        self.menu = QMenu(f"Backend: {self.chosen}", menu)
        self.menu.setToolTipsVisible(True)
        menu.insertMenu(self.win.half_action, self.menu)
        group = QActionGroup(self)
        group.setExclusive(True)
        self.actions: dict[str, QAction] = {}
        for name in BACKENDS:
            a = QAction(LABELS[name], self.menu)
            a.setCheckable(True)
            a.setChecked(name == self.chosen)
            a.setToolTip(TIPS[name])
            a.setStatusTip(TIPS[name])
            a.triggered.connect(lambda _=False, b=name: self.choose(b))
            group.addAction(a)
            self.menu.addAction(a)
            self.actions[name] = a

    # ------------------------------------------------------------------ requests
    def choose(self, backend: str) -> None:
        """Remember ``backend`` and reload the current model in it (on the worker's side)."""
        if backend not in BACKENDS:
            self.win.show_error(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
            return
        self.chosen = backend
        self.win.settings.setValue(SETTING, backend)
        worker = self.worker
        worker.submit(lambda: setattr(worker, "backend", backend))
        loaded = self.win.model_info is not None
        spec = self.win.checkpoint if loaded else self.win._requested_checkpoint
        code = self.win.model_code if loaded else self.win._requested_model_code
        self.win.load_model(spec, model_code=code)
        what = Path(code or spec).name if (code or spec) else "the default VGG16-SE"
        if backend == "torch":
            self.win.statusBar().showMessage(f"Loading {what} in torch…")
        else:
            self.win.statusBar().showMessage(
                f"Opening {what} in {backend} (exported once into the cache: up to a minute the first "
                "time); the current model keeps running meanwhile…"
            )

    # ------------------------------------------------------------------ worker replies
    @Slot(object)
    def _on_loaded(self, info: ModelInfo) -> None:
        """Check what runs, say why when it is not what was chosen, and fit the controls to it."""
        self.running = info.backend
        for name, a in self.actions.items():
            a.setChecked(name == info.backend)
        asked = f" (chose {self.chosen})" if info.backend != self.chosen else ""
        self.menu.setTitle(f"Backend: {info.backend}{asked}")
        if info.backend_note:
            self.win.show_error(info.backend_note)
        runtime = info.backend != "torch"
        interventions = (
            None if info.interventions else needs_torch("Interventions (mute / boost)", info.backend)
        )
        win = self.win
        win.charts.set_intervention_note(interventions)
        win.compare.view.set_intervention_note(interventions)
        win.charts.set_squeeze_note(
            needs_torch("Squeezes (channel means)", info.backend) if runtime else None
        )
        win.thumbs.set_unavailable(needs_torch("Feature maps", info.backend) if runtime else None)
        win.evidence.set_unavailable(needs_torch("Class evidence maps", info.backend) if runtime else None)
