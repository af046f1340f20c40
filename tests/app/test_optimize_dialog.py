"""Model → "Optimize for this CPU…": the real dialog offscreen over the real window and worker, a slim
random VGG16-SE checkpoint exported and quantized by onnxruntime (nothing mocked but the camera: the
"current source" is a lambda returning real frames one after another)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from sevgg_gui.app.optimize_dialog import OptimizeDialog, add_optimize_action  # noqa: E402
from sevgg_gui.sources import Frame  # noqa: E402


def _frames(n: int) -> list[Frame]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        yy, xx = np.mgrid[0:48, 0:64] / 64
        img = np.stack([np.sin((3 + i) * xx), np.cos(4 * yy + i), xx * yy], -1) * 120 + 128
        img = img + rng.normal(0, 10, img.shape)
        out.append(Frame(np.clip(img, 0, 255).astype(np.uint8), i, time.perf_counter(), "camera:0", 0.0))
    return out


class _Source:
    """Each call returns the next frame, as the worker's ``last_frame`` does while a video plays."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames, self.i = frames, 0

    def __call__(self) -> Frame:
        frame = self.frames[min(self.i, len(self.frames) - 1)]
        self.i += 1
        return frame


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEVGG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_frames_to_result_view_then_use_int8_runs_onnx_in_the_worker(window, qtbot, slim_ckpt, cache) -> None:
    from sevgg_gui.backends.onnx_runtime import OnnxPredictor

    worker = window.worker_thread.worker
    out = cache / "int8" / "slim.int8.onnx"
    dlg = OptimizeDialog(
        str(slim_ckpt),
        last_frame=_Source(_frames(12)),
        install=worker.set_predictor,
        out_path=out,
        parent=window,
    )
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.n_frames.setValue(12)
    dlg.threshold.setValue(0.0)  # random weights: accept whatever agreement, to reach "Use INT8"
    dlg.gate_limit.setValue(1.0)  # and any gate difference (1.0: no limit)
    dlg.start_button.click()
    qtbot.waitUntil(lambda: dlg.pages.currentIndex() == 2, timeout=120_000)
    rep = dlg.report
    assert rep.calib_images == 9 and rep.held_out_images == 3  # 25% of 12 frames, the latest ones
    assert rep.held_out_indices == [9, 10, 11]
    assert f"{rep.agreement:.1%}" in dlg.agreement_label.text()
    assert f"{rep.max_gate_diff:.3g}" in dlg.gate_label.text() and "×" in dlg.speed_label.text()
    assert dlg.use_button.isEnabled() and out.is_file()
    dlg.resize(620, 320)
    dlg.grab().save(str(Path("/tmp") / "int8_dialog_result.png"))
    dlg.use_button.click()
    qtbot.waitUntil(lambda: isinstance(worker.predictor, OnnxPredictor), timeout=20_000)
    qtbot.waitUntil(
        lambda: "INT8" in (window.model_info.provenance if window.model_info else ""), timeout=20_000
    )
    assert worker.predictor.path == str(out)
    blocks = [b for b, _c in window.model_info.blocks]  # the torch module names, from the export's metadata
    assert len(blocks) == 5 and blocks == worker.predictor.block_names


def test_refused_result_disables_use_and_installs_nothing(window, qtbot, slim_ckpt, cache, tmp_path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(_frames(8)):
        Image.fromarray(f.rgb).save(folder / f"{i}.png")
    before = window.worker_thread.worker.predictor
    out = cache / "int8" / "r.int8.onnx"
    dlg = OptimizeDialog(str(slim_ckpt), install=window.worker_thread.worker.set_predictor, out_path=out)
    qtbot.addWidget(dlg)
    dlg.folder.setText(str(folder))
    dlg.use_folder.setChecked(True)
    dlg.threshold.setValue(0.0)
    dlg.gate_limit.setValue(0.0)  # no INT8 gate equals its fp32 value exactly: always refused
    dlg.start_button.click()
    qtbot.waitUntil(lambda: dlg.pages.currentIndex() == 2, timeout=120_000)
    assert dlg.report.refused and "gate" in dlg.report.refused
    assert "refused" in dlg.verdict.text() and not dlg.use_button.isEnabled() and not out.exists()
    assert dlg.use_button.toolTip() == dlg.report.line()  # the numbers, in one line
    dlg.keep_button.click()
    assert window.worker_thread.worker.predictor is before


def test_cancel_leaves_everything_as_it_was(window, qtbot, slim_ckpt, cache) -> None:
    worker = window.worker_thread.worker
    before = worker.predictor
    out = cache / "int8" / "c.int8.onnx"
    dlg = OptimizeDialog(
        str(slim_ckpt), last_frame=_Source(_frames(6)), install=worker.set_predictor, out_path=out
    )
    qtbot.addWidget(dlg)
    dlg.n_frames.setValue(6)
    dlg.start_button.click()
    qtbot.waitUntil(lambda: dlg._thread is not None, timeout=20_000)  # frames gathered, the check running
    dlg.cancel_button.click()
    qtbot.waitUntil(lambda: dlg.pages.currentIndex() == 0, timeout=60_000)
    assert "cancelled" in dlg.setup_message.text()
    assert worker.predictor is before and not out.exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True


def test_action_is_disabled_with_a_reason_without_onnxruntime(window, monkeypatch) -> None:
    from PySide6.QtWidgets import QMenu

    from sevgg_gui.app import optimize_dialog

    menu = QMenu()
    add_optimize_action(window, menu)
    assert menu.actions()[-1].isEnabled()
    monkeypatch.setattr(optimize_dialog, "onnxruntime_available", lambda: False)
    add_optimize_action(window, menu)
    action = menu.actions()[-1]
    assert not action.isEnabled() and "onnxruntime" in action.toolTip()
    texts = [a.text() for m in window.menuBar().actions() if m.menu() for a in m.menu().actions()]
    assert any("Optimize for this CPU" in t for t in texts)  # wired into the window's Model menu
