"""The app on models whose attention the registry knows by type (timm) or the probe finds (user
code): the model panel lists every block with its kind, channels and how it was found, and the
charts draw the recorded gates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sevgg_gui.app.worker import describe_model
from sevgg_gui.images import Preprocess
from sevgg_gui.inference import Predictor

from .conftest import CLASSES, SAMPLES


def wait_draws(qtbot, window, n: int) -> None:
    start = window.frames_drawn
    qtbot.waitUntil(lambda: window.frames_drawn >= start + n, timeout=30_000)


class InlineSE(nn.Module):
    """An SE the way a user writes it: nothing registered, the gate computed inline."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // 2), nn.Linear(c // 2, c)
        with torch.no_grad():
            self.fc1.bias.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))[:, :, None, None]


def user_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        InlineSE(16),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        InlineSE(32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, len(CLASSES)),
    ).eval()


def install(qtbot, window, model: nn.Module, size: int = 64) -> None:
    predictor = Predictor(
        model, device="cpu", class_names=CLASSES, preprocess=Preprocess(crop_size=size, resize_size=size)
    )
    old = window.model_info
    window.worker_thread.worker.set_predictor(predictor, describe_model(predictor))
    qtbot.waitUntil(lambda: window.model_info is not old, timeout=20_000)


def test_timm_model_panel_lists_kinds(qtbot, window, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    install(qtbot, window, timm.create_model("ecaresnet26t", pretrained=False, num_classes=3).eval())
    info = window.model_info
    assert [b["kind"] for b in info.attention] == ["eca"] * 8
    assert all(b["found_by"] == "type" and b["channels"] for b in info.attention)
    assert [n for n, _ in info.blocks] == [b["name"] for b in info.attention]
    text = window.model_panel.toPlainText()
    assert "layer1.0.se" in text and "eca" in text and "type" in text
    window.open_source(str(SAMPLES / "camera.png"))
    wait_draws(qtbot, window, 1)
    assert len(window.last_result.excitations) == 8
    assert window.save_screenshot(str(tmp_path / "timm.png"))


def test_user_model_blocks_found_by_behaviour(qtbot, window, tmp_path):
    install(qtbot, window, user_model())
    info = window.model_info
    assert [(b["name"], b["kind"], b["channels"], b["found_by"]) for b in info.attention] == [
        ("2", "unknown-gate", 16, "behaviour"),
        ("5", "unknown-gate", 32, "behaviour"),
    ]
    assert "behaviour probe: 2 gate block(s)" in info.probe
    assert "behaviour" in window.model_panel.toPlainText()
    window.open_source(str(SAMPLES / "camera.png"))
    wait_draws(qtbot, window, 1)
    g = window.last_result.excitations["5"]
    seen = np.isfinite(g)  # NaN: a channel the ReLU zeroed everywhere, whose gate cannot be observed
    assert g.shape == (32,) and seen.sum() >= 16
    assert ((g[seen] > 0) & (g[seen] < 1)).all()  # sigmoid gates, read back as output/input
    assert window.save_screenshot(str(tmp_path / "user.png"))
