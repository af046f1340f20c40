"""Top-k predictions as labelled horizontal bars, painted directly (cheap, crisp, readable)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget


class PredictionsView(QWidget):
    rowClicked = Signal(int)  # rank (0 = top-1) of a clicked prediction

    def __init__(self, parent: QWidget | None = None, rows: int = 5) -> None:
        super().__init__(parent)
        self.rows = rows
        self.items: list[tuple[str, float]] = []
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(24 * rows + 8)
        self.setToolTip("Top-5 predictions of the current frame")

    def sizeHint(self) -> QSize:
        return QSize(360, 24 * self.rows + 8)

    def set_predictions(self, items: list[tuple[str, float]]) -> None:
        self.items = items[: self.rows]
        self.update()

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt override
        row = int((event.position().y() - 4) // ((self.height() - 8) / self.rows))
        if 0 <= row < len(self.items) and event.button() == Qt.MouseButton.LeftButton:
            self.rowClicked.emit(row)
        super().mousePressEvent(event)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt override
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor(30, 31, 34))
        w = self.width()
        row_h = (self.height() - 8) / self.rows
        label_w = min(190.0, w * 0.45)
        pct_w = 58.0
        font = QFont(self.font())
        for i in range(self.rows):
            y = 4 + i * row_h
            label, prob = self.items[i] if i < len(self.items) else ("", 0.0)
            font.setBold(i == 0)
            p.setFont(font)
            p.setPen(QColor(225, 225, 225) if label else QColor(110, 110, 110))
            text = p.fontMetrics().elidedText(label or "—", Qt.TextElideMode.ElideRight, int(label_w - 8))
            p.drawText(QRectF(6, y, label_w - 8, row_h), Qt.AlignmentFlag.AlignVCenter, text)
            bar_w = max(0.0, (w - label_w - pct_w - 6) * prob)
            p.fillRect(
                QRectF(label_w, y + row_h * 0.2, w - label_w - pct_w - 6, row_h * 0.6), QColor(50, 52, 58)
            )
            p.fillRect(
                QRectF(label_w, y + row_h * 0.2, bar_w, row_h * 0.6),
                QColor(255, 170, 40) if i == 0 else QColor(86, 156, 214),
            )
            p.setPen(QColor(225, 225, 225))
            p.drawText(
                QRectF(w - pct_w, y, pct_w - 6, row_h),
                int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight),
                f"{100 * prob:.1f}%" if label else "",
            )
        p.end()
