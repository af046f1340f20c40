"""Model menu entries for models from elsewhere: the user's own code (Open model code…, remembered in
the settings), a timm model by name, a Hugging Face model folder. The dialogs only collect a spec; the
window hands it to the worker, which loads it off the UI thread (one line on failure, model kept)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu

from ..model_specs import is_model_folder

if TYPE_CHECKING:  # pragma: no cover
    from .window import MainWindow

CODE_KEY, WEIGHTS_KEY = "model_code/spec", "model_code/weights"


def functions_in(path: str | Path) -> list[str]:
    """Top-level function names of a Python file, read with ``ast`` (nothing is run to list them);
    ``build``-like names first."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return []
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    return sorted(names, key=lambda n: (not n.startswith(("build", "create", "make", "get")), names.index(n)))


def remember(win: MainWindow, code: str, weights: str | None) -> None:
    win.settings.setValue(CODE_KEY, code)
    win.settings.setValue(WEIGHTS_KEY, weights or "")
    update_reopen(win)


def remembered(win: MainWindow) -> tuple[str | None, str | None]:
    code = str(win.settings.value(CODE_KEY, "") or "") or None
    weights = str(win.settings.value(WEIGHTS_KEY, "") or "") or None
    return code, weights


def load_code(win: MainWindow, code: str, weights: str | None) -> None:
    remember(win, code, weights)
    win.load_model(weights, model_code=code)


def add_origin_actions(win: MainWindow, menu: QMenu) -> None:
    menu.addAction("Open model code (FILE.py:FUNCTION)…", lambda: open_model_code_dialog(win))
    win.reopen_code_action = QAction("Reopen model code", win)
    win.reopen_code_action.triggered.connect(lambda: load_code(win, *_require(remembered(win))))
    menu.addAction(win.reopen_code_action)
    update_reopen(win)
    menu.addAction("Open model folder (config.json + weights)…", lambda: open_model_folder_dialog(win))
    menu.addAction("timm model by name…", lambda: timm_name_dialog(win))


def _require(pair: tuple[str | None, str | None]) -> tuple[str, str | None]:
    code, weights = pair
    return code or "", weights


def update_reopen(win: MainWindow) -> None:
    code, weights = remembered(win)
    action = win.reopen_code_action
    action.setEnabled(code is not None)
    if code:
        target, _, func = code.rpartition(":")
        extra = f" + {Path(weights).name}" if weights else ""
        action.setText(f"Reopen model code: {Path(target).name}:{func}{extra}")
    else:
        action.setText("Reopen model code")


def open_model_code_dialog(win: MainWindow) -> None:
    """Pick a .py file, one of its functions, then (optionally) a weights file for it."""
    last, _weights = remembered(win)
    start = str(Path(last.rpartition(":")[0]).parent) if last else win._last_dir()
    path, _ = QFileDialog.getOpenFileName(win, "Open model code", start, "Python (*.py);;All files (*)")
    if path:
        open_model_code_file(win, path)


def open_model_code_file(win: MainWindow, path: str, weights: str | None = None) -> None:
    """A chosen or dropped .py file: ask which function builds the model, and (unless dropped with
    it) for its weights."""
    _last, last_weights = remembered(win)
    names = functions_in(path) or ["build"]
    func, ok = QInputDialog.getItem(
        win,
        "Model code",
        f"Function in {Path(path).name} that returns the model (it is run):",
        names,
        0,
        True,
    )
    if not ok or not func.strip():
        return
    if weights:
        load_code(win, f"{path}:{func.strip()}", weights)
        return
    weights, _ = QFileDialog.getOpenFileName(
        win,
        f"Weights for {func.strip()}() — Cancel: use the weights it builds",
        str(Path(last_weights).parent) if last_weights else str(Path(path).parent),
        "Checkpoints (*.pth *.pt *.ckpt *.safetensors *.bin);;All files (*)",
    )
    load_code(win, f"{path}:{func.strip()}", weights or None)


def open_model_folder_dialog(win: MainWindow) -> None:
    path = QFileDialog.getExistingDirectory(win, "Open model folder (config.json + weights)", win._last_dir())
    if path:
        if not is_model_folder(path):
            win.show_error(f"{Path(path).name}: no config.json with model.safetensors / pytorch_model.bin")
            return
        win.load_model(path)


def timm_name_dialog(win: MainWindow) -> None:
    name, ok = QInputDialog.getText(
        win,
        "timm model",
        "timm model name, optionally .tag, :random for random weights, or hf-hub:ORG/NAME\n"
        "(e.g. seresnet50.a1_in1k, ecaresnet50d, efficientnet_b0:random, hf-hub:timm/seresnet50.a1_in1k):",
        text=str(win.settings.value("model/timm_name", "seresnet50.a1_in1k")),
    )
    name = name.strip().removeprefix("timm:")
    if ok and name:
        win.settings.setValue("model/timm_name", name)
        win.load_model(f"timm:{name}")
