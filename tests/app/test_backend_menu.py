"""Model → Backend in the real window (offscreen): the slim 32 px VGG16-SE checkpoint exported for real
into a per-test cache and run by real onnxruntime, settings in the test's own file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from sevgg_gui.app.worker import can_intervene

from .conftest import SAMPLES
from .test_window import wait_draws

# fp32 in both; onnxruntime's kernels sum in another order than torch's (see tests/test_backends.py).
GATE_TOL = 1e-4
SHOTS = Path(os.environ.get("SEVGG_SHOTS", "/tmp"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SEVGG_CACHE", str(d))
    return d


def load_slim(qtbot, win, slim_ckpt: Path) -> None:
    win.load_model(str(slim_ckpt))
    qtbot.waitUntil(lambda: win.model_info.checkpoint == str(slim_ckpt), timeout=60_000)


def choose(qtbot, win, backend: str) -> None:
    win.backend_menu.actions[backend].trigger()
    qtbot.waitUntil(lambda: win.backend_menu.running == backend, timeout=120_000)


def mute_action(chart, channel: int):
    return next(a for a in chart.context_menu(channel).actions() if a.text().startswith("Mute"))


def mute_offered(win) -> bool:
    """Whether the running predictor takes interventions (torch, and exports with gate inputs)."""
    return can_intervene(win.worker_thread.worker.predictor)


def test_onnxruntime_runs_the_export_with_every_gate_and_is_remembered(qtbot, window, slim_ckpt, cache):
    load_slim(qtbot, window, slim_ckpt)
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    torch_result = window.last_result
    drawn = window.drawn
    choose(qtbot, window, "onnxruntime")
    qtbot.waitUntil(lambda: window.drawn > drawn and window.last_result is not torch_result, timeout=30_000)
    worker = window.worker_thread.worker
    assert type(worker.predictor).__name__ == "OnnxPredictor" and worker.predictor.runtime == "onnxruntime"
    assert list(cache.glob("*.onnx")), "the export went into SEVGG_CACHE"
    # The charts show every gate the graph returned, equal to torch's for the same frame.
    result = window.last_result
    assert [c.block for c in window.charts.charts] == list(result.excitations)
    for chart in window.charts.charts:
        np.testing.assert_array_equal(chart.bars.opts["height"], result.excitations[chart.block])
        assert (
            float(np.abs(result.excitations[chart.block] - torch_result.excitations[chart.block]).max())
            < GATE_TOL
        )
    assert [p.index for p in result.topk] == [p.index for p in torch_result.topk]
    assert len(result.topk) == 5
    # What runs is shown: the menu, the model panel, the status bar's device.
    assert window.backend_menu.actions["onnxruntime"].isChecked()
    assert window.backend_menu.menu.title() == "Backend: onnxruntime"
    assert "exported for onnxruntime" in window.model_panel.toPlainText()
    assert window.model_info.backend == "onnxruntime" and "onnxruntime" in window.hud_device.text()
    # Interventions run in the graph (per-block mul/add inputs): a mute from the chart's menu zeroes
    # exactly that gate in the next runtime result (gate*0 + 0 is exactly 0 in any kernel order).
    chart = window.charts.charts[0]
    mute = mute_action(chart, 3)
    assert mute_offered(window) and mute.isEnabled()
    mute.trigger()
    qtbot.waitUntil(lambda: window.last_result.excitations[chart.block][3] == 0.0, timeout=30_000)
    gates = window.last_result.excitations[chart.block]
    others = np.delete(gates - torch_result.excitations[chart.block], 3)
    assert float(np.abs(others).max()) < GATE_TOL  # the other channels of that block did not move
    window.worker_thread.worker.clear_interventions()
    qtbot.waitUntil(lambda: window.last_result.excitations[chart.block][3] != 0.0, timeout=30_000)
    assert "torch backend" in window.thumbs.label.text  # one line instead of feature maps
    assert not window.evidence.panel.enable.isEnabled()
    window.evidence.set_enabled(True)  # e.g. a click on a prediction: refused with the reason
    assert not window.evidence.on and "torch backend" in window.statusBar().currentMessage()
    window.grab().save(str(SHOTS / "app-backend-onnxruntime.png"))
    # The choice is kept: a new window on the same settings starts in onnxruntime.
    window.save_settings()
    again = QSettings(window.settings.fileName(), QSettings.Format.IniFormat)
    assert again.value("model/backend") == "onnxruntime"


def test_a_failing_export_is_one_line_and_torch_keeps_running(
    qtbot, window, slim_ckpt, tmp_path, monkeypatch
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SEVGG_CACHE", str(blocker / "exports"))  # cannot be created: the export fails
    load_slim(qtbot, window, slim_ckpt)
    window.open_source(str(SAMPLES / "rocket.jpg"))
    wait_draws(qtbot, window, 1)
    window.error_banner.hide()
    window.backend_menu.actions["onnxruntime"].trigger()
    qtbot.waitUntil(window.error_banner.isVisible, timeout=60_000)
    line = window.error_banner.label.text()
    assert "onnxruntime backend unavailable for" in line and line.endswith("using torch") and "\n" not in line
    assert window.model_info.backend == "torch" and window.model_info.checkpoint == str(slim_ckpt)
    assert window.backend_menu.actions["torch"].isChecked()  # the menu shows what runs
    assert window.backend_menu.menu.title() == "Backend: torch (chose onnxruntime)"
    assert window.worker_thread.worker.predictor.model is not None
    window.step(+1)  # torch keeps classifying
    wait_draws(qtbot, window, 1)
    assert mute_action(window.charts.charts[0], 0).isEnabled()
    window.grab().save(str(SHOTS / "app-backend-fallback.png"))


def test_back_to_torch_restores_interventions_and_maps(qtbot, window, slim_ckpt, cache):
    load_slim(qtbot, window, slim_ckpt)
    window.open_source(str(SAMPLES / "coffee.png"))
    wait_draws(qtbot, window, 1)
    choose(qtbot, window, "onnxruntime")
    assert mute_action(window.charts.charts[1], 0).isEnabled() == mute_offered(window)
    # Compare mode works with A in the runtime: B = the same checkpoint in torch pairs every block.
    window.compare.start(str(slim_ckpt))
    qtbot.waitUntil(lambda: window.last_result.meta.get("compare") is not None, timeout=60_000)
    cmp = window.last_result.meta["compare"]
    assert len(cmp.blocks) == 5 and cmp.top1_agree
    assert all(f.mean_abs_diff < GATE_TOL for f in cmp.blocks)
    qtbot.waitUntil(lambda: len(window.compare.view.charts) == 5, timeout=10_000)
    assert window.compare.view.charts[0].context_menu(0).actions()[0].isEnabled() == mute_offered(window)
    window.compare.stop()
    choose(qtbot, window, "torch")
    assert type(window.worker_thread.worker.predictor).__name__ == "Predictor"
    qtbot.waitUntil(lambda: bool(window.last_result.squeezes), timeout=30_000)  # a torch result drawn
    chart = window.charts.charts[1]
    top = int(np.argmax(window.last_result.excitations[chart.block]))
    mute = mute_action(chart, top)
    assert mute.isEnabled()
    mute.trigger()
    qtbot.waitUntil(lambda: window.last_result.excitations[chart.block][top] == 0.0, timeout=20_000)
    assert "torch backend" not in window.thumbs.label.text
    assert window.evidence.panel.enable.isEnabled()
    assert QSettings(window.settings.fileName(), QSettings.Format.IniFormat).value("model/backend") == "torch"


def test_backend_option_opens_the_first_model_in_that_runtime(qtbot, slim_ckpt, cache, tmp_path):
    from sevgg_gui.app.main import build_parser
    from sevgg_gui.app.window import MainWindow

    assert build_parser().parse_args(["--backend", "openvino"]).backend == "openvino"
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings, checkpoint=str(slim_ckpt), device="cpu", backend="openvino")
    qtbot.addWidget(win)
    try:
        qtbot.waitUntil(lambda: win.backend_menu.running == "openvino", timeout=120_000)
        assert type(win.worker_thread.worker.predictor).__name__ == "OpenVinoPredictor"
        assert (
            win.model_info.checkpoint == str(slim_ckpt) and win.backend_menu.actions["openvino"].isChecked()
        )
        assert [n for n, _c in win.model_info.blocks] == win.worker_thread.worker.predictor.block_names
        assert settings.value("model/backend") is None  # --backend is for this run; the menu saves
    finally:
        win.close()


def test_frames_keep_flowing_through_the_old_model_while_it_exports(qtbot, window, slim_ckpt, cache):
    from sevgg_gui.images import load_image

    load_slim(qtbot, window, slim_ckpt)
    rgb = load_image(SAMPLES / "coffee.png")
    torch_draws: list[bool] = []  # per drawn Result: from torch (it has squeezes) or the runtime
    window.resultDrawn.connect(lambda _n: torch_draws.append(bool(window.last_result.squeezes)))
    window.backend_menu.actions["onnxruntime"].trigger()
    assert window.progress.isVisible()  # busy while exporting
    assert "keeps running" in window.statusBar().currentMessage()
    deadline = 200  # x 50 ms
    while window.backend_menu.running != "onnxruntime" and deadline:
        window.push_frame(rgb, "pushed")  # a camera's frames, as it were
        qtbot.wait(50)
        deadline -= 1
    assert window.backend_menu.running == "onnxruntime"
    assert torch_draws and torch_draws[0], "the torch model classified frames while the export ran"
    window.push_frame(rgb, "pushed")
    qtbot.waitUntil(lambda: torch_draws[-1] is False, timeout=10_000)  # then the runtime's results
    assert not window.progress.isVisible()
