"""The selected channel's feature map, large, before and after its gate (shared colour scale)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg


class ChannelView(pg.GraphicsLayoutWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent=parent)
        self.label = self.addLabel(
            "Click a bar to select a channel", row=0, col=0, colspan=2, color="#cfcfcf"
        )
        lut = pg.colormap.get("inferno").getLookupTable(nPts=256)
        self.images = []
        for col, title in enumerate(("before the gate", "after (× gate, same scale)")):
            vb = self.addViewBox(row=1, col=col, lockAspect=True, invertY=True, enableMouse=False)
            vb.setMenuEnabled(False)
            img = pg.ImageItem(axisOrder="row-major")
            img.setLookupTable(lut)
            vb.addItem(img)
            self.addLabel(title, row=2, col=col, color="#9a9a9a", size="8pt")
            self.images.append(img)

    def show_channel(self, title: str, before: np.ndarray, after: np.ndarray, gate: float) -> None:
        lo, hi = float(before.min()), float(before.max())
        levels = (lo, hi if hi > lo else lo + 1e-6)
        for img, m in zip(self.images, (before, after), strict=True):
            img.setImage(np.asarray(m, np.float32), autoLevels=False, levels=levels)
        self.label.setText(f"{title} · gate {gate:.3f}")

    def clear(self, text: str = "Click a bar to select a channel") -> None:
        for img in self.images:
            img.clear()
        self.label.setText(text)
