"""Choose the camera index and resolution; the choice persists in QSettings."""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QSpinBox, QWidget

RESOLUTIONS = [
    ("Camera default", 0, 0),
    ("640 × 480", 640, 480),
    ("1280 × 720", 1280, 720),
    ("1920 × 1080", 1920, 1080),
]


class CameraDialog(QDialog):
    def __init__(self, settings: QSettings, cameras: list[int], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Camera")
        self.settings = settings
        form = QFormLayout(self)
        self.index = QSpinBox()
        self.index.setRange(0, 63)
        self.index.setValue(settings.value("camera/index", cameras[0] if cameras else 0, type=int))
        found = ", ".join(map(str, cameras)) if cameras else "none found (you can still try an index)"
        form.addRow("Device index:", self.index)
        form.addRow("", QLabel(f"Detected: {found}"))
        self.resolution = QComboBox()
        for label, w, h in RESOLUTIONS:
            self.resolution.addItem(label, (w, h))
        cur = (settings.value("camera/width", 0, type=int), settings.value("camera/height", 0, type=int))
        for i in range(self.resolution.count()):
            if tuple(self.resolution.itemData(i)) == cur:
                self.resolution.setCurrentIndex(i)
        form.addRow("Resolution:", self.resolution)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def accept(self) -> None:
        w, h = self.resolution.currentData()
        self.settings.setValue("camera/index", self.index.value())
        self.settings.setValue("camera/width", w)
        self.settings.setValue("camera/height", h)
        super().accept()
