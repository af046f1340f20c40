"""`sevgg-gui`: start the window, or run headless (N frames -> screenshot -> exit) for tests and docs."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sevgg-gui",
        description="Live Squeeze-and-Excitation attention in VGG16-SE over a camera, video, images or a folder.",
    )
    p.add_argument("source_pos", nargs="?", metavar="SOURCE", help="image, video, folder or camera:N")
    p.add_argument("--source", help="same as SOURCE")
    p.add_argument(
        "--checkpoint",
        "-c",
        "--model",
        help=".pth / .safetensors checkpoint, a model folder, or pretrained:mobilenet_v3_small | vgg16:cbam | "
        "timm:seresnet50.a1_in1k | timm:NAME:random | ... (see Model menu)",
    )
    p.add_argument(
        "--model-code",
        metavar="FILE.py:FUNCTION",
        help="build the model with your own code (FILE.py:FUNCTION or package.module:FUNCTION); "
        "--checkpoint then names its weights",
    )
    p.add_argument(
        "--compare", metavar="SPEC", help="compare mode: run model B (any model spec or .onnx) beside it"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=None)
    p.add_argument(
        "--backend",
        choices=["torch", "onnxruntime", "openvino"],
        default=None,
        help="run the model in torch, or an ONNX export of it (made once, cached) in onnxruntime or "
        "OpenVINO; default: the last one chosen in Model → Backend (torch)",
    )
    p.add_argument("--frames", type=int, default=None, help="headless: process N frames, then exit")
    p.add_argument("--screenshot", help="headless: save the whole window to this PNG and exit")
    p.add_argument("--block", type=int, default=None, help="select SE block 1-5 at start")
    p.add_argument(
        "--channel", type=int, default=None, help="select this channel of the block (heat overlay)"
    )
    p.add_argument("--mode", choices=["gates", "squeeze", "diff"], default=None, help="chart view at start")
    p.add_argument("--profiles", help="class profiles NPZ from `sevgg analyze` to overlay on the bars")
    p.add_argument("--timeout", type=float, default=300.0, help="headless: give up after this many seconds")
    p.add_argument("--size", default="1280x800", help="headless window size, WxH")
    return p


def _style(app) -> None:
    import pyqtgraph as pg
    from PySide6.QtGui import QColor, QPalette

    pg.setConfigOptions(
        antialias=False, imageAxisOrder="row-major", background="#1e1f22", foreground="#c8c8c8"
    )
    app.setStyle("Fusion")
    pal = QPalette()
    for role, color in (
        (QPalette.ColorRole.Window, "#2b2d31"),
        (QPalette.ColorRole.WindowText, "#e0e0e0"),
        (QPalette.ColorRole.Base, "#1e1f22"),
        (QPalette.ColorRole.AlternateBase, "#2b2d31"),
        (QPalette.ColorRole.Text, "#e0e0e0"),
        (QPalette.ColorRole.Button, "#3a3c42"),
        (QPalette.ColorRole.ButtonText, "#e0e0e0"),
        (QPalette.ColorRole.Highlight, "#3d7bd9"),
        (QPalette.ColorRole.HighlightedText, "#ffffff"),
        (QPalette.ColorRole.ToolTipBase, "#2b2d31"),
        (QPalette.ColorRole.ToolTipText, "#e0e0e0"),
    ):
        pal.setColor(role, QColor(color))
    app.setPalette(pal)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    headless = args.screenshot is not None or args.frames is not None
    if headless:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    else:
        from .display_check import EXIT_NO_DISPLAY, check_display

        problem = check_display()  # before Qt, whose own answer is abort() and a core dump
        if problem:
            print("\n".join(problem), file=sys.stderr)
            return EXIT_NO_DISPLAY
    source = args.source or args.source_pos

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from .window import SAMPLES, MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("sevgg-gui")
    app.setOrganizationName("sevgg_gui")
    _style(app)
    if headless:  # never touch the user's settings from scripted runs
        settings = QSettings(
            os.path.join(tempfile.mkdtemp(prefix="sevgg-gui-"), "settings.ini"), QSettings.Format.IniFormat
        )
    else:
        settings = QSettings()
    win = MainWindow(
        settings,
        checkpoint=args.checkpoint,
        device=args.device,
        model_code=args.model_code,
        backend=args.backend,
    )
    if args.compare:
        win.compare.start(args.compare)  # queued on the worker after model A's load
    if args.mode:
        win.charts.set_mode(args.mode)
        win.charts.mode_pinned = True  # an explicit view wins over the automatic one for flat gates
    if args.profiles:
        win.pending_profiles = args.profiles  # applied once the model (and its block names) is known
    if headless:
        w, _, h = args.size.partition("x")
        win.resize(int(w), int(h))
    win.show()

    if source is None and not headless:
        source = str(settings.value("last_source", "")) or None
        if source and not os.path.exists(source) and not source.startswith("camera"):
            source = None
    if source is None and SAMPLES.is_dir():
        source = str(SAMPLES)

    if not headless:
        # First use: fetch ImageNet VGG16 in the background, checked once the model has loaded (the
        # check imports torchvision, which would keep the window from showing until it has loaded).
        win.offer_download = args.checkpoint is None and args.model_code is None
        if source:
            win.open_source(source)
        else:
            win.input_view.show_message("Drop an image, video, folder or checkpoint here")
        code = app.exec()
        _release(app, win, code)
        return code
    from .headless import run_headless

    code = run_headless(app, win, source, args)
    _release(app, win, code)
    return code


def _release(app, win, code: int) -> None:
    """Free the window's Qt wrappers while QApplication still exists: PySide6 can abort when the
    garbage collector meets them during interpreter shutdown instead.

    A worker still busy after the join timeout (a large model still loading when the window closes
    or a headless run fails) cannot be interrupted, and destroying its running QThread aborts the
    process with a core dump; the process ends here instead, with its exit code, settings saved.
    """
    import gc

    win.close()
    if win.worker_thread.stuck:
        win.settings.sync()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    win.deleteLater()
    app.processEvents()
    gc.collect()


if __name__ == "__main__":
    sys.exit(main())
