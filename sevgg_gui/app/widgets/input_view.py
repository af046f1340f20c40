"""The current frame, the model's centre crop outlined, and an optional heat overlay of one channel."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QPen
from PySide6.QtWidgets import QGraphicsRectItem


class InputView(pg.GraphicsLayoutWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent=parent)
        self.vb = self.addViewBox(lockAspect=True, invertY=True, enableMouse=False)
        self.vb.setMenuEnabled(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.overlay.setLookupTable(pg.colormap.get("inferno").getLookupTable(nPts=256, alpha=False))
        self.overlay.setOpacity(0.55)
        self.overlay.setVisible(False)
        self.crop = QGraphicsRectItem()
        pen = QPen(Qt.GlobalColor.white)
        pen.setStyle(Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        self.crop.setPen(pen)
        self.text = pg.TextItem(
            "Drop an image, video, folder or checkpoint here", color=(200, 200, 200), anchor=(0.5, 0.5)
        )
        for item in (self.image, self.overlay, self.crop, self.text):
            self.vb.addItem(item)
        self.text.setPos(0.5, 0.5)
        self.vb.setRange(QRectF(0, 0, 1, 1))
        self._shape: tuple[int, int] | None = None
        self.setMinimumSize(240, 180)

    def set_frame(self, rgb: np.ndarray, crop_box: tuple[int, int, int, int] | None) -> None:
        self.text.setVisible(False)
        self.image.setImage(rgb, autoLevels=False, levels=(0, 255))
        h, w = rgb.shape[:2]
        if self._shape != (h, w):
            self._shape = (h, w)
            self.vb.setRange(QRectF(0, 0, w, h), padding=0.01)
        if crop_box is not None:
            top, left, ch, cw = crop_box
            self.crop.setRect(QRectF(left, top, cw, ch))
            self._crop = (top, left, ch, cw)

    def set_overlay(self, fmap: np.ndarray | None) -> None:
        """Show a (h, w) feature map stretched over the model's crop; None hides it."""
        if fmap is None or not hasattr(self, "_crop"):
            self.overlay.setVisible(False)
            return
        m = np.asarray(fmap, dtype=np.float32)
        lo, hi = float(m.min()), float(m.max())
        self.overlay.setImage(m, autoLevels=False, levels=(lo, hi if hi > lo else lo + 1e-6))
        top, left, ch, cw = self._crop
        self.overlay.setRect(QRectF(left, top, cw, ch))
        self.overlay.setVisible(True)

    def show_message(self, text: str) -> None:
        self.text.setText(text)
        self.text.setVisible(True)
