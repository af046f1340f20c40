"""Can Qt open a window here? Checked before the QApplication exists, because Qt's own answer to a
missing display or a missing xcb library is a multi-line message and abort() (exit 134, a core dump).

No Qt import: the libraries are probed with ctypes (dlopen, the same search the plugin's loader does)
and the X display with libxcb's own connect, a few milliseconds in all.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

EXIT_NO_DISPLAY = 2


@dataclass(frozen=True)
class SharedLib:
    """A system library one of Qt's platform plugins links against, and the packages that ship it."""

    soname: str
    apt: str
    dnf: str


# The system libraries PySide6's plugins/platforms/libqxcb.so and Qt/lib/libQt6XcbQpa.so.6 link against
# (`ldd` of both, PySide6 6.11), less glibc/libstdc++ and what QtGui itself already needs to import.
# tests/app/test_display_check.py re-reads them with ldd, so a new Qt that adds one fails the test.
XCB_LIBS: tuple[SharedLib, ...] = (
    SharedLib("libxcb.so.1", "libxcb1", "libxcb"),
    SharedLib("libX11.so.6", "libx11-6", "libX11"),
    SharedLib("libX11-xcb.so.1", "libx11-xcb1", "libX11-xcb"),
    SharedLib("libxcb-cursor.so.0", "libxcb-cursor0", "xcb-util-cursor"),
    SharedLib("libxcb-icccm.so.4", "libxcb-icccm4", "xcb-util-wm"),
    SharedLib("libxcb-image.so.0", "libxcb-image0", "xcb-util-image"),
    SharedLib("libxcb-keysyms.so.1", "libxcb-keysyms1", "xcb-util-keysyms"),
    SharedLib("libxcb-render-util.so.0", "libxcb-render-util0", "xcb-util-renderutil"),
    SharedLib("libxcb-util.so.1", "libxcb-util1", "xcb-util"),
    SharedLib("libxcb-randr.so.0", "libxcb-randr0", "libxcb"),
    SharedLib("libxcb-render.so.0", "libxcb-render0", "libxcb"),
    SharedLib("libxcb-shape.so.0", "libxcb-shape0", "libxcb"),
    SharedLib("libxcb-shm.so.0", "libxcb-shm0", "libxcb"),
    SharedLib("libxcb-sync.so.1", "libxcb-sync1", "libxcb"),
    SharedLib("libxcb-xfixes.so.0", "libxcb-xfixes0", "libxcb"),
    SharedLib("libxcb-xkb.so.1", "libxcb-xkb1", "libxcb"),
    SharedLib("libxkbcommon.so.0", "libxkbcommon0", "libxkbcommon"),
    SharedLib("libxkbcommon-x11.so.0", "libxkbcommon-x11-0", "libxkbcommon-x11"),
    SharedLib("libEGL.so.1", "libegl1", "libglvnd-egl"),
    SharedLib("libGL.so.1", "libgl1", "libglvnd-glx"),
)

# plugins/platforms/libqwayland.so, same selection.
WAYLAND_LIBS: tuple[SharedLib, ...] = (
    SharedLib("libwayland-client.so.0", "libwayland-client0", "libwayland-client"),
    SharedLib("libwayland-cursor.so.0", "libwayland-cursor0", "libwayland-cursor"),
    SharedLib("libxkbcommon.so.0", "libxkbcommon0", "libxkbcommon"),
    SharedLib("libEGL.so.1", "libegl1", "libglvnd-egl"),
)

HEADLESS_HINT = "sevgg-gui --source PATH --frames N --screenshot OUT.png"


def missing_libraries(libs: Sequence[SharedLib]) -> list[SharedLib]:
    """The libraries dlopen cannot load (absent, or one of their own dependencies absent)."""
    missing = []
    for lib in libs:
        try:
            ctypes.CDLL(lib.soname)
        except OSError:
            missing.append(lib)
    return missing


def install_hint(missing: Sequence[SharedLib]) -> str:
    apt = " ".join(dict.fromkeys(lib.apt for lib in missing))
    dnf = " ".join(dict.fromkeys(lib.dnf for lib in missing))
    return f"install: sudo apt-get install {apt}  (Fedora: sudo dnf install {dnf})"


def x_display_reachable(display: str) -> bool:
    """Connect to the X server with libxcb (what Qt's xcb plugin does first) and hang up again."""
    xcb = ctypes.CDLL("libxcb.so.1")
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        # xcb_connect never returns NULL: on failure it hands back a static error object to query
        return bool(conn) and xcb.xcb_connection_has_error(conn) == 0
    finally:
        if conn:
            xcb.xcb_disconnect(conn)


def wayland_socket(environ: Mapping[str, str]) -> str | None:
    """The compositor's socket path if WAYLAND_DISPLAY names one that exists (libwayland's own lookup)."""
    name = environ.get("WAYLAND_DISPLAY", "")
    if not name:
        return None
    path = name if os.path.isabs(name) else os.path.join(environ.get("XDG_RUNTIME_DIR", ""), name)
    return path if os.path.exists(path) else None


def check_display(
    environ: Mapping[str, str] | None = None,
    xcb_libs: Sequence[SharedLib] = XCB_LIBS,
    wayland_libs: Sequence[SharedLib] = WAYLAND_LIBS,
    platform: str = sys.platform,
) -> list[str]:
    """Why Qt could not open a window here, in at most two lines; empty when it can (or when the
    platform is not one this checks: not Linux, or QT_QPA_PLATFORM is offscreen, vnc, eglfs, ...)."""
    env = os.environ if environ is None else environ
    if not platform.startswith("linux"):
        return []
    requested = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if requested not in ("", "xcb", "wayland", "wayland-egl"):
        return []
    wayland = wayland_socket(env) if requested != "xcb" else None
    wayland_missing = missing_libraries(wayland_libs) if wayland else []
    if wayland and not wayland_missing:
        return []  # a Wayland session Qt can use (it falls back to xcb on its own if needed)
    if requested.startswith("wayland") or (wayland and not env.get("DISPLAY")):
        if not wayland:
            return [
                f"sevgg-gui: QT_QPA_PLATFORM={requested} but no Wayland compositor socket (WAYLAND_DISPLAY)."
            ]
        return [
            "sevgg-gui: Qt's Wayland plugin needs libraries this system lacks: "
            + ", ".join(lib.soname for lib in wayland_missing),
            install_hint(wayland_missing),
        ]
    display = env.get("DISPLAY", "")
    if not display:
        return [
            "sevgg-gui: no display to open a window on (DISPLAY and WAYLAND_DISPLAY are unset).",
            f"Run it in an X11 or Wayland session, or headless: {HEADLESS_HINT}",
        ]
    missing = missing_libraries(xcb_libs)
    if missing:
        return [
            "sevgg-gui: Qt's X11 (xcb) plugin needs libraries this system lacks: "
            + ", ".join(lib.soname for lib in missing),
            install_hint(missing),
        ]
    if not x_display_reachable(display):
        return [
            f"sevgg-gui: cannot connect to the X display {display!r} (no X server there, or no access).",
            f"Start one or fix DISPLAY/XAUTHORITY, or run headless: {HEADLESS_HINT}",
        ]
    return []
