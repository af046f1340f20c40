"""`sevgg-gui` without a usable display says why in two lines and exits 2, instead of Qt's abort()."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sevgg_gui.app.display_check import (
    EXIT_NO_DISPLAY,
    XCB_LIBS,
    SharedLib,
    check_display,
    missing_libraries,
)

REPO = Path(__file__).resolve().parents[2]
ABSENT = SharedLib("libsevgg-test-absent.so.9", "sevgg-absent-apt0", "sevgg-absent-dnf")
LIBC = SharedLib("libc.so.6", "libc6", "glibc")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the check is for Linux (xcb)")


def _gui_command() -> list[str]:
    script = Path(sys.executable).parent / "sevgg-gui"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from sevgg_gui.app.main import main; sys.exit(main())"]


@linux_only
def test_no_display_two_lines_and_exit_2():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run(_gui_command(), env=env, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == EXIT_NO_DISPLAY, done.stderr  # not 134 (SIGABRT) nor -6
    assert 1 <= len(lines) <= 2, done.stderr
    assert "no display" in lines[0] and "--screenshot" in done.stderr


@linux_only
def test_missing_library_named_with_its_packages():
    problem = check_display({"DISPLAY": ":0"}, xcb_libs=(LIBC, ABSENT), platform="linux")
    assert len(problem) == 2
    assert ABSENT.soname in problem[0] and LIBC.soname not in problem[0]
    assert "apt-get install sevgg-absent-apt0" in problem[1]
    assert "dnf install sevgg-absent-dnf" in problem[1]


@linux_only
def test_loadable_and_absent_libraries_told_apart():
    assert missing_libraries([LIBC, ABSENT, LIBC]) == [ABSENT]


@linux_only
def test_unreachable_x_display():
    if missing_libraries([XCB_LIBS[0]]):
        pytest.skip("libxcb.so.1 is not installed here")
    free = next(n for n in range(4711, 4800) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    problem = check_display({"DISPLAY": f":{free}"}, xcb_libs=(LIBC,), platform="linux")
    assert len(problem) == 2 and "cannot connect" in problem[0] and f":{free}" in problem[0]


def test_platforms_that_need_no_display_are_not_checked():
    assert check_display({"QT_QPA_PLATFORM": "offscreen"}, xcb_libs=(ABSENT,), platform="linux") == []
    assert check_display({"QT_QPA_PLATFORM": "vnc:size=800x600"}, xcb_libs=(ABSENT,), platform="linux") == []
    assert check_display({}, xcb_libs=(ABSENT,), platform="darwin") == []


def test_wayland_requested_without_compositor():
    problem = check_display({"QT_QPA_PLATFORM": "wayland"}, platform="linux")
    assert len(problem) == 1 and "WAYLAND_DISPLAY" in problem[0]


@linux_only
def test_library_list_matches_the_installed_xcb_plugin():
    """Every X11/xcb/xkb library Qt's xcb plugin pulls in (ldd, recursively) is one the check probes,
    and the check probes nothing the plugin does not use."""
    ldd = shutil.which("ldd")
    qt = Path(pytest.importorskip("PySide6").__file__).parent / "Qt"
    plugin = qt / "plugins" / "platforms" / "libqxcb.so"
    if ldd is None or not plugin.exists():
        pytest.skip("needs ldd and PySide6's xcb plugin")
    out = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, check=True).stdout
    needed = {m.group(1) for m in re.finditer(r"^\s*(\S+\.so[.\d]*)\s*=>", out, re.M)}
    probed = {lib.soname for lib in XCB_LIBS}
    assert {n for n in needed if re.search(r"xcb|xkb|X11", n)} <= probed
    assert probed <= needed
