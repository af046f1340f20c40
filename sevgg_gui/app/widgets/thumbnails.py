"""Feature maps of the top-N channels of one block, before and after the gate, in ONE image item.

Each column is one channel; both rows share that channel's scale, so the gate's dimming is visible
(after = before x gate).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg


def tile_maps(before: np.ndarray, after: np.ndarray, channels: np.ndarray, gap: int = 1) -> np.ndarray:
    """(C,h,w) x 2 -> (2h+gap, N(w+gap)) image, each column normalised by its 'before' range."""
    n = len(channels)
    h, w = before.shape[1:]
    out = np.full((2 * h + gap, n * (w + gap) - gap if n else 1), np.nan, np.float32)
    for j, c in enumerate(channels):
        b, a = before[c], after[c]
        lo, hi = float(b.min()), float(b.max())
        scale = 1.0 / (hi - lo) if hi > lo else 0.0
        x0 = j * (w + gap)
        out[:h, x0 : x0 + w] = (b - lo) * scale
        out[h + gap :, x0 : x0 + w] = (a - lo) * scale
    return out


class FeatureThumbnails(pg.GraphicsLayoutWidget):
    channelSelected = None  # set by the window (click -> select)

    def __init__(self, parent=None, top_n: int = 12) -> None:
        super().__init__(parent=parent)
        self.top_n = top_n
        self.label = self.addLabel("Feature maps", row=0, col=0, color="#cfcfcf", size="9pt")
        self.vb = self.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMouse=False)
        self.vb.setMenuEnabled(False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(pg.colormap.get("viridis").getLookupTable(nPts=256))
        self.vb.addItem(self.image)
        self.channels: np.ndarray = np.zeros(0, int)
        self._cell: tuple[int, int] = (1, 1)
        self.unavailable: str | None = None  # why this model has no feature maps (a runtime backend)
        self.setMinimumHeight(110)

    def set_unavailable(self, note: str | None) -> None:
        """``note``: one line shown instead of the maps (the model records none); None: maps again."""
        self.unavailable = note
        # Folded to its one line while there is nothing to show; the charts take the height.
        self.setMinimumHeight(0 if note else 110)
        self.setMaximumHeight(34 if note else 16_777_215)  # QWIDGETSIZE_MAX
        self.vb.setVisible(not note)
        if note:
            self.image.clear()
            self.label.setText(note)
            self.setToolTip(note)

    def update_maps(self, title: str, gates: np.ndarray, maps: tuple[np.ndarray, np.ndarray] | None) -> None:
        if self.unavailable:
            return
        if maps is None:
            self.image.clear()
            self.label.setText(f"{title}: no feature maps recorded for this frame")
            return
        before, after = maps
        self.channels = np.argsort(-np.asarray(gates), kind="stable")[: self.top_n]
        img = tile_maps(before, after, self.channels)
        self._cell = (before.shape[1], before.shape[2])
        self.image.setImage(np.nan_to_num(img, nan=0.0), autoLevels=False, levels=(0.0, 1.0))
        self.label.setText(
            f"{title}: top {len(self.channels)} channels by gate — top row before the gate, bottom after"
        )
        self.setToolTip("Channels, left to right: " + ", ".join(str(int(c)) for c in self.channels))
