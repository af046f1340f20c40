"""A coloured one-line message above the content (model warnings, errors) with up to two actions."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget


class Banner(QFrame):
    """A coloured line above the content with an optional action button."""

    def __init__(self, color: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet(f"QFrame{{background:{color};border-radius:4px}} QLabel{{color:#101010}}")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 4, 10, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.buttons: list[QPushButton] = []
        self._callbacks: list = []
        for i in range(2):
            b = QPushButton()
            b.setVisible(False)
            b.clicked.connect(lambda _=False, k=i: self._callbacks[k]() if k < len(self._callbacks) else None)
            self.buttons.append(b)
        self.button = self.buttons[0]
        self.close_btn = QPushButton("✕")
        self.close_btn.setFlat(True)
        self.close_btn.setFixedWidth(24)
        self.close_btn.clicked.connect(self.hide)
        lay.addWidget(self.label, 1)
        for b in self.buttons:
            lay.addWidget(b)
        lay.addWidget(self.close_btn)
        self.hide()

    def show_text(self, text: str, *actions: tuple[str, object]) -> None:
        """Show ``text`` with up to two (button label, callback) actions."""
        self.label.setText(text)
        self._callbacks = [cb for _label, cb in actions]
        for i, b in enumerate(self.buttons):
            b.setVisible(i < len(actions))
            if i < len(actions):
                b.setText(actions[i][0])
        self.show()
