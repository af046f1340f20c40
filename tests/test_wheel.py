"""Installed from its wheel (no clone around it), the package carries its embedded default: the sample
photos with their licences and the demo clip, and `sevgg-gui` opens on them.

Offline and quick (~10 s): the wheel is built from a copy of the sources with this environment's
setuptools (no build isolation, no index), installed with --target (no dependencies: they come from
this environment), then run from a directory where the working tree is not importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTOS = {"astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg"}


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--disable-pip-version-check"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "deprecated" not in (done.stdout + done.stderr).lower()  # e.g. project.license as a table


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    if int(version("setuptools").split(".")[0]) < 77:
        pytest.skip("building needs setuptools >= 77 (SPDX license string)")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "sevgg_gui", src / "sevgg_gui", ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", "--no-build-isolation", "-w", str(root / "dist"), str(src), cwd=root)
    (wheel,) = (root / "dist").glob("sevgg_gui-*.whl")
    _pip("install", "--target", str(root / "site"), str(wheel), cwd=root)
    shutil.rmtree(src)  # nothing but the install is left to find the files in
    return root / "site"


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(site), "QT_QPA_PLATFORM": "offscreen"}


def test_installed_package_holds_photos_licence_and_clip(installed):
    probe = "import sevgg_gui.bundled as b; print(b.__file__); print(b.SAMPLES); print(b.DEMO_CLIP)"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=_env(installed),
        cwd=installed.parent,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    module, samples, clip = (Path(line) for line in done.stdout.split())
    assert module.is_relative_to(installed)  # the installed copy, not the working tree
    assert samples.is_relative_to(installed) and clip.is_relative_to(installed)
    assert {p.name for p in samples.iterdir()} == PHOTOS | {"LICENSES.md"}
    assert clip.stat().st_size > 100_000


def test_installed_sevgg_gui_opens_on_its_bundled_samples(installed, slim_ckpt):
    out = installed.parent / "shot.png"
    # No source given: headless mode refuses (exit 2) unless it finds the bundled samples.
    done = subprocess.run(
        [str(installed / "bin" / "sevgg-gui"), "--checkpoint", str(slim_ckpt), "--frames", "1"]
        + ["--screenshot", str(out), "--timeout", "240"],
        env=_env(installed),
        cwd=installed.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.stat().st_size > 10_000
