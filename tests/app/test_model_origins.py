"""Models from elsewhere in the app: the user's code through the worker (real widgets, real model),
its errors as one line with the current model kept, a dropped Hugging Face model folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sevgg_gui.app.model_menu import functions_in, load_code, remembered

from .conftest import SAMPLES
from .test_window import drop, wait_draws

REPO = Path(__file__).resolve().parents[2]
USER_MODELS = REPO / "tests" / "data" / "user_models"
TV_SE = f"{USER_MODELS / 'inline_se.py'}:build_torchvision_se"  # gates recorded by type
FAULTY = USER_MODELS / "faulty.py"


def test_model_code_loads_on_the_worker_and_predicts_with_its_names(qtbot, window, tmp_path):
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    load_code(window, TV_SE, None)  # what Model → Open model code… ends with
    qtbot.waitUntil(lambda: window.model_info.name == "TinySENet", timeout=60_000)
    assert [c for _n, c in window.model_info.blocks] == [16, 32]
    assert "inline_se.py:build_torchvision_se" in window.model_info.provenance
    qtbot.waitUntil(
        lambda: {p.label for p in window.last_result.topk} == {"circle", "square", "triangle"}, timeout=30_000
    )
    assert window.model_code == TV_SE  # reloads (device change) rebuild it
    # Remembered in the settings, offered again in the Model menu.
    assert remembered(window) == (TV_SE, None)
    assert window.reopen_code_action.isEnabled() and "inline_se.py" in window.reopen_code_action.text()


def test_model_code_weights_load_and_errors_keep_the_model(qtbot, window, tmp_path):
    torch.manual_seed(5)
    from sevgg_gui.zoo import load_model

    trained = load_model(None, model_code=TV_SE).model
    path = tmp_path / "tiny.pth"
    torch.save({"model": trained.state_dict(), "class_names": ["red", "green", "blue"]}, path)
    window.load_model(str(path), model_code=TV_SE)
    qtbot.waitUntil(lambda: window.model_info.checkpoint == str(path), timeout=60_000)
    assert window.model_info.sha256 and len(window.model_info.sha256) == 64

    lines = FAULTY.read_text().splitlines()
    line = next(i for i, s in enumerate(lines, 1) if "explode-line" in s)
    window.error_banner.hide()
    window.load_model(None, model_code=f"{FAULTY}:explode")
    qtbot.waitUntil(window.error_banner.isVisible, timeout=30_000)
    text = window.error_banner.label.text()
    assert f"faulty.py:{line}" in text and "ValueError" in text and "keeping the current model" in text
    assert window.model_info.checkpoint == str(path) and window.model_code == TV_SE  # kept


def test_dropped_model_folder_goes_to_the_model_not_the_sources(qtbot, window, tmp_path):
    timm = pytest.importorskip("timm")
    from sevgg_gui.recorder import find_gate_blocks

    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=3)
    folder = tmp_path / "tiny_timm"
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    window.error_banner.hide()
    drop(window, [folder])
    qtbot.waitUntil(lambda: window.model_info.checkpoint == str(folder / "model.safetensors"), timeout=60_000)
    assert len(window.model_info.blocks) == len(find_gate_blocks(model)) == 9  # MobileNetV3-Small's SE
    assert window.source_spec == str(SAMPLES / "chelsea.png")  # not opened as a folder of images


def test_functions_in_lists_a_files_functions_without_running_it(tmp_path):
    assert functions_in(FAULTY) == [
        "explode",
        "not_a_model",
        "deeper",
        "quits",
    ]  # file order, build-like first
    assert functions_in(USER_MODELS / "inline_se.py")[:2] == ["build", "build_torchvision_se"]
    bad = tmp_path / "bad.py"
    bad.write_text("def (")
    assert functions_in(bad) == []


def test_headless_gui_with_model_code_saves_a_screenshot(tmp_path):
    """`sevgg-gui --model-code` as a user runs it (real process, offscreen)."""
    from .test_headless import run_gui

    out = tmp_path / "code.png"
    proc = run_gui(
        "--source", str(SAMPLES / "chelsea.png"), "--model-code", TV_SE, "--frames", "1", "--screenshot", str(out)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 10_000
    proc = run_gui(
        "--source", str(SAMPLES / "chelsea.png"), "--model-code", f"{FAULTY}:not_a_model", "--frames", "1"
    )
    assert proc.returncode != 0 and "returned a dict" in proc.stderr and "Traceback" not in proc.stderr


def test_dropping_model_code_with_weights_asks_only_for_the_function(qtbot, window, tmp_path):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QInputDialog

    from sevgg_gui.zoo import load_model

    torch.manual_seed(9)
    trained = load_model(None, model_code=TV_SE).model
    weights = tmp_path / "w.pth"
    torch.save(trained.state_dict(), weights)
    asked: list[list[str]] = []

    def pick() -> None:  # the real dialog: choose build_torchvision_se and press OK
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QInputDialog):
            QTimer.singleShot(50, pick)
            return
        asked.append(dialog.comboBoxItems())
        dialog.setTextValue("build_torchvision_se")
        dialog.accept()

    QTimer.singleShot(50, pick)
    drop(window, [USER_MODELS / "inline_se.py", weights])
    qtbot.waitUntil(lambda: window.model_info.checkpoint == str(weights), timeout=60_000)
    assert asked and asked[0][:2] == ["build", "build_torchvision_se"]
    assert window.model_code == f"{USER_MODELS / 'inline_se.py'}:build_torchvision_se"
