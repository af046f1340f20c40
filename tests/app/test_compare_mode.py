"""Compare mode in the real window (offscreen): model B beside A on every frame, interventions on A only,
B's hooks gone after leaving, a B that fails leaves A running, an ONNX B (onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sevgg_gui.checkpoints import save_checkpoint

from .conftest import CLASSES, SAMPLES
from .test_window import drop, wait_draws


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture()
def same_ckpt(tmp_path: Path, small_model) -> Path:
    """The window's model A saved as a checkpoint (32 px): B = A."""
    return save_checkpoint(small_model, tmp_path / "same.pth", class_names=CLASSES, input_size=32)


def _load_a(qtbot, win, ckpt: Path) -> None:
    """A from the checkpoint too: A and B then share the preprocessing (32 px crop of a 37 px resize)."""
    win.load_model(str(ckpt))
    qtbot.waitUntil(lambda: win.model_info.checkpoint == str(ckpt), timeout=60_000)


def _comparing(qtbot, win, spec: str) -> None:
    win.compare.start(spec)
    qtbot.waitUntil(lambda: win.compare.active, timeout=60_000)
    qtbot.waitUntil(lambda: win.last_result is not None and "compare" in win.last_result.meta, timeout=30_000)


def test_a_vs_a_agrees_and_a_mute_shows_in_exactly_that_channel(qtbot, window, same_ckpt) -> None:
    win = window
    _load_a(qtbot, win, same_ckpt)
    win.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, win, 1)
    _comparing(qtbot, win, str(same_ckpt))
    view = win.compare.view
    assert view.isVisible() and not win.charts.isVisible()
    cmp = win.last_result.meta["compare"]
    assert cmp.top1_agree and cmp.top5_overlap == 1.0 and cmp.unpaired == []
    assert len(view.charts) == 5 and "agrees" in view.agreement.text()
    for f in cmp.blocks:  # same weights, same kernels, same frame: float32 rounding at most
        assert f.cosine == pytest.approx(1.0, abs=1e-6) and f.mean_abs_diff <= 1e-6
    assert "cos 1.000" in view.charts[0].title_text and "top-10 10/10" in view.charts[2].title_text
    assert "A model" in win.compare.hud.text() and "B model" in win.compare.hud.text()
    assert [label for label, _p in view.pred_a.items] == [label for label, _p in view.pred_b.items]

    # Interventions apply to A (here from the compare chart's own context menu); B stays the reference.
    block = win.model_info.blocks[2][0]
    ch = 7
    mute = view.charts[2].context_menu(ch).actions()[0]
    assert "Mute A's channel 7" in mute.text()
    mute.trigger()
    qtbot.waitUntil(lambda: win.last_result.excitations[block][ch] == 0.0, timeout=30_000)
    cmp = win.last_result.meta["compare"]
    frame = next(f for f in cmp.blocks if f.pair.a == block)
    assert np.flatnonzero(np.abs(frame.diff) > 1e-6).tolist() == [ch]  # B's gate there is untouched
    assert cmp.result_b.excitations[block][ch] > 0
    chart = view.charts[2]
    assert chart.a[ch] == 0.0 and chart.b[ch] > 0
    qtbot.waitUntil(lambda: "SE3:7=0" in view.interventions.text(), timeout=10_000)  # A's list, shown here
    view.set_mode("diff")
    assert view.view_box.currentData() == "diff"
    assert chart.bars_d.isVisible() and not chart.bars_a.isVisible()
    assert chart.bars_d.opts["height"][ch] == pytest.approx(chart.b[ch])  # B − A > 0: a rise
    assert chart.bars_dn.opts["height"][ch] == 0.0
    assert "B−A" in chart.describe(ch)


def test_leaving_compare_mode_frees_b_and_its_hooks(qtbot, window, same_ckpt) -> None:
    win = window
    win.open_source(str(SAMPLES / "coffee.png"))
    wait_draws(qtbot, win, 1)
    _comparing(qtbot, win, str(same_ckpt))
    b_model = win.compare.slot.comparison.b.model
    assert _hooks(b_model) > 0
    win.compare.stop()
    qtbot.waitUntil(lambda: win.compare.slot.comparison is None, timeout=20_000)
    assert _hooks(b_model) == 0
    assert not win.compare.view.isVisible() and win.charts.isVisible() and not win.compare.hud.isVisible()
    win.worker_thread.worker.rerun()
    wait_draws(qtbot, win, 1)
    assert "compare" not in win.last_result.meta


def test_a_b_that_fails_to_load_leaves_a_running(qtbot, window, tmp_path) -> None:
    win = window
    win.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, win, 1)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00not an onnx model")
    drop(win, [bad])  # an .onnx file dropped becomes B (it cannot be A)
    qtbot.waitUntil(win.error_banner.isVisible, timeout=30_000)
    text = win.error_banner.label.text()
    assert "model B" in text and "broken.onnx" in text and "\n" not in text
    assert not win.compare.active and win.charts.isVisible()
    win.worker_thread.worker.rerun()
    wait_draws(qtbot, win, 1)  # A still classifies
    assert win.last_result.topk and "compare" not in win.last_result.meta


