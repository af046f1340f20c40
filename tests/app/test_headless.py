"""`sevgg-gui` headless mode as a user runs it: a real process, offscreen, a saved PNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from .conftest import SAMPLES

GUI = str(Path(sys.executable).with_name("sevgg-gui"))


def run_gui(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([GUI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_headless_video_to_screenshot(tmp_path, video_file):
    out = tmp_path / "shot.png"
    proc = run_gui(
        "--source", str(video_file), "--frames", "2", "--screenshot", str(out), "--size", "1280x800"
    )
    assert proc.returncode == 0, proc.stderr
    img = Image.open(out)
    assert img.size == (1280, 800)
    # Not a blank window: many distinct colours (charts, frame, text).
    assert len(img.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 500


def test_headless_bad_source_fails_with_one_line(tmp_path):
    proc = run_gui(
        "--source", str(tmp_path / "missing.mp4"), "--frames", "1", "--screenshot", str(tmp_path / "x.png")
    )
    # Exactly 2, not 134: the worker may still be loading the full VGG16 when the run fails, and the
    # process must end cleanly rather than abort on a running QThread ("Destroyed while thread").
    assert proc.returncode == 2, proc.stderr[-500:]
    assert "Destroyed while thread" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("sevgg-gui:")]
    assert len(lines) == 1 and "missing.mp4" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_headless_bad_checkpoint_fails_with_one_line(tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(os.urandom(4096))
    proc = run_gui(
        "--source",
        str(SAMPLES / "chelsea.png"),
        "-c",
        str(bad),
        "--frames",
        "1",
        "--screenshot",
        str(tmp_path / "x.png"),
    )
    assert proc.returncode != 0
    assert "garbage.pth" in proc.stderr and "Traceback" not in proc.stderr
