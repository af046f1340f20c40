"""No flat charts: a model whose gates do not depend on the input opens on the squeeze view, the
header says why, and the user's way back to the gates sticks (real widgets, real models)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sevgg_gui.app.worker import build_predictor, describe_model
from sevgg_gui.models.vgg import neutralise_se

from .conftest import SAMPLES, make_predictor
from .test_window import wait_draws


def install(qtbot, window, predictor, info=None) -> None:
    before = window.model_info
    window.worker_thread.worker.set_predictor(predictor, info or describe_model(predictor))
    qtbot.waitUntil(lambda: window.model_info is not before, timeout=20_000)


def header(window) -> str:
    return window.charts.notice_label.text() if window.charts.notice.isVisible() else ""


def test_random_vgg16_se_opens_on_squeeze_and_the_way_back_sticks(qtbot, window):
    charts = window.charts
    assert charts.options.mode == "gates" and not charts.notice.isVisible()  # nothing judged yet
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    result = window.last_result
    assert "barely differ" in charts.flat_reason  # the worker's verdict
    # The model panel says the same, not "input-dependent" beside a header saying the bars are flat.
    qtbot.waitUntil(lambda: "flat on the first frame" in window.model_panel.toPlainText(), timeout=10_000)
    assert charts.options.mode == "squeeze" and charts.mode_box.currentData() == "squeeze"
    assert "gates are untrained: showing channel means" in header(window)
    for chart in charts.charts:  # the bars are the squeeze values of that same frame
        np.testing.assert_array_equal(chart.bars.opts["height"], result.squeezes[chart.block])
    # The automatic view is not the user's choice: settings keep the gate view.
    window.save_settings()
    assert window.settings.value("charts/mode") == "gates"

    charts.notice_btn.click()  # "Show gates"
    assert charts.options.mode == "gates" and "bars are flat" in header(window)
    window.open_source(str(SAMPLES / "coffee.png"))
    wait_draws(qtbot, window, 1)
    assert charts.options.mode == "gates"
    # The same model installed again (e.g. a device change) stays on the gates the user chose.
    install(qtbot, window, make_predictor(copy.deepcopy(window.worker_thread.worker.predictor.model)))
    window.open_source(str(SAMPLES / "rocket.jpg"))
    wait_draws(qtbot, window, 1)
    assert charts.options.mode == "gates"
    for chart in charts.charts:
        np.testing.assert_array_equal(chart.bars.opts["height"], window.last_result.excitations[chart.block])


def test_transferred_gates_switch_at_load_and_a_lively_model_opens_on_gates(qtbot, window, small_model):
    charts = window.charts
    transferred = neutralise_se(copy.deepcopy(small_model))  # what the ImageNet transfer leaves
    predictor = make_predictor(transferred)
    info = describe_model(predictor)
    assert info.untrained_gates
    install(qtbot, window, predictor, info)
    # Known from the weights: the view switches before any frame.
    assert charts.options.mode == "squeeze" and "exactly 0.5" in header(window)
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    assert charts.options.mode == "squeeze"

    lively = copy.deepcopy(small_model)
    with torch.no_grad():
        for _, block in lively.se_blocks():
            block.fc[2].weight.mul_(40.0)  # input-dependent gates, as training makes them
    install(qtbot, window, make_predictor(lively))
    assert charts.options.mode == "gates"  # the automatic view went with the old model
    window.open_source(str(SAMPLES / "coffee.png"))
    qtbot.waitUntil(lambda: window.last_result.meta["origin"].endswith("coffee.png"), timeout=30_000)
    assert charts.flat_reason is None
    assert charts.options.mode == "gates" and header(window) == ""
    qtbot.waitUntil(lambda: "input-dependent (std" in window.model_panel.toPlainText(), timeout=10_000)


def test_an_explicit_view_is_never_overridden(qtbot, window):
    window.charts.mode_pinned = True  # what `sevgg-gui --mode gates` sets
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    assert window.charts.flat_reason is not None
    assert window.charts.options.mode == "gates" and "bars are flat" in header(window)


def test_googles_trained_mobilenet_opens_on_gates(qtbot, window, shared_dir):
    weights = shared_dir / "weights" / "mobilenet_v3_small-tfslim_uint8-distilled.pth"
    if not weights.exists():
        pytest.skip(f"{weights} not found")
    predictor, info = build_predictor(str(weights), device="cpu", with_cost=False)
    install(qtbot, window, predictor, info)
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    assert window.charts.flat_reason is None
    assert window.charts.options.mode == "gates" and header(window) == ""
    assert len(window.charts.charts) == 9
