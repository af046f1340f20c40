"""File → Open bundled samples opens the package's own photos (package data, see sevgg_gui/bundled.py)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction

import sevgg_gui
from sevgg_gui.bundled import DEMO_CLIP, SAMPLES

from .test_window import wait_draws


def test_bundled_files_live_inside_the_package():
    package = Path(sevgg_gui.__file__).parent
    assert SAMPLES.is_relative_to(package) and DEMO_CLIP.is_relative_to(package)
    assert (SAMPLES / "LICENSES.md").is_file() and len(list(SAMPLES.glob("*.png"))) == 4
    assert DEMO_CLIP.is_file()


def test_open_bundled_samples_menu(qtbot, window):
    (action,) = [a for a in window.findChildren(QAction) if a.text() == "Open bundled samples"]
    action.trigger()
    wait_draws(qtbot, window, 1)
    assert Path(window.source_spec) == SAMPLES
    assert Path(window.last_result.meta["origin"]).parent == SAMPLES
