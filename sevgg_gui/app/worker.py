"""The inference worker: a QObject living in its own QThread that owns the Predictor.

Frames arrive through a :class:`~sevgg_gui.pipeline.LatestSlot` (a newer frame replaces a pending one,
so the model always works on the freshest frame and stale ones are counted as dropped); commands
(load a model, change the recorded block, interventions) arrive through a thread-safe queue, so the
UI thread never waits for the model and never touches it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal

from ..gate_spread import FLAT_SPREAD, gate_spread
from ..pipeline import LatestSlot
from ..sources import Frame


@dataclass
class ModelInfo:
    """What the views need to know about the loaded model (plain data, crosses threads)."""

    name: str
    provenance: str
    num_classes: int
    blocks: list[tuple[str, int]]  # (block name, channels) of blocks with channel gates
    device: str
    half: bool
    warning: str | None = None
    untrained_gates: bool = False
    checkpoint: str | None = None
    sha256: str | None = None
    cost_table: str = ""
    notes: list[str] = field(default_factory=list)
    preprocess: Any = None
    spatial_blocks: list[str] = field(default_factory=list)  # blocks that produce spatial maps
    # Every attention block (recorded or only listed): name, type, kind, channels, found_by, note...
    attention: list[dict[str, Any]] = field(default_factory=list)
    probe: str = ""  # what the behaviour probe did, when it had modules to look at
    class_names: list[str] = field(default_factory=list)
    backend: str = "torch"  # what runs: torch, onnxruntime or openvino (app/backend_loader.py)
    backend_note: str = ""  # why another backend than the one asked for runs (one line), if so
    interventions: bool = True  # the predictor's recorder can mute/boost channels


class InferenceWorker(QObject):
    resultReady = Signal(object)  # Result, with meta about the frame
    modelLoaded = Signal(object)  # ModelInfo
    modelDescribed = Signal(object)  # ModelInfo with its cost table, computed after the first frame
    modelFailed = Signal(str)  # one line; the previous model stays
    gatesJudged = Signal(bool, float)  # flat (untrained) gates?, their spread; after each model's first frame
    inferenceFailed = Signal(str)  # one line per failed frame
    finished = Signal()

    def __init__(self, frames: LatestSlot[Frame]) -> None:
        super().__init__()
        self.frames = frames
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._running = True
        self.predictor: Any = None
        self.maps_block: str | None = None
        self.last_frame: Frame | None = None
        self.processed = 0
        self.model_slowdown_s = 0.0  # tests: simulate a slow model without touching its math
        self._busy = False
        self._undescribed: ModelInfo | None = None  # cost table still to compute
        self._describers: list[threading.Thread] = []  # cost-table threads (see _describe)
        self._quiet_polls = 0
        self._judge_gates = False  # the next new frame tells whether this model's gates are flat
        # Called as extra(predictor, frame, result) after each prediction, on this thread (app modes such
        # as class evidence); change the list only through submit(), so it never changes mid-frame.
        self.extras: list[Callable[[Any, Frame, Any], None]] = []
        self.compare: Any = None  # compare mode's model B (app/compare_mode.CompareSlot), set by the window
        self.backend = "torch"  # Model → Backend (app/backend_menu.py); set through submit()
        self.load_generation = 0  # the newest load; a runtime load that finishes later is dropped
        self._loaders: list[threading.Thread] = []  # runtime exports/opens (app/backend_loader.py)

    @property
    def idle(self) -> bool:
        """No command queued, no frame pending, nothing running (headless mode waits for this)."""
        return (
            not self._busy
            and self._commands.empty()
            and not self.frames.pending
            and self._undescribed is None
            and not any(t.is_alive() for t in self._describers + self._loaders)
        )

    # ------------------------------------------------------------------ called from any thread
    def submit(self, fn: Callable[[], None]) -> None:
        self._commands.put(fn)  # picked up within one frame-wait timeout (50 ms)

    def stop(self) -> None:
        self._running = False
        self.frames.close()

    def load_model(
        self,
        checkpoint: str | None,
        device: str = "auto",
        half: bool = False,
        allow_download: bool = False,
        model_code: str | None = None,
    ) -> None:
        """Load a model spec (and with ``model_code``, the user's architecture) on the worker thread;
        modelLoaded or, keeping the current model, modelFailed with one line."""
        self.submit(lambda: self._load_model(checkpoint, device, half, allow_download, model_code))

    def set_predictor(self, predictor: Any, info: ModelInfo) -> None:
        """Install a ready-made predictor (tests, or models built elsewhere)."""
        self.submit(lambda: self._install(predictor, info))

    def set_maps_block(self, name: str | None) -> None:
        self.submit(lambda: self._set_maps(name))

    def intervene(
        self, block: str, channel: int, *, value: float | None = None, scale: float | None = None
    ) -> None:
        def run() -> None:
            if self.predictor is not None:
                if not can_intervene(self.predictor):
                    why = getattr(self.predictor.recorder, "why_not", None)
                    raise RuntimeError(
                        why()
                        if callable(why)
                        else f"interventions need the torch backend ({self.backend} runs)"
                    )
                self.predictor.recorder.intervene(block, channel, value=value, scale=scale)
                self._rerun()

        self.submit(run)

    def clear_interventions(self) -> None:
        def run() -> None:
            if self.predictor is not None and can_intervene(self.predictor):  # else: none to clear
                self.predictor.recorder.clear_interventions()
                self._rerun()

        self.submit(run)

    def rerun(self) -> None:
        self.submit(self._rerun)

    # ------------------------------------------------------------------ worker thread
    def run(self) -> None:
        """The loop: drain commands, then classify the newest frame, until stopped."""
        while self._running:
            self._drain_commands()
            frame = self.frames.get(timeout=0.05)
            if frame is None or not self._running:
                self._quiet_polls += 1
                if self._undescribed is not None and self._quiet_polls >= 10:
                    self._describe()  # nothing to classify for 0.5 s
                continue
            self._busy = True
            self._quiet_polls = 0
            self.last_frame = frame
            self._process(frame)
            if self._undescribed is not None:
                self._describe()  # after the first prediction, not before it
            self._busy = False
        self._drain_commands()
        if self.compare is not None:
            self.compare.drop(emit=False)
        if self.predictor is not None:
            self.predictor.close()
        # Hand this object back to the main thread, so it is deleted there like any other wrapper
        # (its own thread is about to end and will run no event loop to delete it).
        app = QCoreApplication.instance()
        if app is not None:
            self.moveToThread(app.thread())
        self.finished.emit()

    def _drain_commands(self) -> None:
        while True:
            try:
                fn = self._commands.get_nowait()
            except queue.Empty:
                return
            self._busy = True
            try:
                fn()
            except Exception as exc:  # a command must never kill the thread
                self.inferenceFailed.emit(_one_line(exc))
            finally:
                self._busy = False

    def _rerun(self) -> None:
        if self.last_frame is not None and self.predictor is not None:
            self._process(self.last_frame, rerun=True)

    def _process(self, frame: Frame, rerun: bool = False) -> None:
        if self.predictor is None:
            return
        try:
            t0 = time.perf_counter()
            if self.model_slowdown_s:
                time.sleep(self.model_slowdown_s)
            result = self.predictor.predict(frame.rgb)
            for extra in self.extras:
                try:
                    extra(self.predictor, frame, result)
                except Exception as exc:  # a mode's failure must not cost the frame its prediction
                    self.inferenceFailed.emit(_one_line(exc))
            result.meta.update(
                origin=frame.origin,
                index=frame.index,
                captured_at=frame.timestamp,
                capture_ms=frame.capture_ms,
                dropped=self.frames.dropped,
                rerun=rerun,
                worker_ms=(time.perf_counter() - t0) * 1e3,
                crop_box=self.predictor.preprocess.crop_box(*frame.rgb.shape[:2]),
                maps_block=self.maps_block,
            )
            if self._judge_gates and not rerun:  # once per model, before its result: never coalesced away
                self._judge_gates = False
                spread = gate_spread(result.excitations)
                self.gatesJudged.emit(spread is not None and spread < FLAT_SPREAD, spread or 0.0)
            if self.compare is not None:
                self.compare.run(frame, result, rerun)  # B on the same frame, right after A
            self.processed += 1
            self.resultReady.emit(result)
        except Exception as exc:
            self.inferenceFailed.emit(_one_line(exc))

    def _set_maps(self, name: str | None) -> None:
        self.maps_block = name
        if self.predictor is not None:
            self.predictor.set_maps_for([name] if name in self.predictor.block_names else [])

    def _install(self, predictor: Any, info: ModelInfo) -> None:
        old, self.predictor = self.predictor, predictor
        if old is not None:
            old.close()  # no hooks left behind on the old model
        if self.maps_block not in predictor.block_names:  # a model without recorded blocks: None
            self.maps_block = next(iter(predictor.block_names), None)
        predictor.set_maps_for([self.maps_block] if self.maps_block else [])
        if self.compare is not None:
            self.compare.a_changed(predictor, info)
        self._undescribed = info if not info.cost_table else None
        self._judge_gates = True
        self.modelLoaded.emit(info)
        if self.last_frame is not None:  # a frame that arrived while no model was ready
            self._process(self.last_frame, rerun=False)
            if self._undescribed is not None:
                self._describe()

    def _describe(self) -> None:
        """Fill in the cost table off the path to the first prediction and off this thread: its
        meta-device pass imports torch._dynamo (~1 s once per process), which would otherwise delay
        the first frame, or stall the stream right after it. The meta copy is taken here, between
        forwards; the analysis runs on a helper thread and never touches the live model."""
        info, self._undescribed = self._undescribed, None
        if info is None or getattr(self.predictor, "model", None) is None:  # none, or a runtime graph
            return
        from ..analysis import meta_copy

        shadow, size = meta_copy(self.predictor.model), self.predictor.preprocess.crop_size
        blocks = list(self.predictor.recorder.block_infos)  # found by behaviour too, looked up by name

        def work() -> None:
            table = cost_table_of(shadow, size, blocks)
            if table:
                with contextlib.suppress(RuntimeError):  # the worker object is gone
                    self.modelDescribed.emit(replace(info, cost_table=table))

        thread = threading.Thread(target=work, name="cost-table", daemon=True)
        self._describers = [t for t in self._describers if t.is_alive()] + [thread]
        thread.start()

    def _load_model(
        self, checkpoint: str | None, device: str, half: bool, allow_download: bool, model_code: str | None
    ) -> None:
        self.load_generation += 1
        if self.backend != "torch":  # export / open on a helper thread; frames keep flowing meanwhile
            from .backend_loader import start_runtime_load

            self._loaders = [t for t in self._loaders if t.is_alive()]
            self._loaders.append(start_runtime_load(self, checkpoint, device, half, model_code))
            return
        try:
            predictor, info = build_predictor(
                checkpoint,
                device=device,
                half=half,
                allow_download=allow_download,
                with_cost=False,
                model_code=model_code,
            )
        except Exception as exc:
            self.modelFailed.emit(_one_line(exc))
            return
        self._install(predictor, info)


def build_predictor(
    checkpoint: str | None,
    *,
    device: str = "auto",
    half: bool = False,
    allow_download: bool = False,
    with_cost: bool = True,
    model_code: str | None = None,
) -> tuple[Any, ModelInfo]:
    """Load a model through the core and wrap it in a Predictor (runs on the worker thread)."""
    from ..inference import Predictor
    from ..zoo import load_model

    loaded = load_model(checkpoint, allow_download=allow_download, model_code=model_code)
    predictor = Predictor(
        loaded.model, device=device, half=half, class_names=loaded.class_names, preprocess=loaded.preprocess()
    )
    return predictor, describe_model(predictor, loaded, with_cost=with_cost)


def can_intervene(predictor: Any) -> bool:
    """Whether the predictor's recorder takes interventions (a runtime graph's may have none)."""
    rec = getattr(predictor, "recorder", None)
    return (
        callable(getattr(rec, "intervene", None))
        and callable(getattr(rec, "clear_interventions", None))
        and getattr(rec, "supported", True)  # an .onnx exported before the gate inputs: none
    )


def cost_table(predictor: Any) -> str:
    """The article's per-block cost table for the predictor's model and input size ("" if unknown)."""
    return cost_table_of(predictor.model, predictor.preprocess.crop_size, predictor.recorder.block_infos)


def cost_table_of(model: Any, size: int, blocks: Any = None) -> str:
    from ..analysis import format_cost_table, model_cost

    try:
        return format_cost_table(model_cost(model, (size, size), blocks))
    except Exception:  # analysis is informative only
        return ""


def describe_model(predictor: Any, loaded: Any = None, *, with_cost: bool = True) -> ModelInfo:
    """Plain-data description of a predictor's model for the views (``with_cost=False``: the cost
    table is left for :meth:`InferenceWorker._describe` to fill in after the first frame)."""
    from ..zoo import gates_untrained

    model = predictor.model
    size = predictor.preprocess.crop_size
    rec = predictor.recorder
    table = cost_table(predictor) if with_cost else ""
    info_ckpt = getattr(loaded, "info", None)
    return ModelInfo(
        name=type(model).__name__,
        provenance=getattr(loaded, "provenance", None)
        or str(getattr(model, "provenance", "in-memory model")),
        num_classes=len(predictor.class_names),
        blocks=[(n, t.channels) for n, t in rec.taps.items()],  # blocks with channel gates
        spatial_blocks=list(rec.spatial_taps),
        attention=[b.describe() for b in rec.block_infos],
        probe=rec.probe_report.summary() if rec.probe_report and rec.probe_report.candidates else "",
        device=str(predictor.device),
        half=predictor.half,
        warning=getattr(loaded, "warning", None),
        untrained_gates=gates_untrained(model),
        checkpoint=info_ckpt.path if info_ckpt else None,
        sha256=info_ckpt.sha256 if info_ckpt else None,
        cost_table=table,
        notes=list(getattr(loaded, "notes", []) or []) + [f"input {size}x{size}"],
        preprocess=predictor.preprocess,
        class_names=list(predictor.class_names),
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text.splitlines()[0][:300]


class WorkerThread:
    """Owns the QThread + worker pair; ``close`` stops the loop and joins the thread."""

    def __init__(self, frames: LatestSlot[Frame]) -> None:
        self.thread = QThread()
        self.thread.setObjectName("sevgg-inference")
        self.worker = InferenceWorker(frames)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        self.worker.finished.connect(self.thread.quit)  # direct: ends the thread's loop before it starts
        self.thread.start()

    def close(self, timeout_ms: int = 10_000) -> bool:
        """Stop and join; False when the worker is still busy (a model load cannot be interrupted).

        The caller must then not let Qt destroy the running QThread (that aborts the process):
        ``main`` ends the process with ``os._exit`` instead, see ``app.main._release``.
        """
        self.worker.stop()
        self.thread.quit()
        self.stuck = not self.thread.wait(timeout_ms)
        return not self.stuck

    stuck: bool = False
