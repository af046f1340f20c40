"""All excitation charts with their options: mode, sort order, running mean, block selection.

Holds the per-block running means (view state, exponential moving average) so "difference from
mean" shows what this frame excites more or less than usual.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .excitation_chart import MODE_LABELS, MODES, ExcitationChart, chart_series
from .plot_style import chart_column

EXACT_HALF = "every gate is exactly 0.5 after the ImageNet transfer"


def untrained_text(reason: str, mode: str) -> tuple[str, str]:
    """The chart header for flat gates, and its button, in the given view."""
    if mode == "squeeze":
        return f"SE gates are untrained: showing channel means (squeeze view), as {reason}.", "Show gates"
    return (
        f"SE gates are untrained: {reason}, so the bars are flat. "
        "The squeeze view shows the channel means the gates will learn from.",
        "Show squeeze view",
    )


@dataclass
class ChartOptions:
    mode: str = "gates"
    sort: bool = False
    show_mean: bool = True
    ema_alpha: float = 0.1

    def as_dict(self) -> dict:
        return asdict(self)


class ChartsPanel(QWidget):
    channelSelected = Signal(str, int)
    interventionRequested = Signal(str, int, str)
    blockSelected = Signal(str)
    optionsChanged = Signal()
    hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None, options: ChartOptions | None = None) -> None:
        super().__init__(parent)
        self.options = options or ChartOptions()
        self.charts: list[ExcitationChart] = []
        self.means: dict[str, np.ndarray] = {}
        self.selected_block: str | None = None
        self.last_result = None
        # Flat gates (untrained): the view switches to squeeze by itself, once per model, unless the
        # user chose a view (--mode, or switching back, which sticks for that model).
        self.mode_pinned = False
        self.flat_reason: str | None = None
        self._auto_from: str | None = None  # the view before an automatic switch to squeeze
        self._model_key: str | None = None
        self._kept_gates: set[str | None] = set()  # models whose user switched back from the auto view
        self._spatial_only = False
        self.intervention_note: str | None = None  # why mute / boost are off (a runtime backend)
        self.squeeze_note: str | None = None  # why the squeeze view is off (a runtime backend)
        self._squeeze_from: str | None = None  # the view the user chose before set_squeeze_note left it

        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        self.mode_box = QComboBox()
        for m in MODES:
            self.mode_box.addItem(MODE_LABELS[m], m)
        self.mode_box.setCurrentIndex(MODES.index(self.options.mode) if self.options.mode in MODES else 0)
        self.mode_box.setToolTip(
            "What the bars show: the gate s, the squeeze z (channel means), or s minus its running mean"
        )
        self.sort_box = QCheckBox("Sort by value")
        self.sort_box.setChecked(self.options.sort)
        self.mean_box = QCheckBox("Running mean")
        self.mean_box.setChecked(self.options.show_mean)
        self.profile_box = QComboBox()
        self.profile_box.setToolTip("Overlay a class's mean gates (pink line) from a `sevgg analyze` file")
        self.profile_box.setVisible(False)
        self.profiles: dict | None = None
        self.profile_index = -1  # class shown as a profile line; read once per change, not per frame
        self.reset_btn = QPushButton("Reset interventions")
        self.reset_btn.setEnabled(False)
        for w in (QLabel("Show:"), self.mode_box, self.sort_box, self.mean_box, self.profile_box):
            bar.addWidget(w)
        bar.addStretch(1)
        self.interventions_label = QLabel("")
        bar.addWidget(self.interventions_label)
        bar.addWidget(self.reset_btn)

        self.notice = QFrame()
        self.notice.setStyleSheet("QFrame{background:#3a3320;border-radius:4px} QLabel{color:#ffd27a}")
        nl = QHBoxLayout(self.notice)
        nl.setContentsMargins(8, 4, 8, 4)
        self.notice_label = QLabel("")
        self.notice_label.setWordWrap(True)
        self.notice_btn = QPushButton("Show squeeze view")
        nl.addWidget(self.notice_label, 1)
        nl.addWidget(self.notice_btn)
        self.notice.setVisible(False)

        self.chart_box, self.scroll = chart_column()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.notice)
        layout.addWidget(self.scroll, 1)

        self.mode_box.currentIndexChanged.connect(self._options_from_ui)
        self.sort_box.toggled.connect(self._options_from_ui)
        self.mean_box.toggled.connect(self._options_from_ui)
        self.profile_box.currentIndexChanged.connect(self._options_from_ui)
        self.notice_btn.clicked.connect(
            lambda: self.set_mode("gates" if self.options.mode == "squeeze" else "squeeze")
        )
        self.reset_btn.clicked.connect(lambda: self.interventionRequested.emit("", -1, "reset"))

    # ------------------------------------------------------------------ model / options
    def set_blocks(
        self,
        blocks: list[tuple[str, int]],
        untrained: bool,
        spatial_only: bool = False,
        key: str | None = None,
    ) -> None:
        """New model: one chart per gated block. ``untrained`` (gates exactly 0.5) switches to the
        squeeze view now; the worker's first result may still flag random gates as flat."""
        if self._auto_from is not None:  # the automatic view belonged to the previous model
            self._set_mode_quietly(self._auto_from)
        if self._squeeze_from is not None:  # so did the switch away from a squeeze view it lacked
            self._set_mode_quietly(self._squeeze_from)
            self._squeeze_from = None
        self._auto_from, self.flat_reason, self._model_key = None, None, key
        self._enable_squeeze(None)  # a new model has squeezes unless set_squeeze_note says otherwise
        for c in self.charts:
            c.setParent(None)
            c.deleteLater()
        self.charts = []
        self.means.clear()
        for i, (name, channels) in enumerate(blocks, 1):
            chart = ExcitationChart(
                name, f"{i} · {channels}" if len(blocks) > 5 else f"SE{i} · {channels}", channels
            )
            chart.setToolTip(
                f"{name}: {channels} channels. Click a bar to select, right-click to mute/boost."
            )
            chart.intervention_note = self.intervention_note
            chart.channelSelected.connect(self.channelSelected)
            chart.interventionRequested.connect(self.interventionRequested)
            chart.hovered.connect(self.hovered)
            self.chart_box.addWidget(chart, 1)
            self.charts.append(chart)
        self._spatial_only = spatial_only
        if untrained and blocks:
            self.gates_flat(EXACT_HALF)
        self._update_notice()
        if blocks:
            self.select_block(
                blocks[0][0] if self.selected_block not in dict(blocks) else self.selected_block
            )

    def set_profiles(self, profiles: dict) -> None:
        """Class profiles from `sevgg analyze` (``load_class_profiles``); choose one in the combo box."""
        self.profiles = profiles
        self.profile_box.blockSignals(True)
        self.profile_box.clear()
        # Item data is never None: PySide6 6.12 drops a reference to None when currentData() returns
        # a stored None, and Python 3.11's None is not immortal.
        self.profile_box.addItem("No class profile", -1)
        first = next(iter(profiles["blocks"].values()), None)
        counts = first["count"] if first is not None else None
        for i, name in enumerate(profiles["classes"]):
            if counts is None or counts[i] > 0:  # classes the analysed data had images of
                self.profile_box.addItem(f"Profile: {name}", i)
        self.profile_box.setCurrentIndex(1 if self.profile_box.count() > 1 else 0)
        self.profile_box.blockSignals(False)
        self.profile_box.setVisible(True)
        self._options_from_ui()

    def _profile_for(self, block: str, channels: int) -> np.ndarray | None:
        k = self.profile_index
        if self.profiles is None or k < 0 or self.options.mode != "gates":
            return None
        entry = self.profiles["blocks"].get(block)
        if entry is None or entry["mean"].shape[1] != channels:
            return None
        return entry["mean"][k]

    def set_mode(self, mode: str) -> None:
        self.mode_box.setCurrentIndex(MODES.index(mode))

    @property
    def preferred_mode(self) -> str:
        """The view the user chose (what settings keep), not an automatic switch for flat gates."""
        return self._auto_from or self._squeeze_from or self.options.mode

    @Slot(bool, float)
    def on_gates_judged(self, flat: bool, spread: float) -> None:
        """The worker's verdict on the new model's first frame."""
        if flat and self.flat_reason is None:
            self.gates_flat(f"they barely differ across channels (std {spread:.3f} on the 0–1 scale)")

    def gates_flat(self, reason: str) -> None:
        """This model's gates are flat: show the squeeze view instead, and the header says why."""
        self.flat_reason = reason
        if (
            self.squeeze_note is None
            and not self.mode_pinned
            and self._model_key not in self._kept_gates
            and self.options.mode == "gates"
        ):
            self._auto_from = self.options.mode
            self._set_mode_quietly("squeeze")
        self._update_notice()

    def _set_mode_quietly(self, mode: str) -> None:
        self.mode_box.blockSignals(True)
        self.mode_box.setCurrentIndex(MODES.index(mode))
        self.mode_box.blockSignals(False)
        self.options.mode = mode

    def _update_notice(self) -> None:
        if self._spatial_only:
            self.notice_label.setText(
                "This model's attention is spatial only (no channel gates): its maps are overlaid on the "
                "input. Keys 1–9 choose which block's map."
            )
            self.notice_btn.setVisible(False)
            self.notice.setVisible(True)
            return
        shown = self.flat_reason is not None and self.options.mode in ("gates", "squeeze")
        if shown and self.squeeze_note is not None:  # no squeeze view to offer
            self.notice_label.setText(f"SE gates are untrained: {self.flat_reason}, so the bars are flat.")
        elif shown:
            text, button = untrained_text(self.flat_reason, self.options.mode)
            self.notice_label.setText(text)
            self.notice_btn.setText(button)
        self.notice_btn.setVisible(self.squeeze_note is None)
        self.notice.setVisible(shown)

    def _options_from_ui(self) -> None:
        if self.mode_box.currentData() != self.options.mode:
            self._squeeze_from = None  # the user chose a view: it is the preferred one now
        self.options.mode = self.mode_box.currentData()
        if self._auto_from is not None and self.options.mode != "squeeze":
            self._auto_from = None  # the user left the automatic view: it stays left for this model
            self._kept_gates.add(self._model_key)
        self.profile_index = int(self.profile_box.currentData() if self.profile_box.count() else -1)
        self.options.sort = self.sort_box.isChecked()
        self.options.show_mean = self.mean_box.isChecked()
        self._update_notice()
        self.optionsChanged.emit()
        if self.last_result is not None:
            self.update_result(self.last_result, update_means=False)

    def select_block(self, name: str) -> None:
        self.selected_block = name
        for c in self.charts:
            c.getPlotItem().getAxis("left").setPen("#ffaa28" if c.block == name else "#8a8a8a")
            c.setStyleSheet("border: 1px solid #ffaa28;" if c.block == name else "")
        self.blockSelected.emit(name)

    def select_channel(self, block: str, channel: int | None) -> None:
        for c in self.charts:
            c.select(channel if c.block == block else None)

    def set_intervention_note(self, note: str | None) -> None:
        """``note``: why this model takes no interventions (a runtime backend); None: it does."""
        self.intervention_note = note
        for c in self.charts:
            c.intervention_note = note
        self.reset_btn.setToolTip(note or "Undo every mute / boost")

    def set_squeeze_note(self, note: str | None) -> None:
        """``note``: why this model has no squeezes (a runtime backend), None: it has. Without them the
        squeeze view is greyed out (``note`` as its tooltip) and the gates show instead; the view the
        user chose comes back with the next model that has squeezes."""
        self._enable_squeeze(note)
        if note is not None and self.options.mode == "squeeze":
            self._squeeze_from = "squeeze"  # still the preferred view (settings), restored by set_blocks
            self._set_mode_quietly("gates")
            if self.last_result is not None:
                self.update_result(self.last_result, update_means=False)
        self._update_notice()

    def _enable_squeeze(self, note: str | None) -> None:
        self.squeeze_note = note
        item = self.mode_box.model().item(MODES.index("squeeze"))
        item.setEnabled(note is None)
        item.setToolTip(note or "")

    def set_interventions(self, text: str) -> None:
        self.interventions_label.setText(text)
        self.reset_btn.setEnabled(bool(text))

    # ------------------------------------------------------------------ per frame
    def update_result(self, result, update_means: bool = True) -> None:
        self.last_result = result
        a = self.options.ema_alpha
        if update_means and not result.meta.get("rerun"):
            # Both running means advance every frame, so switching views is seamless.
            for kind, source in (("gates", result.excitations), ("squeeze", result.squeezes)):
                for block, values in source.items():
                    mean = self.means.get(f"{kind}:{block}")
                    fresh = mean is None or mean.shape != values.shape
                    self.means[f"{kind}:{block}"] = values.copy() if fresh else (1 - a) * mean + a * values
        squeeze = self.options.mode == "squeeze"
        source = result.squeezes if squeeze else result.excitations
        for chart in self.charts:
            values = source.get(chart.block)
            if values is None:
                continue
            mean = self.means.get(f"{'squeeze' if squeeze else 'gates'}:{chart.block}")
            series = chart_series(values, mean, self.options.mode, self.options.sort)
            chart.show_series(
                values, series, self.options.show_mean, self._profile_for(chart.block, chart.channels)
            )
