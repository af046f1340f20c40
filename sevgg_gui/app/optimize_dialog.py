"""Model → "Optimize for this CPU…": INT8 for the current model, checked before it is used (issue #14).

The dialog collects images (frames of the current source, gathered over a few seconds, or a folder),
then runs :func:`~sevgg_gui.deploy.int8_check.calibrate_and_check` — the same code as
``sevgg quantize`` — on a thread, with a progress bar and Cancel. Its result view shows, before
anything changes, the top-1 agreement and the largest SE gate difference on the held-out images and
the speed-up; "Use INT8" (only when the check passed the user's threshold) installs an
:class:`~sevgg_gui.backends.onnx_runtime.OnnxPredictor` on the INT8 file in the worker, "Keep fp32"
changes nothing. No model math here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:  # pragma: no cover
    from .window import MainWindow

NEEDS_ORT = "needs onnxruntime (pip install 'sevgg-gui[deploy]')"


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def add_optimize_action(win: MainWindow, menu: Any) -> None:
    """The Model menu entry; disabled with a tooltip saying why when onnxruntime is missing."""
    action = menu.addAction("Optimize for this CPU (INT8)…", lambda: open_optimize_dialog(win))
    if not onnxruntime_available():
        action.setEnabled(False)
        action.setToolTip(NEEDS_ORT)
        menu.setToolTipsVisible(True)


def open_optimize_dialog(win: MainWindow) -> OptimizeDialog:
    worker = win.worker_thread.worker
    dlg = OptimizeDialog(
        win.checkpoint,
        model_code=win.model_code,
        last_frame=lambda: worker.last_frame,
        install=worker.set_predictor,
        start_dir=win._last_dir(),
        parent=win,
    )
    dlg.show()
    return dlg


def int8_out_path(spec: str | None) -> Path:
    """Where an accepted INT8 file goes: beside the export cache, named after the model."""
    from ..backends.export_cache import cache_dir

    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(spec or "default")).stem)[:40]
    return cache_dir() / "int8" / f"{stem or 'model'}.int8.onnx"


def onnx_model_info(predictor: Any) -> Any:
    """The views' ModelInfo for an ONNX predictor (no torch module: no cost table, blocks from the
    gate outputs)."""
    from .worker import ModelInfo

    return ModelInfo(
        name=Path(predictor.path).name,
        provenance=predictor.provenance,
        num_classes=len(predictor.class_names),
        blocks=[(b, c or 0) for b, c in predictor.gate_blocks],
        device=predictor.device,
        half=False,
        cost_table="(not computed for ONNX models)",  # non-empty: the worker does not describe it
        notes=[f"input {predictor.preprocess.crop_size}x{predictor.preprocess.crop_size}", "INT8, checked"],
        preprocess=predictor.preprocess,
        class_names=list(predictor.class_names),
    )


class _Bridge(QObject):
    """Signals from the check's thread to the dialog (queued onto the UI thread)."""

    progress = Signal(float, str)
    done = Signal(object)
    failed = Signal(str)