def test_onnx_b_pairs_with_its_torch_model_and_unpairable_blocks_are_listed(
    qtbot, window, slim_ckpt, tmp_path
) -> None:
    pytest.importorskip("onnxruntime")
    from sevgg_gui.deploy.onnx_export import export_checkpoint

    win = window
    onnx_path = tmp_path / "slim.onnx"
    export_checkpoint(slim_ckpt, onnx_path, with_excitations=True, check=False)
    win.open_source(str(SAMPLES / "rocket.jpg"))
    wait_draws(qtbot, win, 1)
    # A (full-width VGG16-SE, 64..512 channels) vs the slim export (8..64): only a 64-channel block of
    # B can sit at A's first block; the rest is listed, not guessed.
    _comparing(qtbot, win, str(onnx_path))
    cmp = win.last_result.meta["compare"]
    assert [(f.pair.a, f.pair.channels) for f in cmp.blocks] == [("features.4", 64)]
    assert len(cmp.unpaired) == 4 + 4 and win.compare.view.unpaired.isVisible()
    assert "onnxruntime" in win.compare.view.b_label.text()
    # A becomes the slim checkpoint itself: all five blocks pair, the gates agree to float rounding.
    win.load_model(str(slim_ckpt))
    qtbot.waitUntil(lambda: win.model_info.checkpoint == str(slim_ckpt), timeout=60_000)
    win.worker_thread.worker.rerun()
    qtbot.waitUntil(lambda: len(win.last_result.meta.get("compare").blocks) == 5, timeout=30_000)
    cmp = win.last_result.meta["compare"]
    assert cmp.unpaired == [] and all(f.mean_abs_diff < 1e-4 for f in cmp.blocks)  # onnxruntime vs oneDNN
    assert len(win.compare.view.charts) == 5


def test_a_b_that_fails_on_a_frame_is_dropped_and_a_keeps_running(qtbot, window, slim_ckpt, tmp_path) -> None:
    """A real run-time failure of B: an ONNX file whose input is fixed at 40x40 while its metadata says
    32 px (exported elsewhere, say): onnxruntime loads it and refuses every frame."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from sevgg_gui.deploy.onnx_export import export_checkpoint

    path = tmp_path / "tiny.onnx"
    export_checkpoint(slim_ckpt, path, with_excitations=True, check=False)
    proto = onnx.load(str(path))
    for d in proto.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_value = 40
    onnx.save(proto, str(path))
    win = window
    win.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, win, 1)
    win.compare.start(str(path))
    qtbot.waitUntil(win.error_banner.isVisible, timeout=60_000)
    text = win.error_banner.label.text()
    assert text.startswith("Model B stopped") and "A keeps running" in text and "\n" not in text
    qtbot.waitUntil(lambda: win.compare.slot.comparison is None and not win.compare.active, timeout=20_000)
    assert win.charts.isVisible() and not win.compare.view.isVisible()
    win.worker_thread.worker.rerun()
    wait_draws(qtbot, win, 1)
    assert win.last_result.topk and "compare" not in win.last_result.meta


def test_headless_compare_flag(tmp_path, slim_ckpt) -> None:
    """`sevgg-gui -c A --compare B` as a user runs it: both models on the frame, one screenshot."""
    from PIL import Image

    from .test_headless import run_gui

    out = tmp_path / "cmp.png"
    proc = run_gui(
        "--source", str(SAMPLES / "coffee.png"), "-c", str(slim_ckpt), "--compare", str(slim_ckpt),
        "--frames", "1", "--screenshot", str(out), "--size", "1280x800",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    img = Image.open(out).convert("RGB")
    assert img.size == (1280, 800) and "Traceback" not in proc.stderr
    # B's bars (drawn only in compare mode) are on the screenshot.
    b_pixels = dict((c, n) for n, c in img.getcolors(maxcolors=1_000_000)).get((240, 160, 48), 0)
    assert b_pixels > 500, b_pixels


def test_shift_drop_of_a_checkpoint_compares_instead_of_replacing(qtbot, window, same_ckpt) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    win = window
    win.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, win, 1)
    a_before = win.model_info
    QTest.keyPress(win, Qt.Key.Key_Shift, Qt.KeyboardModifier.ShiftModifier)
    try:
        drop(win, [same_ckpt])
    finally:
        QTest.keyRelease(win, Qt.Key.Key_Shift)
    qtbot.waitUntil(lambda: win.compare.active, timeout=60_000)
    assert win.model_info is a_before  # A stayed; the dropped file became B
    assert win.compare.info.spec == str(same_ckpt)
