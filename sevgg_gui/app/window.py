"""The main window: wires source -> worker -> views, menus, shortcuts, drag and drop, settings.

The UI thread only moves data: frames go into a latest-wins slot read by the inference worker,
Results come back by queued signal and are drawn at most once per event-loop turn (coalesced), so
a slow model drops frames instead of freezing the window.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication, QImage, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QProgressBar,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..bundled import SAMPLES
from ..model_specs import is_model_folder
from ..pipeline import LatestSlot, SourcePump
from ..sources import Frame, FrameSource, SourceError, is_camera_spec, open_source
from . import help_dialogs
from .backend_menu import BackendMenu
from .compare_mode import CompareMode
from .evidence_mode import EvidenceMode
from .widgets.banner import Banner
from .widgets.channel_view import ChannelView
from .widgets.charts_panel import ChartOptions, ChartsPanel
from .widgets.input_view import InputView
from .widgets.model_panel import ModelPanel
from .widgets.predictions import PredictionsView
from .widgets.thumbnails import FeatureThumbnails
from .worker import ModelInfo, WorkerThread

CHECKPOINT_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin", ".safetensors", ".onnx"}  # .onnx: compare's B


class MainWindow(QMainWindow):
    resultDrawn = Signal(int)  # number of results drawn so far (tests, headless mode)
    sourceError = Signal(str)  # from the pump thread, delivered queued
    sourceEnded = Signal()
    sourceFailed = Signal(str)  # a source could not be opened (also cameras opened in the background)
    _sourceOpened = Signal(int, object)  # (request number, (spec, options, source or error line))
    _camerasListed = Signal(object)  # camera indices found by the background probe

    def __init__(
        self,
        settings: QSettings | None = None,
        *,
        checkpoint: str | None = None,
        device: str | None = None,
        load_model: bool = True,
        model_code: str | None = None,
        backend: str | None = None,  # --backend: torch | onnxruntime | openvino (else the settings')
    ) -> None:
        super().__init__()
        self.settings = settings or QSettings("sevgg_gui", "sevgg-gui")
        self.setWindowTitle("sevgg-gui — Squeeze-and-Excitation attention, live")
        self.setAcceptDrops(True)
        self.frames: LatestSlot[Frame] = LatestSlot()
        self.pump: SourcePump | None = None
        self.source_spec: str | None = None
        self._source_options: dict = {}
        self.model_info: ModelInfo | None = None
        self.checkpoint = checkpoint
        self._requested_checkpoint = checkpoint
        self.model_code = self._requested_model_code = model_code  # --model-code FILE.py:FUNCTION
        self.offer_download = False  # main(): fetch ImageNet VGG16 after the first model load if missing
        self.device = device or str(self.settings.value("device", "auto"))
        self.half = self.settings.value("half", False, type=bool)
        self.selected: tuple[str, int] | None = None
        self.last_result = None
        self.drawn = 0  # results drawn, re-runs included
        self.frames_drawn = 0  # new frames drawn (re-runs after an intervention excluded)
        self.recording: list | None = None
        self._pending = None
        self._draw_scheduled = False
        self._fps = 0.0
        self._last_draw_t: float | None = None
        self._draw_ms = 0.0
        self._interventions: list[str] = []
        self._spatial_pick: str | None = None
        self.pending_profiles: str | None = None

        self._build_views()
        self._build_menus()
        self._build_status()
        self._restore_settings()

        self.worker_thread = WorkerThread(self.frames)
        # Signals emitted on other threads go to bound methods of this (main-thread) window, queued.
        queued = Qt.ConnectionType.QueuedConnection
        w = self.worker_thread.worker
        w.resultReady.connect(self._on_result, queued)
        w.modelLoaded.connect(self._on_model_loaded, queued)
        w.modelDescribed.connect(self._on_model_described, queued)
        w.modelFailed.connect(self._on_model_failed, queued)
        w.gatesJudged.connect(self.charts.on_gates_judged, queued)
        w.gatesJudged.connect(self.model_panel.on_gates_judged, queued)
        w.inferenceFailed.connect(self._on_inference_failed, queued)
        self.sourceError.connect(self._on_source_error, queued)
        self._sourceOpened.connect(self._on_source_opened, queued)
        self._camerasListed.connect(self._on_cameras_listed, queued)
        self._open_request = 0  # the newest open request; late camera opens of older ones are dropped
        self.sourceEnded.connect(self._on_source_ended, queued)
        self.evidence = EvidenceMode(self)  # class evidence: its own tab, overlay and chart row
        self.compare = CompareMode(self)  # Model → Compare with…: model B beside this one
        self.backend_menu = BackendMenu(self, backend)  # Model → Backend: torch | onnxruntime | openvino
        if load_model:
            self.load_model(checkpoint, model_code=model_code)

    # ================================================================== layout
    def _build_views(self) -> None:
        self.input_view = InputView()
        self.predictions = PredictionsView()
        self.charts = ChartsPanel(options=self._load_chart_options())
        self.thumbs = FeatureThumbnails()
        self.model_panel = ModelPanel()

        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(4, 4, 4, 4)
        self.source_label = QLabel("No source")
        self.source_label.setStyleSheet("color:#aaaaaa")
        ll.addWidget(self.source_label)
        ll.addWidget(self.input_view, 3)
        title = QLabel("Top-5 predictions")
        title.setStyleSheet("font-weight:bold")
        ll.addWidget(title)
        ll.addWidget(self.predictions)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.model_panel, "Model")
        self.channel_view = ChannelView()
        self.tabs.addTab(self.channel_view, "Channel")
        ll.addWidget(self.tabs, 2)

        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.charts)
        right.addWidget(self.thumbs)
        right.setStretchFactor(0, 4)
        right.setStretchFactor(1, 1)
        right.setSizes([560, 160])

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setSizes([470, 800])
        self.splitter = split

        self.model_banner = Banner("#ffcf6b")
        self.error_banner = Banner("#ff8a80")
        self._error_timer = QTimer(self, singleShot=True, interval=10_000, timeout=self.error_banner.hide)

        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(4, 4, 4, 0)
        cl.setSpacing(4)
        cl.addWidget(self.model_banner)
        cl.addWidget(self.error_banner)
        cl.addWidget(split, 1)
        self.setCentralWidget(central)

        self.charts.channelSelected.connect(self.select_channel)
        self.charts.interventionRequested.connect(self.request_intervention)
        self.charts.blockSelected.connect(self._on_block_selected)
        self.charts.optionsChanged.connect(self._save_chart_options)
        self.charts.hovered.connect(lambda t: self.statusBar().showMessage(t, 3000))

    def _build_status(self) -> None:
        sb = self.statusBar()
        self.hud_device = QLabel("device: —")
        self.hud_fps = QLabel("— fps")
        self.hud_latency = QLabel("")
        self.hud_dropped = QLabel("dropped 0")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(180)
        self.progress.setVisible(False)
        for wdg in (self.progress, self.hud_device, self.hud_fps, self.hud_latency, self.hud_dropped):
            sb.addPermanentWidget(wdg)

    def _build_menus(self) -> None:
        mb = self.menuBar()

        def act(menu, text, slot, shortcut=None, checkable=False, tip=None) -> QAction:
            a = QAction(text, self)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
            a.setCheckable(checkable)
            if tip:
                a.setStatusTip(tip)
            a.triggered.connect(slot)
            menu.addAction(a)
            self.addAction(a)  # shortcuts work in full screen and without the menu bar
            return a

        f = mb.addMenu("&File")
        act(f, "Open image or video…", self.open_file_dialog, "O")
        act(f, "Open folder…", self.open_folder_dialog, "Ctrl+Shift+O")
        act(f, "Start camera", self.open_camera, "C")
        act(f, "Choose camera and resolution…", self.choose_camera)
        act(f, "Paste image", self.paste_image, "Ctrl+V")
        act(f, "Open bundled samples", lambda: self.open_source(str(SAMPLES)))
        f.addSeparator()
        act(f, "Open checkpoint…", self.open_checkpoint_dialog, "Ctrl+K")
        f.addSeparator()
        act(f, "Load class profiles (sevgg analyze NPZ)…", self.load_profiles_dialog)
        act(f, "Save excitations (CSV / NPZ)…", self.save_excitations_dialog, "Ctrl+E")
        self.record_action = act(f, "Record session", self.toggle_recording, "R", checkable=True)
        act(f, "Save screenshot…", self.save_screenshot_dialog, "S")
        f.addSeparator()
        act(f, "Quit", self.close, "Ctrl+Q")

        p = mb.addMenu("&Playback")
        self.pause_action = act(p, "Pause", self.toggle_pause, "Space", checkable=True)
        act(p, "Previous frame / image", lambda: self.step(-1), "Left")
        act(p, "Next frame / image", lambda: self.step(+1), "Right")

        v = mb.addMenu("&View")
        for i in range(1, 10):
            a = QAction(f"Select block {i}", self)
            a.setShortcut(QKeySequence(str(i)))
            a.triggered.connect(lambda _=False, k=i: self.select_block_index(k - 1))
            self.addAction(a)
            if i <= 5:
                v.addAction(a)
        act(v, "Clear channel selection", lambda: self.select_channel("", -1), "Esc")
        v.addSeparator()
        act(v, "Full screen", self.toggle_fullscreen, "F", checkable=True)

        m = mb.addMenu("&Model")
        from ..model_specs import MODEL_CHOICES

        pick = m.addMenu("Choose model")
        for label, spec in MODEL_CHOICES:
            a = QAction(label, self)
            a.triggered.connect(lambda _=False, sp=spec: self.load_model(sp))
            pick.addAction(a)
        act(m, "Open checkpoint…", self.open_checkpoint_dialog)
        from .model_menu import add_origin_actions

        add_origin_actions(self, m)
        from .optimize_dialog import add_optimize_action

        add_optimize_action(self, m)
        m.addSeparator()
        group = QActionGroup(self)
        self.device_actions = {}
        for dev in ("auto", "cpu", "cuda"):
            a = QAction(
                {"auto": "Device: automatic", "cpu": "Device: CPU", "cuda": "Device: CUDA GPU"}[dev], self
            )
            a.setCheckable(True)
            a.setEnabled(dev != "cuda")  # CUDA: enabled once torch has loaded (see _on_model_loaded)
            a.setChecked(dev == self.device)
            a.triggered.connect(lambda _=False, d=dev: self.set_device(d))
            group.addAction(a)
            m.addAction(a)
            self.device_actions[dev] = a
        self.half_action = act(m, "Half precision (GPU)", self.toggle_half, checkable=True)
        self.half_action.setChecked(self.half)
        m.addSeparator()
        act(m, "Reset interventions", lambda: self.request_intervention("", -1, "reset"))

        h = mb.addMenu("&Help")
        act(h, "Keyboard shortcuts", self.show_shortcuts, "?")
        act(h, "About", self.show_about)

    # ================================================================== settings
    def _load_chart_options(self) -> ChartOptions:
        s = self.settings
        return ChartOptions(
            mode=str(s.value("charts/mode", "gates")),
            sort=s.value("charts/sort", False, type=bool),
            show_mean=s.value("charts/show_mean", True, type=bool),
        )

    def _save_chart_options(self) -> None:
        o = self.charts.options
        self.settings.setValue("charts/mode", self.charts.preferred_mode)  # not an automatic switch
        self.settings.setValue("charts/sort", o.sort)
        self.settings.setValue("charts/show_mean", o.show_mean)

    def _restore_settings(self) -> None:
        geo = self.settings.value("geometry")
        if isinstance(geo, QByteArray | bytes) and geo:
            self.restoreGeometry(geo)
        else:
            self.resize(1280, 800)

    def save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("device", self.device)
        self.settings.setValue("half", self.half)
        if self.source_spec and self.source_spec != "clipboard":
            self.settings.setValue("last_source", self.source_spec)
        self._save_chart_options()
        self.settings.sync()

    # ================================================================== model
    def load_model(
        self, checkpoint: str | None, allow_download: bool = False, model_code: str | None = None
    ) -> None:
        what = model_code.replace("\\", "/").rsplit("/", 1)[-1] if model_code else None
        what = what or (Path(checkpoint).name if checkpoint else None)
        self.statusBar().showMessage(f"Loading {what}…" if what else "Loading model…")
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self._requested_checkpoint = checkpoint
        self._requested_model_code = model_code
        self.worker_thread.worker.load_model(checkpoint, self.device, self.half, allow_download, model_code)

    @Slot(object)
    def _on_model_described(self, info: ModelInfo) -> None:
        """The cost table arrived after the first frame; ignore it if another model came since."""
        if self.model_info is not None and self.model_info.provenance == info.provenance:
            self.model_info = info
            self.model_panel.set_info(info)

    @Slot(object)
    def _on_model_loaded(self, info: ModelInfo) -> None:
        self.progress.setVisible(False)
        self.model_info = info
        self.checkpoint = self._requested_checkpoint  # the spec to reload on a device change
        self.model_code = self._requested_model_code
        self.model_panel.set_info(info)
        self.charts.set_blocks(
            info.blocks,
            info.untrained_gates,
            spatial_only=not info.blocks and bool(info.spatial_blocks),
            key=info.provenance,
        )
        self._spatial_pick = None
        self.selected = None
        self._interventions.clear()
        self.charts.set_interventions("")
        self.hud_device.setText(f"device: {info.device}{' fp16' if info.half else ''}")
        import torch  # loaded by the worker by now: this costs nothing

        self.device_actions["cuda"].setEnabled(torch.cuda.is_available())
        if self.offer_download and self.checkpoint is None:
            self.offer_download = False
            from ..zoo import imagenet_vgg16_cached

            if not imagenet_vgg16_cached():
                self.download_weights()  # first use: fetch ImageNet VGG16 in the background
        if info.warning:
            from ..origins.loaded import RANDOM_WARNING  # torch is loaded by now

            vgg = info.warning == RANDOM_WARNING  # only the VGG16-SE warning is answered by the download
            self.model_banner.show_text(
                info.warning,
                ("Open checkpoint…", self.open_checkpoint_dialog),
                *([("Download ImageNet VGG16", self.download_weights)] if vgg else []),
            )
        else:
            self.model_banner.hide()
        self.statusBar().showMessage(f"Model ready: {info.provenance}", 5000)
        if self.pending_profiles:
            path, self.pending_profiles = self.pending_profiles, None
            self.load_profiles(path)

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self.progress.setVisible(False)
        kept = " — keeping the current model" if self.model_info else ""
        self.show_error(f"Could not load the model: {message}{kept}")

    def download_weights(self) -> None:
        """Fetch ImageNet VGG16 in the background (progress in the status bar), then transfer it."""
        from ..downloads import vgg16_imagenet_target
        from .downloader import Downloader

        if getattr(self, "downloader", None) is not None:
            return
        url, dest = vgg16_imagenet_target()
        self.downloader = Downloader(url, str(dest), self)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        self.progress.setFormat("ImageNet VGG16 %p%")
        self.statusBar().showMessage("Downloading ImageNet VGG16 weights…")
        queued = Qt.ConnectionType.QueuedConnection
        self.downloader.progress.connect(self._on_download_progress, queued)
        self.downloader.finished.connect(self._on_download_done, queued)
        self.downloader.failed.connect(self._on_download_failed, queued)
        self.downloader.start()

    @Slot(int, int)
    def _on_download_progress(self, done: int, total: int) -> None:
        if total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))

    @Slot(str)
    def _on_download_done(self, _path: str) -> None:
        self.downloader = None
        self.load_model(None)

    @Slot(str)
    def _on_download_failed(self, message: str) -> None:
        self.downloader = None
        self.progress.setVisible(False)
        self.model_banner.show_text(
            f"{message}. Random weights: predictions are meaningless until you open a trained checkpoint.",
            ("Open checkpoint…", self.open_checkpoint_dialog),
            ("Retry download", self.download_weights),
        )

    def set_device(self, device: str) -> None:
        self.device = device
        self.load_model(self.checkpoint, model_code=self.model_code)

    def toggle_half(self, on: bool) -> None:
        self.half = on
        self.load_model(self.checkpoint, model_code=self.model_code)

    # ================================================================== sources
    def open_source(self, spec: str, **options) -> bool:
        """Open a camera/video/image/folder; on failure show one line and keep the current source.

        Cameras open on a background thread (``cv2.VideoCapture`` can block for seconds): then the
        return value only says the request was made, and a failure arrives as a banner later."""
        self._open_request += 1
        if is_camera_spec(spec):
            self._open_in_background(self._open_request, spec, options)
            return True
        try:
            source = open_source(spec, **options)
        except SourceError as exc:
            self.show_error(str(exc))
            self.sourceFailed.emit(str(exc))
            return False
        self._install_source(source, spec, options)
        return True

    def _open_in_background(self, request: int, spec: str, options: dict) -> None:
        self.statusBar().showMessage(f"Opening {spec}…")

        def work() -> None:
            try:
                result: FrameSource | str = open_source(spec, **options)
            except SourceError as exc:
                result = str(exc)
            except Exception as exc:  # a driver error must not kill the thread silently
                result = f"{spec}: {type(exc).__name__}: {exc}".splitlines()[0]
            try:
                self._sourceOpened.emit(request, (spec, options, result))
            except RuntimeError:  # the window is gone
                if isinstance(result, FrameSource):
                    result.close()

        threading.Thread(target=work, name="open-source", daemon=True).start()

    @Slot(int, object)
    def _on_source_opened(self, request: int, payload: tuple) -> None:
        spec, options, result = payload
        if request != self._open_request:  # something else was opened meanwhile
            if isinstance(result, FrameSource):
                result.close()
            return
        if isinstance(result, str):
            self.statusBar().clearMessage()
            self.error_banner.show_text(result, ("Retry camera", lambda: self.open_source(spec, **options)))
            self._error_timer.stop()
            self.sourceFailed.emit(result)
            return
        self.statusBar().showMessage(f"Opened {result.name}", 3000)
        self._install_source(result, spec, options)

    def _install_source(self, source: FrameSource, spec: str, options: dict) -> None:
        self._stop_pump()
        self.source_spec = spec
        self._source_options = options
        self.pause_action.setChecked(False)
        self.pump = SourcePump(
            source,
            self.frames,
            realtime=True,
            on_error=self.sourceError.emit,
            on_end=self.sourceEnded.emit,
        )
        self.pump.start()
        if not self.pump.streaming:
            self.pump.request_next()  # images and folders deliver on request
        self.source_label.setText(f"Source: {source.name}")
        self.error_banner.hide()
        if not source.is_live:
            self.settings.setValue("last_source", spec)

    def _stop_pump(self) -> None:
        if self.pump is not None:
            self.pump.stop()
            self.pump = None

    @Slot(str)
    def _on_source_error(self, message: str) -> None:
        if self.source_spec and self.source_spec.startswith("camera"):
            spec, options = self.source_spec, self._source_options
            self.error_banner.show_text(message, ("Retry camera", lambda: self.open_source(spec, **options)))
            self._error_timer.stop()
        else:
            self.show_error(message)

    @Slot()
    def _on_source_ended(self) -> None:
        self.statusBar().showMessage("End of source", 4000)

    @Slot(str)
    def _on_inference_failed(self, message: str) -> None:
        self.show_error(f"Inference failed: {message}")

    def open_camera(self) -> None:
        s = self.settings
        index = s.value("camera/index", 0, type=int)
        w, h = s.value("camera/width", 0, type=int), s.value("camera/height", 0, type=int)
        self.open_source(f"camera:{index}", width=w or None, height=h or None)

    def choose_camera(self) -> None:
        """Probe the cameras on a background thread (seconds per index on some drivers), then ask."""
        from ..sources import list_cameras

        self.statusBar().showMessage("Looking for cameras…")

        def work() -> None:
            try:
                found: list[int] = list_cameras()
            except Exception:
                found = []
            with contextlib.suppress(RuntimeError):  # the window is gone
                self._camerasListed.emit(found)

        threading.Thread(target=work, name="list-cameras", daemon=True).start()

    @Slot(object)
    def _on_cameras_listed(self, cameras: list[int]) -> None:
        from .camera_dialog import CameraDialog

        self.statusBar().clearMessage()
        dialog = CameraDialog(self.settings, cameras, self)
        dialog.accepted.connect(self.open_camera)
        dialog.open()  # window-modal, without a nested event loop
        self.camera_dialog = dialog

    def push_frame(self, rgb: np.ndarray, origin: str) -> None:
        """Classify one still image that did not come from a source (clipboard)."""
        self._open_request += 1  # a camera still opening must not replace this image
        self._stop_pump()
        self.source_spec = origin
        self.frames.put(Frame(rgb=rgb, index=0, timestamp=time.perf_counter(), origin=origin, capture_ms=0.0))
        self.source_label.setText(f"Source: {origin}")

    def paste_image(self) -> None:
        img: QImage = QGuiApplication.clipboard().image()
        if img.isNull():
            self.show_error("The clipboard holds no image")
            return
        self.push_frame(qimage_to_rgb(img), "clipboard")

    def toggle_pause(self, paused: bool) -> None:
        if self.pump is None:
            return
        if paused:
            self.pump.pause()
            self.statusBar().showMessage("Paused — ← / → step", 3000)
        else:
            self.pump.resume()

    def step(self, delta: int) -> None:
        if self.pump is not None:
            if self.pump.source.is_live:
                self.statusBar().showMessage("A camera cannot step", 2000)
                return
            self.pump.step(delta)

    # ================================================================== results
    @Slot(object)
    def _on_result(self, result) -> None:
        pending = self._pending
        if pending is not None and not pending.meta.get("rerun") and result.meta.get("rerun"):
            # A re-run (block switch, intervention) of the frame whose first result is still waiting
            # to be drawn: draw the newer one, but as that new frame, or it would never be counted
            # (frames_drawn, recordings, running means, headless mode's "N frames drawn").
            result.meta["rerun"] = False
        self._pending = result
        if not self._draw_scheduled:
            self._draw_scheduled = True
            QTimer.singleShot(0, self._draw_pending)

    def _draw_pending(self) -> None:
        self._draw_scheduled = False
        result, self._pending = self._pending, None
        if result is not None:
            self.draw_result(result)

    def draw_result(self, result) -> None:
        t0 = time.perf_counter()
        self.last_result = result
        meta = result.meta
        if result.image is not None:
            self.input_view.set_frame(result.image, meta.get("crop_box"))
        self.predictions.set_predictions([(p.label, p.prob) for p in result.topk])
        self.charts.update_result(result)
        self.compare.draw(result)
        self._update_maps(result)
        if self.recording is not None and not meta.get("rerun"):
            self.recording.append(result)
            self.record_action.setText(f"Stop recording ({len(self.recording)} frames)")
        self._draw_ms = (time.perf_counter() - t0) * 1e3
        if not meta.get("rerun"):
            self.frames_drawn += 1
            self._update_hud(result)
        self.drawn += 1
        self.resultDrawn.emit(self.drawn)

    def _update_hud(self, result) -> None:
        meta, t = result.meta, result.timings
        now = time.perf_counter()
        if self._last_draw_t is not None:
            dt = max(now - self._last_draw_t, 1e-6)
            self._fps = 1.0 / dt if self._fps == 0 else 0.9 * self._fps + 0.1 / dt
        self._last_draw_t = now
        latency = (now - meta["captured_at"]) * 1e3 if "captured_at" in meta else float("nan")
        self.last_latency_ms = latency
        self.hud_fps.setText(f"{self._fps:.1f} fps" if self._fps else "— fps")
        self.hud_latency.setText(
            f"capture {meta.get('capture_ms', 0):.0f} · pre {t.get('preprocess', 0):.0f} · "
            f"model {t.get('model', 0):.0f} · draw {self._draw_ms:.0f} ms · end-to-end {latency:.0f} ms"
        )
        self.hud_dropped.setText(f"dropped {meta.get('dropped', 0)}")

    def _update_maps(self, result) -> None:
        """Thumbnails of the selected block; overlay: the selected channel, else a spatial attention map."""
        block = self.charts.selected_block
        maps = result.feature_maps.get(block) if block else None
        if block is not None:
            self.thumbs.update_maps(
                self._block_title(block), result.excitations.get(block, np.zeros(0)), maps
            )
        if self.selected and self.selected[0] == block and maps is not None:
            ch = self.selected[1]
            self.input_view.set_overlay(maps[1][ch])
            gate = float(result.excitations[block][ch]) if block in result.excitations else float("nan")
            self.channel_view.show_channel(
                f"{self._short(block)} channel {ch}", maps[0][ch], maps[1][ch], gate
            )
            return
        spatial = self._spatial_block(result)
        self.input_view.set_overlay(result.spatial_maps[spatial] if spatial else None)

    def _spatial_block(self, result) -> str | None:
        """The block whose spatial attention map to overlay: the selected one if it has a map, else the last."""
        if not result.spatial_maps:
            return None
        if self.charts.selected_block in result.spatial_maps:
            return self.charts.selected_block
        if self._spatial_pick in result.spatial_maps:
            return self._spatial_pick
        return next(reversed(result.spatial_maps))

    def _block_title(self, block: str) -> str:
        """'SE2 (features.10, 128 ch)' for a block name; the name itself if unknown."""
        channels = dict(self.model_info.blocks).get(block) if self.model_info else None
        return f"{self._short(block)} ({block}, {channels} ch)" if channels else block

    # ================================================================== selection / interventions
    def select_block_index(self, i: int) -> None:
        info = self.model_info
        if info and 0 <= i < len(info.blocks):
            self.charts.select_block(info.blocks[i][0])
        elif info and not info.blocks and 0 <= i < len(info.spatial_blocks):
            self._spatial_pick = info.spatial_blocks[i]  # spatial-only models: choose the overlaid map
            if self.last_result is not None:
                self._update_maps(self.last_result)

    def _on_block_selected(self, block: str) -> None:
        self.worker_thread.worker.set_maps_block(block)
        if self.selected and self.selected[0] != block:
            self.selected = None
            self.charts.select_channel("", None)
        self.worker_thread.worker.rerun()

    def select_channel(self, block: str, channel: int) -> None:
        if channel < 0:
            self.selected = None
            self.charts.select_channel("", None)
            self.input_view.set_overlay(None)
            self.channel_view.clear()
            return
        self.selected = (block, channel)
        self.tabs.setCurrentWidget(self.channel_view)
        if self.charts.selected_block != block:
            self.charts.select_block(block)  # records this block's maps, re-runs the frame
        self.charts.select_channel(block, channel)
        if self.last_result is not None:
            self._update_maps(self.last_result)
        self.statusBar().showMessage(f"Selected {self._block_title(block)} channel {channel}", 4000)

    def request_intervention(self, block: str, channel: int, action: str) -> None:
        w = self.worker_thread.worker
        if action == "reset":
            w.clear_interventions()
            self._interventions.clear()
        elif action == "mute":
            w.intervene(block, channel, value=0.0)
            self._interventions.append(f"{self._short(block)}:{channel}=0")
        elif action == "boost":
            w.intervene(block, channel, scale=2.0)
            self._interventions.append(f"{self._short(block)}:{channel}×2")
        text = ", ".join(self._interventions[-4:])
        if len(self._interventions) > 4:
            text = f"… {text}"
        self.charts.set_interventions(f"Interventions: {text}" if self._interventions else "")

    def _short(self, block: str) -> str:
        """'SE2' for the second attention block."""
        names = [n for n, _c in self.model_info.blocks] if self.model_info else []
        return f"SE{names.index(block) + 1}" if block in names else block

    # ================================================================== files
    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open image or video",
            self._last_dir(),
            "Images and videos (*.jpg *.jpeg *.png *.bmp *.gif *.tif *.tiff *.webp *.mp4 *.avi *.mov *.mkv *.webm);;All files (*)",
        )
        if path:
            self._remember_dir(path)
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open folder of images", self._last_dir())
        if path:
            self._remember_dir(path)
            self.open_source(path)

    def open_checkpoint_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open checkpoint",
            self._last_dir(),
            "Checkpoints (*.pth *.pt *.ckpt *.safetensors *.bin);;All files (*)",
        )
        if path:
            self._remember_dir(path)
            self.load_model(path)

    def open_path(self, path: str) -> None:
        """A dropped or chosen path: checkpoints load as models, NPZ files as class profiles,
        anything else opens as a source."""
        suffix = Path(path).suffix.lower()
        if suffix in CHECKPOINT_SUFFIXES or is_model_folder(path):
            self.compare.start(path) if self.compare.wants_drop(path) else self.load_model(path)
        elif suffix == ".npz":
            self.load_profiles(path)
        elif suffix == ".py":  # the user's model code: asks for the function (and weights)
            from .model_menu import open_model_code_file

            open_model_code_file(self, path)
        else:
            self.open_source(path)

    def load_profiles_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load class profiles", self._last_dir(), "sevgg analyze (*.npz)"
        )
        if path:
            self._remember_dir(path)
            self.load_profiles(path)

    def load_profiles(self, path: str) -> bool:
        """Overlay per-class mean gates from `sevgg analyze` on the bars (small NPZ, read here)."""
        from ..analysis_classwise import load_class_profiles

        try:
            profiles = load_class_profiles(path)
        except (OSError, ValueError, KeyError) as exc:
            self.show_error(
                f"{Path(path).name}: not usable as class profiles ({str(exc).splitlines()[0][:120]})"
            )
            return False
        known = {n for n, _c in self.model_info.blocks} if self.model_info else set()
        if known and not known & set(profiles["blocks"]):
            self.show_error(f"{Path(path).name}: its blocks do not match the loaded model's")
            return False
        self.charts.set_profiles(profiles)
        shown = self.charts.profile_box.count() - 1
        self.statusBar().showMessage(
            f"Class profiles: {shown} classes with data, from {Path(path).name}", 5000
        )
        return True

    def _last_dir(self) -> str:
        return str(self.settings.value("last_dir", str(Path.home())))

    def _remember_dir(self, path: str) -> None:
        self.settings.setValue("last_dir", str(Path(path).parent))

    def save_excitations_dialog(self) -> None:
        if self.last_result is None:
            self.show_error("Nothing to save yet: no frame has been classified")
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save excitations", self._last_dir(), "CSV (*.csv);;NumPy (*.npz)"
        )
        if path:
            self.save_excitations(path)

    def save_excitations(self, path: str) -> None:
        from ..export import write_excitations

        if Path(path).suffix not in (".csv", ".npz"):
            path += ".csv"
        r = self.last_result
        try:
            write_excitations(path, [f"{r.meta.get('origin', 'frame')}#{r.meta.get('index', 0)}"], [r])
        except OSError as exc:
            self.show_error(f"Could not save {path}: {exc.strerror or exc}")
            return
        self.statusBar().showMessage(f"Saved {path}", 5000)

    def toggle_recording(self, on: bool) -> None:
        if on:
            self.recording = []
            self.record_action.setText("Stop recording")
            self.statusBar().showMessage("Recording every frame's excitations and predictions…", 4000)
            return
        frames, self.recording = self.recording or [], None
        self.record_action.setText("Record session")
        if not frames:
            self.statusBar().showMessage("Recording stopped: no frames", 4000)
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Save recorded session", self._last_dir(), "NumPy (*.npz)"
        )
        if path:
            self.save_recording(path, frames)

    def save_recording(self, path: str, frames: list) -> None:
        from ..export import write_excitations

        names = [f"{r.meta.get('origin', 'frame')}#{r.meta.get('index', i)}" for i, r in enumerate(frames)]
        try:
            write_excitations(path if path.endswith(".npz") else path + ".npz", names, frames)
        except OSError as exc:
            self.show_error(f"Could not save {path}: {exc.strerror or exc}")
            return
        self.statusBar().showMessage(f"Saved {len(frames)} frames to {path}", 5000)

    def save_screenshot_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save screenshot", self._last_dir(), "PNG (*.png)")
        if path:
            self.save_screenshot(path if path.endswith(".png") else path + ".png")

    def save_screenshot(self, path: str) -> bool:
        ok = self.grab().save(path, "PNG")
        if ok:
            self.statusBar().showMessage(f"Screenshot saved to {path}", 5000)
        else:
            self.show_error(f"Could not save the screenshot to {path}")
        return ok

    # ================================================================== drag and drop
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() or event.mimeData().hasImage():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        md = event.mimeData()
        paths = [u.toLocalFile() for u in md.urls() if u.isLocalFile()]
        if not paths and md.hasImage():
            self.push_frame(qimage_to_rgb(QImage(md.imageData())), "dropped image")
            event.acceptProposedAction()
            return
        ckpts = [p for p in paths if Path(p).suffix.lower() in CHECKPOINT_SUFFIXES or is_model_folder(p)]
        profiles = [p for p in paths if Path(p).suffix.lower() == ".npz"]
        code = [p for p in paths if Path(p).suffix.lower() == ".py"]
        others = [p for p in paths if p not in ckpts and p not in profiles and p not in code]
        if code:  # model code, with a dropped checkpoint as its weights
            from .model_menu import open_model_code_file

            open_model_code_file(self, code[0], weights=ckpts[0] if ckpts else None)
        elif ckpts:
            self.compare.start(ckpts[0]) if self.compare.wants_drop(ckpts[0]) else self.load_model(ckpts[0])
        if profiles:
            self.load_profiles(profiles[0])
        if others:
            self.open_source(others[0])
        if len(paths) > 1 + bool(ckpts and others):
            self.statusBar().showMessage(f"Opened the first of {len(paths)} dropped items", 4000)
        event.acceptProposedAction()

    # ================================================================== misc UI
    def show_error(self, message: str) -> None:
        self.error_banner.show_text(message.splitlines()[0] if message else "Error")
        self._error_timer.start()
        self.statusBar().showMessage(message.splitlines()[0] if message else "", 8000)

    def toggle_fullscreen(self, on: bool) -> None:
        self.showFullScreen() if on else self.showNormal()

    def show_shortcuts(self) -> None:
        self.shortcuts_box = help_dialogs.show_shortcuts(self)

    def show_about(self) -> None:
        self.about_box = help_dialogs.show_about(self)

    def closeEvent(self, event) -> None:  # noqa: N802
        self._open_request += 1  # a camera still opening is closed when it arrives
        self.save_settings()
        self._stop_pump()
        self.worker_thread.close()
        super().closeEvent(event)


def qimage_to_rgb(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    buf = np.frombuffer(img.constBits(), np.uint8, count=bpl * h).reshape(h, bpl)
    return np.ascontiguousarray(buf[:, : w * 3].reshape(h, w, 3))