class OptimizeDialog(QDialog):
    """Setup page (images, held-out share, threshold) -> running page -> result page."""

    def __init__(
        self,
        spec: str | None,
        *,
        model_code: str | None = None,
        last_frame: Callable[[], Any] = lambda: None,
        install: Callable[[Any, Any], None] | None = None,
        start_dir: str = "",
        out_path: Path | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Optimize for this CPU (INT8)")
        self.spec, self.model_code = spec, model_code
        self.last_frame, self.install = last_frame, install
        self.out_path = out_path or int8_out_path(spec)
        self.report: Any = None
        self.installed: Any = None  # the OnnxPredictor handed to the worker
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._frames: list[Any] = []
        self._bridge = _Bridge()
        self._bridge.progress.connect(self._on_progress)
        self._bridge.done.connect(self._on_done)
        self._bridge.failed.connect(self._on_failed)
        self.pages = QStackedWidget()
        self.pages.addWidget(self._setup_page(start_dir))
        self.pages.addWidget(self._running_page())
        self.pages.addWidget(self._result_page())
        lay = QVBoxLayout(self)
        lay.addWidget(self.pages)
        self.resize(560, 300)

    # ------------------------------------------------------------------ pages
    def _setup_page(self, start_dir: str) -> QWidget:
        page = QWidget()
        form = QFormLayout(page)
        model = Path(self.spec).name if self.spec else "the default VGG16-SE"
        form.addRow(QLabel(f"Quantize <b>{model}</b> to INT8 and check it against fp32 before using it."))
        self.use_frames = QRadioButton("Frames of the current source")
        self.use_folder = QRadioButton("Images in a folder:")
        group = QButtonGroup(page)
        group.addButton(self.use_frames)
        group.addButton(self.use_folder)
        self.use_frames.setChecked(True)
        frames_row = QHBoxLayout()
        self.n_frames = QSpinBox()
        self.n_frames.setRange(4, 1000)
        self.n_frames.setValue(40)
        self.seconds = QDoubleSpinBox()
        self.seconds.setRange(0.5, 120.0)
        self.seconds.setDecimals(1)
        self.seconds.setValue(8.0)
        self.seconds.setSuffix(" s")
        frames_row.addWidget(self.use_frames)
        frames_row.addWidget(QLabel("up to"))
        frames_row.addWidget(self.n_frames)
        frames_row.addWidget(QLabel("frames over"))
        frames_row.addWidget(self.seconds)
        form.addRow(frames_row)
        folder_row = QHBoxLayout()
        self.folder = QLineEdit(start_dir)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        self.folder.textEdited.connect(lambda _t: self.use_folder.setChecked(True))
        folder_row.addWidget(self.use_folder)
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(browse)
        form.addRow(folder_row)
        self.held_out = QDoubleSpinBox()
        self.held_out.setRange(5.0, 90.0)
        self.held_out.setDecimals(0)
        self.held_out.setValue(25.0)
        self.held_out.setSuffix(" % held out (never calibrated on)")
        form.addRow("Check on:", self.held_out)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 100.0)
        self.threshold.setDecimals(1)
        self.threshold.setValue(99.0)
        self.threshold.setSuffix(" % top-1 agreement at least")
        form.addRow("Accept when:", self.threshold)
        self.gate_limit = QDoubleSpinBox()
        self.gate_limit.setRange(0.0, 1.0)
        self.gate_limit.setDecimals(3)
        self.gate_limit.setSingleStep(0.005)
        self.gate_limit.setValue(0.01)  # issue #14's bar; 1.0 switches it off (gates lie in 0..1)
        self.gate_limit.setSuffix(" largest SE gate difference at most")
        form.addRow("and:", self.gate_limit)
        self.setup_message = QLabel("")
        self.setup_message.setWordWrap(True)
        self.setup_message.setStyleSheet("color: #d9534f")
        form.addRow(self.setup_message)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.start_button = QPushButton("Calibrate and check")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        close = QPushButton("Close")
        close.clicked.connect(self.reject)
        buttons.addWidget(self.start_button)
        buttons.addWidget(close)
        form.addRow(buttons)
        return page

    def _running_page(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        lay.addWidget(self.status)
        lay.addWidget(self.bar)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.cancel_button)
        lay.addLayout(row)
        lay.addStretch(1)
        return page

    def _result_page(self) -> QWidget:
        page = QWidget()
        lay = QVBoxLayout(page)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        form = QFormLayout()
        self.agreement_label = QLabel("")
        self.gate_label = QLabel("")
        self.speed_label = QLabel("")
        self.images_label = QLabel("")
        form.addRow("Top-1 agreement with fp32:", self.agreement_label)
        form.addRow("Largest SE gate difference:", self.gate_label)
        form.addRow("Speed-up on this CPU:", self.speed_label)
        form.addRow("Images:", self.images_label)
        self.detail = QLabel("")
        self.detail.setWordWrap(True)
        form.addRow("Settings:", self.detail)
        row = QHBoxLayout()
        row.addStretch(1)
        self.use_button = QPushButton("Use INT8")
        self.use_button.clicked.connect(self.use_int8)
        self.keep_button = QPushButton("Keep fp32")
        self.keep_button.clicked.connect(self.reject)
        row.addWidget(self.use_button)
        row.addWidget(self.keep_button)
        lay.addWidget(self.verdict)
        lay.addLayout(form)
        lay.addStretch(1)
        lay.addLayout(row)
        return page

    # ------------------------------------------------------------------ actions
    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Images to calibrate and check on", self.folder.text())
        if d:
            self.folder.setText(d)
            self.use_folder.setChecked(True)

    def _folder_images(self) -> list[Path] | None:
        from ..images import is_image_path

        d = Path(self.folder.text()).expanduser()
        if not d.is_dir():
            self.setup_message.setText(f"{d}: not a folder")
            return None
        images = sorted(p for p in d.iterdir() if p.is_file() and is_image_path(p))
        return images

    def start(self) -> None:
        """Validate, then gather frames (UI timer) or read the folder, then run the check."""
        self.setup_message.setText("")
        self._cancel.clear()
        if self.use_folder.isChecked():
            images = self._folder_images()
            if images is None:
                return
            if len(images) < 2:
                self.setup_message.setText("the folder needs at least two images (calibration + held out)")
                return
            self.pages.setCurrentIndex(1)
            self._run(images, contiguous=False)
            return
        self.pages.setCurrentIndex(1)
        self._frames, self._seen = [], None
        self._collect_until = time.monotonic() + self.seconds.value()
        self.status.setText("collecting frames of the current source…")
        self._timer = QTimer(self)
        self._timer.setInterval(50)
        self._timer.timeout.connect(self._collect)
        self._timer.start()

    def _collect(self) -> None:
        frame = self.last_frame()
        if frame is not None and (frame.index, frame.timestamp) != self._seen:
            self._seen = (frame.index, frame.timestamp)
            self._frames.append(frame.rgb.copy())
        n, want = len(self._frames), self.n_frames.value()
        left = max(0.0, self._collect_until - time.monotonic())
        self.bar.setValue(int(10 * min(1.0, n / want)))
        self.status.setText(f"collecting frames of the current source: {n} of {want} ({left:.0f} s left)")
        if self._cancel.is_set():
            self._timer.stop()
            self.pages.setCurrentIndex(0)
            return
        if n >= want or left <= 0:
            self._timer.stop()
            if n < 2:
                self.pages.setCurrentIndex(0)
                self.setup_message.setText(
                    f"the source gave {n} distinct frame(s) in {self.seconds.value():g} s; play a video or "
                    "camera, or choose a folder of images"
                )
                return
            self._run(list(self._frames), contiguous=True)

    def _run(self, images: list[Any], *, contiguous: bool) -> None:
        from ..deploy.int8_check import calibrate_and_check

        held, threshold = self.held_out.value() / 100, self.threshold.value() / 100
        gate_limit = self.gate_limit.value() if self.gate_limit.value() < 1.0 else None
        model: Any = self.spec

        def work() -> None:
            from ..deploy.int8_check import Int8Cancelled

            try:
                src = model if self.model_code is None else self._export_code_model()
                report = calibrate_and_check(
                    src if src is not None else self._export_default(),
                    images,
                    self.out_path,
                    held_out_fraction=held,
                    min_agreement=threshold,
                    max_gate_diff=gate_limit,
                    contiguous=contiguous,
                    progress=lambda f, t: self._bridge.progress.emit(f, t),
                    cancelled=self._cancel.is_set,
                )
            except Int8Cancelled:
                self._bridge.failed.emit("")
            except Exception as exc:  # noqa: BLE001 - any failure is one line in the dialog
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self._bridge.failed.emit(text[:300])
            else:
                self._bridge.done.emit(report)

        self._thread = threading.Thread(target=work, name="int8-check", daemon=True)
        self._thread.start()

    def _export_default(self) -> str:
        """The default model (no spec) exported with its gates to a temporary folder."""
        import tempfile

        from ..deploy.onnx_export import export_spec

        out = Path(tempfile.mkdtemp(prefix="sevgg-default.")) / "default.onnx"
        export_spec(None, out, with_excitations=True, check=False)
        return str(out)

    def _export_code_model(self) -> str:
        import tempfile

        from ..deploy.onnx_export import export_spec

        out = Path(tempfile.mkdtemp(prefix="sevgg-code.")) / "model.onnx"
        export_spec(self.spec, out, with_excitations=True, check=False, model_code=self.model_code)
        return str(out)

    def cancel(self) -> None:
        """Stop at the next step; nothing is installed and no INT8 file is left."""
        self._cancel.set()
        self.status.setText("cancelling…")
        self.cancel_button.setEnabled(False)

    def _on_progress(self, fraction: float, text: str) -> None:
        self.bar.setValue(10 + int(90 * fraction))
        self.status.setText(text)

    def _on_failed(self, message: str) -> None:
        self.cancel_button.setEnabled(True)
        self.pages.setCurrentIndex(0)
        self.setup_message.setText(message or "cancelled: nothing changed")

    def _on_done(self, report: Any) -> None:
        self.report = report
        self.cancel_button.setEnabled(True)
        ok = report.installed is not None
        self.verdict.setText(
            "<b>INT8 passed the check.</b> Nothing has changed yet: “Use INT8” switches the live model "
            "to the INT8 file."
            if ok
            else f"<b>INT8 refused</b>: {report.refused}. No INT8 file was installed."
        )
        self.verdict.setStyleSheet("" if ok else "color: #d9534f")
        self.agreement_label.setText(
            f"{report.agreement:.1%} ({report.agree} of {report.held_out_images} held-out images; "
            f"required {report.min_agreement:.1%})"
        )
        gate = report.max_gate_diff
        self.gate_label.setText(
            "no gate outputs"
            if gate is None
            else f"{gate:.3g} (mean {report.mean_gate_diff:.2g}; gates lie in 0–1)"
        )
        self.speed_label.setText(
            f"{report.speedup:.2f}× (fp32 {report.fp32_ms:.1f} ms, INT8 {report.int8_ms:.1f} ms per image)"
        )
        self.images_label.setText(f"{report.calib_images} for calibration, {report.held_out_images} held out")
        self.detail.setText(report.config)
        self.use_button.setEnabled(ok)
        self.use_button.setToolTip("" if ok else report.line())
        self.pages.setCurrentIndex(2)

    def use_int8(self) -> None:
        """Open the accepted INT8 file in onnxruntime and hand it to the worker."""
        from ..backends.onnx_runtime import OnnxPredictor

        if self.report is None or self.report.installed is None:
            return
        predictor = OnnxPredictor(self.report.installed)
        if self.install is not None:
            self.install(predictor, onnx_model_info(predictor))
        self.installed = predictor
        self.accept()

    def reject(self) -> None:
        self._cancel.set()
        super().reject()
