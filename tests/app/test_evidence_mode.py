"""Class evidence mode in the real window (offscreen): off by default, a clicked or typed class, the map on
the input, evidence bars aligned with the gate chart, muting, other models, and nothing left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QPoint, Qt

from .conftest import SAMPLES


def wait_draws(qtbot, win, n: int = 1, timeout: int = 30_000) -> None:
    start = win.drawn
    qtbot.waitUntil(lambda: win.drawn >= start + n, timeout=timeout)


def all_hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def explained(win, **want) -> bool:
    ev = getattr(win.last_result, "evidence", None)
    return ev is not None and all(getattr(ev, k) == v for k, v in want.items())


def click_row(qtbot, win, row: int) -> None:
    view = win.predictions
    row_h = (view.height() - 8) / view.rows
    qtbot.mouseClick(view, Qt.MouseButton.LeftButton, pos=QPoint(40, int(4 + (row + 0.5) * row_h)))


def test_off_by_default_then_a_clicked_prediction_is_explained(qtbot, window):
    mode = window.evidence
    worker = window.worker_thread.worker
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window)
    assert not mode.on and worker.extras == [] and window.last_result.evidence is None
    assert not mode.cam_item.isVisible() and not mode.chart.isVisible()

    second = window.last_result.topk[1].index
    click_row(qtbot, window, 1)
    qtbot.waitUntil(lambda: explained(window, class_index=second), timeout=30_000)
    qtbot.waitUntil(lambda: mode.chart.isVisible(), timeout=10_000)
    assert mode.on and mode.panel.enable.isChecked() and window.tabs.currentWidget() is mode.panel
    assert mode.panel.class_edit.text() == window.model_info.class_names[second]
    ev = window.last_result.evidence
    assert mode.cam_item.isVisible() and not window.input_view.overlay.isVisible()
    top, left, ch, cw = window.last_result.meta["crop_box"]
    rect = mode.cam_item.mapRectToParent(mode.cam_item.boundingRect())
    assert (round(rect.left()), round(rect.top()), round(rect.width()), round(rect.height())) == (
        left,
        top,
        cw,
        ch,
    )
    # First use with the first block selected: the last block (nearest the decision) is selected.
    block = window.charts.selected_block
    assert block == window.model_info.blocks[-1][0]
    # The evidence row sits right under the selected block's gate chart, for that block.
    gate_chart = next(c for c in window.charts.charts if c.block == block)
    box = window.charts.chart_box
    assert box.indexOf(mode.chart) == box.indexOf(gate_chart) + 1
    assert list(ev.evidence) == [block]
    assert "gate–evidence r =" in mode.chart.getPlotItem().titleLabel.text

    # Sorting the gates keeps both rows aligned: bar i of each is the same channel.
    window.charts.sort_box.setChecked(True)
    qtbot.waitUntil(
        lambda: not np.array_equal(gate_chart.order, np.arange(gate_chart.channels)), timeout=10_000
    )
    qtbot.waitUntil(lambda: np.array_equal(mode.chart.order, gate_chart.order), timeout=10_000)
    ev = window.last_result.evidence
    shown = mode.chart.pos_bars.opts["height"] + mode.chart.neg_bars.opts["height"]
    np.testing.assert_allclose(shown, ev.evidence[block][gate_chart.order], rtol=1e-6)

    # Opacity slider drives the map's opacity.
    mode.panel.opacity.setValue(20)
    assert mode.cam_item.opacity() == pytest.approx(0.2)


def test_muting_updates_evidence_map_and_predictions(qtbot, window):
    mode = window.evidence
    window.open_source(str(SAMPLES / "coffee.png"))
    wait_draws(qtbot, window)
    window.select_block_index(4)
    mode.set_enabled(True)
    block = window.model_info.blocks[4][0]
    qtbot.waitUntil(
        lambda: explained(window) and block in window.last_result.evidence.evidence, timeout=30_000
    )
    before = window.last_result
    ev = before.evidence.evidence[block]
    ch = int(np.argmax(np.abs(ev)))
    window.request_intervention(block, ch, "mute")
    qtbot.waitUntil(
        lambda: explained(window) and window.last_result.evidence.gates[block][ch] == 0.0, timeout=30_000
    )
    after = window.last_result
    assert abs(float(after.evidence.evidence[block][ch])) < 1e-12  # gate 0: the channel carries nothing
    assert after.excitations[block][ch] == 0.0  # the prediction ran with the same intervention
    probs_before = np.array([p.prob for p in before.topk])
    assert not np.allclose(probs_before, [p.prob for p in after.topk], atol=0, rtol=0)
    assert not np.allclose(before.evidence.cam, after.evidence.cam, atol=0, rtol=0)


def test_typed_class_method_and_layer(qtbot, window):
    mode = window.evidence
    window.open_source(str(SAMPLES / "rocket.jpg"))
    wait_draws(qtbot, window)
    mode.panel.class_edit.setText("car")
    mode.panel.class_edit.returnPressed.emit()
    qtbot.waitUntil(lambda: explained(window, class_index=2), timeout=30_000)
    mode.panel.method_box.setCurrentIndex(mode.panel.method_box.findData("eigencam"))
    qtbot.waitUntil(lambda: explained(window, class_index=2, method="eigencam"), timeout=30_000)
    block = window.model_info.blocks[2][0]
    mode.panel.layer_box.setCurrentIndex(mode.panel.layer_box.findData(block))
    qtbot.waitUntil(lambda: explained(window, layer=block), timeout=30_000)
    assert window.last_result.evidence.cam.shape == (8, 8)  # block 3 of a 32 px VGG16: 8x8 maps
    mode.panel.class_edit.setText("zebra")
    mode.panel.class_edit.returnPressed.emit()
    assert window.error_banner.isVisible() and "no class named 'zebra'" in window.statusBar().currentMessage()
    mode.panel.top1_btn.click()
    qtbot.waitUntil(lambda: explained(window, class_index=window.last_result.top1.index), timeout=30_000)


def test_toggling_leaves_no_hooks_and_off_means_no_evidence(qtbot, window, small_model):
    mode = window.evidence
    worker = window.worker_thread.worker
    window.open_source(str(SAMPLES / "astronaut.png"))
    wait_draws(qtbot, window)
    hooks = all_hooks(small_model)
    for _ in range(1000):  # the changes queue up faster than the worker runs: one re-run serves them all
        mode.set_enabled(True)
        mode.set_enabled(False)
    qtbot.waitUntil(lambda: worker._commands.empty() and not worker._busy, timeout=60_000)
    mode.set_enabled(True)
    qtbot.waitUntil(lambda: explained(window), timeout=30_000)
    mode.set_enabled(False)
    qtbot.waitUntil(lambda: worker._commands.empty() and not worker._busy, timeout=60_000)
    assert worker.extras == []
    worker.rerun()
    qtbot.waitUntil(lambda: window.last_result.evidence is None, timeout=30_000)
    assert all_hooks(small_model) == hooks
    assert all(p.grad is None for p in small_model.parameters())
    assert not mode.cam_item.isVisible() and not mode.chart.isVisible()


@pytest.mark.parametrize("kind", ["mobilenet_v3_small", "vgg16:cbam"])
def test_other_models(qtbot, window, kind):
    """A torchvision SE network and a VGG16 attention variant, installed like any loaded model."""
    import torchvision

    from sevgg_gui.app.worker import describe_model
    from sevgg_gui.images import Preprocess
    from sevgg_gui.inference import Predictor
    from sevgg_gui.models.networks import vgg16_attention

    torch.manual_seed(0)
    if kind == "mobilenet_v3_small":
        model, size = torchvision.models.mobilenet_v3_small(num_classes=10).eval(), 64
    else:
        model, size = vgg16_attention("cbam", 10, width=0.125).eval(), 32
    pred = Predictor(model, device="cpu", preprocess=Preprocess(size, round(size * 256 / 224)))
    worker = window.worker_thread.worker
    worker.set_predictor(pred, describe_model(pred))
    qtbot.waitUntil(lambda: window.model_info.num_classes == 10, timeout=20_000)
    window.evidence.set_enabled(True)
    window.open_source(str(SAMPLES / "camera.png"))
    qtbot.waitUntil(lambda: explained(window) and window.evidence.chart.isVisible(), timeout=30_000)
    ev = window.last_result.evidence
    # the last spatial convolution of the CBAM net is its last attention block's own: that block is chosen
    assert ev.layer == ("features" if kind == "mobilenet_v3_small" else "features.34")
    assert window.evidence.cam_item.isVisible()
    assert window.evidence.panel.layer_box.count() == 1 + len(window.model_info.blocks)
