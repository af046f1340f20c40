"""The main window with real widgets, a real model, real OpenCV sources (offscreen Qt)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QLabel

from sevgg_gui.models.vgg import VGG16_SE
from sevgg_gui.recorder import ExcitationRecorder

from .conftest import CLASSES, SAMPLES, make_predictor


def wait_draws(qtbot, win, n: int, timeout: int = 30_000) -> None:
    start = win.drawn
    qtbot.waitUntil(lambda: win.drawn >= start + n, timeout=timeout)


def drop(win, paths: list[Path]) -> None:
    md = QMimeData()
    md.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    ev = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, md, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    win.dropEvent(ev)


def test_window_opens_with_five_charts_of_the_right_size(window):
    counts = [c.channels for c in window.charts.charts]
    assert counts == [64, 128, 256, 512, 512]
    assert [len(c.bars.opts["height"]) for c in window.charts.charts] == counts
    assert window.model_info is not None and window.model_info.num_classes == 3


def test_frames_flow_from_a_video_and_charts_equal_the_recorder(qtbot, window, video_file, small_model):
    window.charts.mode_pinned = True  # about the gate view; this random model's flat gates would leave it
    assert window.open_source(str(video_file))
    wait_draws(qtbot, window, 3)
    window.toggle_pause(True)
    result = window.last_result
    assert result.meta["origin"].endswith("clip.avi")
    # Bars show exactly the gates the recorder captured for this frame (channel order, gate view).
    for chart in window.charts.charts:
        np.testing.assert_array_equal(chart.bars.opts["height"], result.excitations[chart.block])
    # ...and those equal an independent recording of the same frame through an identical model
    # (a separate instance: the worker may still be running the shared one).
    twin = VGG16_SE(num_classes=3).eval()
    twin.load_state_dict(small_model.state_dict())
    x = make_predictor(twin).preprocess(result.image)[None]
    with torch.inference_mode(), ExcitationRecorder(twin) as rec:
        twin(x)
    for block, gates in rec.excitations.items():
        np.testing.assert_allclose(result.excitations[block], gates[0].numpy(), atol=1e-5)
    assert [p.label for p in result.topk][:1][0] in CLASSES


def test_folder_next_and_previous(qtbot, window, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(SAMPLES / name, folder / name)
    assert window.open_source(str(folder))
    wait_draws(qtbot, window, 1)
    first = window.last_result.meta["origin"]
    window.step(+1)
    qtbot.waitUntil(lambda: window.last_result.meta["origin"] != first, timeout=20_000)
    second = window.last_result.meta["origin"]
    window.step(-1)
    qtbot.waitUntil(lambda: window.last_result.meta["origin"] == first, timeout=20_000)
    assert Path(first).name == "chelsea.png" and Path(second).name == "coffee.png"


def test_drop_image_then_broken_file_keeps_running(qtbot, window, tmp_path):
    drop(window, [SAMPLES / "chelsea.png"])
    wait_draws(qtbot, window, 1)
    assert window.last_result.meta["origin"].endswith("chelsea.png")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    drawn = window.drawn
    drop(window, [bad])
    qtbot.waitUntil(lambda: window.error_banner.isVisible(), timeout=10_000)
    assert "broken.png" in window.error_banner.label.text()
    assert "\n" not in window.error_banner.label.text()
    # The app is alive: the next image still flows through.
    drop(window, [SAMPLES / "coffee.png"])
    qtbot.waitUntil(
        lambda: window.drawn > drawn and window.last_result.meta["origin"].endswith("coffee.png"),
        timeout=20_000,
    )


def test_drop_checkpoint_loads_it_and_a_bad_one_keeps_the_model(qtbot, window, tmp_path, small_model):
    from sevgg_gui.checkpoints import save_checkpoint

    ckpt = save_checkpoint(small_model, tmp_path / "three.pth", class_names=["x", "y", "z"], input_size=32)
    drop(window, [ckpt])
    qtbot.waitUntil(lambda: window.model_info.checkpoint == str(ckpt), timeout=60_000)
    # Switching models left no hook on the previous one.
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in small_model.modules())
    assert window.model_info.sha256 and len(window.model_info.sha256) == 64
    wrong = tmp_path / "resnet.pth"
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), wrong)
    window.error_banner.hide()
    drop(window, [wrong])
    qtbot.waitUntil(window.error_banner.isVisible, timeout=30_000)
    assert "resnet.pth" in window.error_banner.label.text()
    assert window.model_info.checkpoint == str(ckpt)  # kept the working model


def test_mute_intervention_changes_the_prediction(qtbot, window):
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    before = np.array([p.prob for p in window.last_result.topk])
    block = window.model_info.blocks[4][0]
    gates = window.last_result.excitations[block]
    top = int(np.argmax(gates))
    window.request_intervention(block, top, "mute")
    qtbot.waitUntil(lambda: window.last_result.excitations[block][top] == 0.0, timeout=20_000)
    after = np.array([p.prob for p in window.last_result.topk])
    assert not np.allclose(before, after, atol=0, rtol=0)
    assert "SE5" in window.charts.interventions_label.text()
    window.request_intervention("", -1, "reset")
    qtbot.waitUntil(lambda: window.last_result.excitations[block][top] != 0.0, timeout=20_000)
    np.testing.assert_allclose([p.prob for p in window.last_result.topk], before, rtol=1e-5)


def test_clicking_a_channel_selects_it_and_shows_its_map(qtbot, window):
    window.open_source(str(SAMPLES / "coffee.png"))
    wait_draws(qtbot, window, 1)
    block = window.model_info.blocks[1][0]
    window.select_channel(block, 7)
    qtbot.waitUntil(lambda: block in window.last_result.feature_maps, timeout=20_000)
    window.select_channel(block, 7)
    assert window.input_view.overlay.isVisible()
    chart = window.charts.charts[1]
    assert chart.highlight.isVisible() and chart.selected == 7
    text = chart.describe(7)
    assert "channel 7" in text and "rank" in text


def test_slow_model_drops_stale_frames_and_ui_stays_responsive(qtbot, window, video_file):
    worker = window.worker_thread.worker
    worker.model_slowdown_s = 0.25
    gaps: list[float] = []
    last = [time.perf_counter()]

    def probe() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(probe)
    timer.start(10)
    window.open_source(str(video_file))
    wait_draws(qtbot, window, 4, timeout=30_000)
    timer.stop()
    assert window.frames.dropped > 0, "a 4 fps model on a 30 fps video must drop frames"
    # Generous bound for a loaded 2-core CI box; the 50 ms target lives in benchmarks/.
    assert max(gaps[5:]) < 0.5


def test_close_joins_the_worker_and_releases_the_capture(qtbot, window, video_file):
    window.open_source(str(video_file))
    wait_draws(qtbot, window, 1)
    pump = window.pump
    thread = window.worker_thread.thread
    window.close()
    assert thread.isFinished()
    assert pump.source.closed


def test_settings_persist_chart_options(qtbot, window, tmp_path):
    window.charts.set_mode("squeeze")
    window.charts.sort_box.setChecked(True)
    window.save_settings()
    s = window.settings
    assert s.value("charts/mode") == "squeeze"
    assert s.value("charts/sort", type=bool) is True


def test_save_excitations_and_screenshot(qtbot, window, tmp_path):
    window.open_source(str(SAMPLES / "camera.png"))
    wait_draws(qtbot, window, 1)
    window.save_excitations(str(tmp_path / "ex.csv"))
    lines = (tmp_path / "ex.csv").read_text().splitlines()
    assert len(lines) == 1 + 1472
    assert window.save_screenshot(str(tmp_path / "shot.png"))
    assert (tmp_path / "shot.png").stat().st_size > 10_000


def test_camera_that_vanishes_shows_a_message_and_retry_works(qtbot, window, video_file):
    """A 'camera' backed by a real OpenCV capture on a short video: it runs dry like an unplugged one."""
    import cv2

    opened: list[int] = []

    def factory(index: int):
        opened.append(index)
        return cv2.VideoCapture(str(video_file))

    assert window.open_source("camera:0", capture_factory=factory)
    qtbot.waitUntil(lambda: window.error_banner.isVisible(), timeout=30_000)
    text = window.error_banner.label.text()
    assert "camera 0" in text and "\n" not in text
    assert (
        window.error_banner.buttons[0].isVisible() and window.error_banner.buttons[0].text() == "Retry camera"
    )
    drawn = window.frames_drawn
    window.error_banner.buttons[0].click()
    qtbot.waitUntil(lambda: len(opened) == 2, timeout=10_000)  # cameras open on a background thread
    qtbot.waitUntil(lambda: window.frames_drawn > drawn, timeout=30_000)  # frames flow again after retry


def test_record_session_to_npz(qtbot, window, video_file, tmp_path):
    window.toggle_recording(True)
    window.open_source(str(video_file))
    wait_draws(qtbot, window, 3)
    frames = list(window.recording)
    window.save_recording(str(tmp_path / "session.npz"), frames)
    data = np.load(tmp_path / "session.npz")
    assert data["features.4/excitation"].shape == (len(frames), 64)
    assert data["features.34/excitation"].shape == (len(frames), 512)
    assert data["top5_prob"].shape[0] == len(frames)
    np.testing.assert_array_equal(data["features.10/excitation"][-1], frames[-1].excitations["features.10"])


def test_keyboard_selects_blocks_and_pauses(qtbot, window, video_file):
    window.open_source(str(video_file))
    wait_draws(qtbot, window, 1)
    qtbot.keyClick(window, Qt.Key.Key_3)
    assert window.charts.selected_block == window.model_info.blocks[2][0]
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert window.pump.paused
    n = window.frames_drawn
    qtbot.keyClick(window, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: window.frames_drawn > n, timeout=20_000)


def test_paste_an_image_from_the_clipboard(qtbot, window):
    from PySide6.QtGui import QColor, QGuiApplication, QImage

    img = QImage(64, 48, QImage.Format.Format_RGB888)
    img.fill(QColor(200, 30, 30))
    QGuiApplication.clipboard().setImage(img)
    window.paste_image()
    qtbot.waitUntil(
        lambda: window.last_result is not None and window.last_result.meta["origin"] == "clipboard",
        timeout=20_000,
    )
    assert window.last_result.image.shape == (48, 64, 3)
    assert tuple(window.last_result.image[0, 0]) == (200, 30, 30)


def test_about_and_shortcut_boxes_do_not_block(qtbot, window):
    window.show_about()
    window.show_shortcuts()
    assert window.about_box.isVisible() and "torch" in window.about_box.text()
    assert "pause" in window.shortcuts_box.text()


def test_context_menu_mutes_and_hover_describes(qtbot, window):
    window.charts.mode_pinned = True  # about the gate view; this random model's flat gates would leave it
    window.open_source(str(SAMPLES / "rocket.jpg"))
    wait_draws(qtbot, window, 1)
    chart = window.charts.charts[2]
    menu = chart.context_menu(11)
    labels = [a.text() for a in menu.actions()]
    assert labels[0] == "Select channel 11" and any("Mute channel 11" in t for t in labels)
    mute = next(a for a in menu.actions() if a.text().startswith("Mute"))
    mute.trigger()
    qtbot.waitUntil(lambda: window.last_result.excitations[chart.block][11] == 0.0, timeout=20_000)
    assert "SE3:11=0" in window.charts.interventions_label.text()
    # Hover: the scene position of bar 11 maps back to channel 11.
    vb = chart.getPlotItem().getViewBox()
    pos = vb.mapViewToScene(QPointF(11, 0.5))
    assert chart.channel_at(pos) == 11


def test_class_profiles_overlay_the_bars_and_bad_npz_is_refused(qtbot, window, small_model, tmp_path):
    from sevgg_gui.analysis_classwise import class_excitation_stats

    window.charts.mode_pinned = True  # about the gate view; this random model's flat gates would leave it
    torch.manual_seed(0)
    batches = [(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))]
    profiles = class_excitation_stats(small_model, batches, CLASSES)
    path = profiles.save(tmp_path / "profiles.npz")
    window.open_source(str(SAMPLES / "chelsea.png"))
    wait_draws(qtbot, window, 1)
    drop(window, [path])
    assert window.charts.profile_box.isVisible() and window.charts.profile_box.count() == 4
    window.charts.profile_box.setCurrentIndex(2)  # "Profile: dog"
    chart = window.charts.charts[0]
    assert chart.profile_line.isVisible()
    _, ys = chart.profile_line.getData()
    np.testing.assert_allclose(ys, profiles.mean[chart.block][1], rtol=1e-6)
    bad = tmp_path / "other.npz"
    np.savez(bad, x=np.zeros(3))
    assert not window.load_profiles(str(bad))
    assert "other.npz" in window.error_banner.label.text()


def test_rerun_that_overtakes_a_new_frame_still_counts_it(qtbot, window, small_model):
    """Results coalesce (only the newest is drawn); a re-run arriving right after a new frame's
    result, before the draw, must not make that frame vanish from frames_drawn (headless mode waited
    forever on exactly this when the model-load block selection re-ran the first frame)."""
    predictor = make_predictor(small_model)
    rgb = np.full((40, 40, 3), 128, np.uint8)
    first, again = predictor.predict(rgb), predictor.predict(rgb)
    first.meta.update(rerun=False)
    again.meta.update(rerun=True)
    before = window.frames_drawn
    window._on_result(first)
    window._on_result(again)  # both queued before the event loop draws
    qtbot.waitUntil(lambda: not window._draw_scheduled, timeout=5_000)
    assert window.last_result is again
    assert window.frames_drawn == before + 1
    # A plain re-run on its own is still not a new frame.
    rerun = predictor.predict(rgb)
    rerun.meta.update(rerun=True)
    window._on_result(rerun)
    qtbot.waitUntil(lambda: window.last_result is rerun, timeout=5_000)
    assert window.frames_drawn == before + 1


def test_cost_table_arrives_after_the_first_frame(qtbot, window, small_model):
    """Models loaded by the worker describe their cost after the first prediction (its meta-device
    pass imports torch._dynamo, ~1 s), then the model panel shows the table."""
    from sevgg_gui.app.worker import describe_model

    predictor = make_predictor(small_model)
    info = describe_model(predictor, with_cost=False)
    assert info.cost_table == ""
    old = window.model_info
    window.worker_thread.worker.set_predictor(predictor, info)
    qtbot.waitUntil(
        lambda: window.model_info is not old and bool(window.model_info.cost_table), timeout=20_000
    )
    assert "features.4" in window.model_info.cost_table
    assert "features.4" in window.model_panel.toPlainText()
    assert window.worker_thread.worker.idle


def test_a_slow_camera_opens_in_the_background(qtbot, window, video_file):
    """cv2.VideoCapture can block for seconds: open_source returns at once, the UI keeps running, a
    late camera superseded by another source is closed, and a camera that fails shows Retry."""
    import threading

    import cv2

    release = threading.Event()
    opened: list = []

    def slow(index: int):
        release.wait(10)
        cap = cv2.VideoCapture(str(video_file))
        opened.append(cap)
        return cap

    t0 = time.perf_counter()
    assert window.open_source("camera:1", capture_factory=slow)
    assert time.perf_counter() - t0 < 0.5
    ticks: list[int] = []
    timer = QTimer(window, interval=10)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    qtbot.wait(300)
    timer.stop()
    assert len(ticks) >= 10  # the event loop ran while the camera was opening
    release.set()
    qtbot.waitUntil(lambda: window.source_spec == "camera:1", timeout=10_000)
    drawn = window.frames_drawn
    qtbot.waitUntil(lambda: window.frames_drawn > drawn, timeout=30_000)

    # Superseded: a camera still opening when an image is opened is dropped (and released).
    release.clear()
    window.open_source("camera:2", capture_factory=slow)
    window.open_source(str(SAMPLES / "coffee.png"))
    release.set()
    qtbot.waitUntil(lambda: len(opened) == 2, timeout=10_000)
    qtbot.wait(200)
    assert window.source_spec.endswith("coffee.png")
    qtbot.waitUntil(lambda: not opened[1].isOpened(), timeout=5_000)

    # A camera that cannot be opened: one line, a Retry button, the image source kept.
    failures: list[str] = []
    window.sourceFailed.connect(failures.append)
    window.open_source("camera:3", capture_factory=lambda i: cv2.VideoCapture(str(video_file) + ".missing"))
    qtbot.waitUntil(lambda: bool(failures), timeout=10_000)
    assert "camera 3" in failures[0] and "\n" not in failures[0]
    assert window.error_banner.isVisible() and window.error_banner.buttons[0].text() == "Retry camera"
    assert window.source_spec.endswith("coffee.png")


def test_choose_camera_probes_in_the_background_then_asks(qtbot, window):
    window.choose_camera()
    qtbot.waitUntil(lambda: getattr(window, "camera_dialog", None) is not None, timeout=10_000)
    dialog = window.camera_dialog
    assert dialog.isVisible()
    assert "Detected:" in "".join(w.text() for w in dialog.findChildren(QLabel))
    dialog.reject()
