"""Fixtures for the app tests: real widgets offscreen, a real (small-input) VGG16-SE, real OpenCV video."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sevgg_gui.bundled import SAMPLES  # noqa: F401  (the package's own copy, as installed)
from sevgg_gui.images import Preprocess
from sevgg_gui.inference import Predictor
from sevgg_gui.models.vgg import VGG16_SE

CLASSES = ["cat", "dog", "car"]


@pytest.fixture(scope="session")
def small_model() -> VGG16_SE:
    torch.manual_seed(0)
    return VGG16_SE(num_classes=3).eval()


def make_predictor(model: VGG16_SE) -> Predictor:
    return Predictor(
        model, device="cpu", class_names=CLASSES, preprocess=Preprocess(crop_size=32, resize_size=36)
    )


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    """A real MJPG video: 40 frames of 96x64 with moving shapes, written by OpenCV."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (96, 64))
    assert writer.isOpened()
    for i in range(40):
        frame = np.zeros((64, 96, 3), np.uint8)
        frame[:, :, 1] = (i * 6) % 255
        cv2.circle(frame, (10 + 2 * i, 32), 12, (0, 0, 255), -1)
        cv2.rectangle(frame, (60, 5), (90, 5 + i), (255, 255, 255), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture()
def window(qtbot, tmp_path, small_model):
    """The real main window with the small-input VGG16-SE installed (no 224x224 model load)."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from sevgg_gui.app.main import _style
    from sevgg_gui.app.window import MainWindow
    from sevgg_gui.app.worker import describe_model

    _style(QApplication.instance())
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings, load_model=False, device="cpu")
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    predictor = make_predictor(small_model)
    # Poll on the main thread: qtbot.waitSignal on a signal emitted by the worker thread would stop
    # its timeout timer from that thread.
    win.worker_thread.worker.set_predictor(predictor, describe_model(predictor))
    qtbot.waitUntil(lambda: win.model_info is not None, timeout=20_000)
    yield win
    win.close()
    # Free the Qt wrappers now, while QApplication is alive, not in interpreter finalisation.
    import gc

    win.deleteLater()
    QApplication.processEvents()
    gc.collect()
