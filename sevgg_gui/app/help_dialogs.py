"""Help → Keyboard shortcuts and Help → About: non-modal boxes, so the live view keeps running."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

SHORTCUTS = [
    ("Space", "pause / resume"),
    ("← / →", "previous / next frame or image"),
    ("O", "open an image, video or folder"),
    ("Ctrl+K", "open a checkpoint"),
    ("C", "start the camera"),
    ("Ctrl+V", "classify the image on the clipboard"),
    ("S", "save a screenshot of the window"),
    ("Ctrl+E", "save the current excitations (CSV / NPZ)"),
    ("R", "start / stop recording the session"),
    ("1 – 9", "select SE block 1–9"),
    ("Esc", "clear the selected channel"),
    ("F", "full screen"),
    ("?", "this list"),
]


def show_shortcuts(parent: QWidget) -> QMessageBox:
    rows = "".join(f"<tr><td><b>{k}</b></td><td>&nbsp;{d}</td></tr>" for k, d in SHORTCUTS)
    box = QMessageBox(parent)
    box.setWindowTitle("Keyboard shortcuts")
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setText(f"<table>{rows}</table>")
    box.open()
    return box


def show_about(parent: QWidget) -> QMessageBox:
    import cv2
    import pyqtgraph
    import PySide6
    import torch
    import torchvision

    from .. import __version__

    box = QMessageBox(parent)
    box.setWindowTitle("About sevgg-gui")
    box.setTextFormat(Qt.TextFormat.RichText)
    box.setText(
        f"<h3>sevgg-gui {__version__}</h3><p>Squeeze-and-Excitation attention in VGG16-SE, live.</p>"
        f"<p>torch {torch.__version__} · torchvision {torchvision.__version__} · "
        f"PySide6 {PySide6.__version__} · pyqtgraph {pyqtgraph.__version__} · OpenCV {cv2.__version__}</p>"
    )
    box.open()
    return box
