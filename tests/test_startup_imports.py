"""Start-up stays lean: what each entry point imports, checked in fresh interpreters.

The app shows its window before torch has loaded (torch loads on the worker thread), and the path from
a checkpoint to the first prediction imports neither torchvision nor torch._dynamo (~1 s each here).
The time itself is measured in benchmarks/bench_startup.py; these tests pin the causes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (offscreen Qt); its stdout."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _modules_after(code: str) -> dict:
    probe = (
        code
        + "\nimport json, sys\nm = sys.modules\n"
        + "print(json.dumps({k: k in m for k in ('torch', 'torchvision', 'torch._dynamo', 'PySide6')}))"
    )
    return json.loads(_python(probe).strip().splitlines()[-1])


def test_window_is_built_and_shown_without_torch(tmp_path: Path) -> None:
    mods = _modules_after(
        "from PySide6.QtCore import QSettings\n"
        "from PySide6.QtWidgets import QApplication\n"
        "app = QApplication([])\n"
        "from sevgg_gui.app.window import MainWindow\n"
        f"win = MainWindow(QSettings({str(tmp_path / 's.ini')!r}, QSettings.Format.IniFormat), load_model=False)\n"
        "win.show(); app.processEvents(); win.close()\n"
    )
    assert mods["PySide6"] and not mods["torch"]


def test_checkpoint_model_build_and_first_forward_skip_dynamo_and_torchvision() -> None:
    mods = _modules_after(
        "import torch\n"
        "from sevgg_gui.models.vgg import VGG16_SE\n"
        "from sevgg_gui.inference import Predictor\n"
        "from sevgg_gui.images import Preprocess\n"
        "with torch.device('meta'):\n"
        "    m = VGG16_SE(num_classes=3)\n"  # how load_checkpoint builds it before assigning weights
        "real = VGG16_SE(num_classes=3)\n"
        "p = Predictor(real, device='cpu', preprocess=Preprocess(crop_size=32, resize_size=36))\n"
        "import numpy as np\n"
        "p.predict(np.zeros((40, 40, 3), np.uint8))\n"
    )
    assert mods["torch"] and not mods["torchvision"] and not mods["torch._dynamo"]


def test_torchvision_se_is_recorded_when_torchvision_is_imported_after_the_recorder() -> None:
    out = _python(
        "from sevgg_gui.recorder import ExcitationRecorder\n"
        "import torch, torchvision\n"
        "m = torchvision.models.mobilenet_v3_small(num_classes=4).eval()\n"
        "with ExcitationRecorder(m) as rec:\n"
        "    m(torch.rand(1, 3, 64, 64))\n"
        "print(len(rec.excitations))\n"
    )
    assert int(out.split()[-1]) == 9  # MobileNetV3-Small has nine SqueezeExcitation blocks
