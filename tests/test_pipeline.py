"""LatestSlot and SourcePump with real threads and real OpenCV captures.

Timing asserts use generous bounds only (the machine may be a loaded 2-core CI box); waits poll for
a condition with a deadline instead of sleeping a fixed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sevgg_gui.pipeline import LatestSlot, SourcePump
from sevgg_gui.sources import CameraSource, FolderSource, Frame, ImageSource, VideoSource

# An exception that escapes a pump thread must fail the test, not just print.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

N_FRAMES = 30
STEP = 8
FPS = 100.0


def write_video(path: Path, n: int = N_FRAMES, fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((48, 64, 3), (0, STEP * i, 255), np.uint8))  # number in green
    writer.release()
    return path


def number(frame: Frame) -> int:
    return round(float(frame.rgb[..., 1].mean()) / STEP)


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.002)
    return True


def settled(slot: LatestSlot[Frame], quiet: float = 0.05) -> bool:
    """True when nothing was put for ``quiet`` seconds."""
    before = slot.put_count
    time.sleep(quiet)
    return slot.put_count == before


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi")


class Events:
    """Collects callbacks from the pump thread."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.ends = 0

    def on_error(self, message: str) -> None:
        self.errors.append(message)

    def on_end(self) -> None:
        self.ends += 1


def drain(slot: LatestSlot[Frame], until: Callable[[], bool], timeout: float = 5.0) -> list[Frame]:
    """Take frames as fast as they come until ``until()`` and the slot is empty."""
    out: list[Frame] = []
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        f = slot.get(timeout=0.01)
        if f is not None:
            out.append(f)
        elif until():
            break
    return out


# -- LatestSlot -----------------------------------------------------------------------------------


def test_slot_keeps_only_the_newest_item() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.get(timeout=0) is None
    for i in range(3):
        assert slot.put(i)
    assert (slot.put_count, slot.dropped, slot.pending) == (3, 2, True)
    assert slot.get(timeout=0) == 2
    assert slot.get(timeout=0.01) is None
    slot.put(7)
    assert slot.clear() and not slot.clear()
    assert slot.put_count == slot.dropped + slot.taken  # 4 == 3 + 1


def test_slot_close_wakes_a_waiting_consumer() -> None:
    slot: LatestSlot[int] = LatestSlot()
    got: list[int | None] = []
    t = threading.Thread(target=lambda: got.append(slot.get(timeout=10)))
    t.start()
    time.sleep(0.02)
    t0 = time.perf_counter()
    slot.close()
    t.join(2)
    assert not t.is_alive() and got == [None] and time.perf_counter() - t0 < 1.0
    assert not slot.put(1) and slot.get(timeout=0) is None


def test_slot_fast_producer_slow_consumer_gets_newest() -> None:
    slot: LatestSlot[int] = LatestSlot()
    n = 2000
    done = threading.Event()

    def produce() -> None:
        for i in range(n):
            slot.put(i)
            if i % 50 == 0:
                time.sleep(0.0005)  # let the consumer in now and then
        done.set()

    received: list[int] = []
    producer = threading.Thread(target=produce)
    producer.start()
    while not (done.is_set() and not slot.pending):
        item = slot.get(timeout=0.05)
        if item is not None:
            received.append(item)
            time.sleep(0.002)  # a slow model
    producer.join()
    assert received == sorted(set(received))  # strictly newer every time, never a stale repeat
    assert received[-1] == n - 1  # the very newest item is what the consumer ends on
    assert slot.dropped > 0 and slot.put_count == n == slot.dropped + len(received)


# -- SourcePump -----------------------------------------------------------------------------------


def test_pump_plays_video_in_order_at_its_frame_rate(video: Path) -> None:
    slot: LatestSlot[Frame] = LatestSlot()
    ev = Events()
    pump = SourcePump(VideoSource(video, loop=False), slot, realtime=True, on_end=ev.on_end)
    t0 = time.perf_counter()
    pump.start()
    frames = drain(slot, lambda: ev.ends > 0)
    elapsed = time.perf_counter() - t0
    assert pump.stop()
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx)) and idx[-1] == N_FRAMES - 1  # in order; the last one arrives
    assert [number(f) for f in frames] == idx
    assert len(frames) >= N_FRAMES // 2  # a fast consumer sees most of them
    assert elapsed >= 0.8 * (N_FRAMES - 1) / FPS  # paced, not dumped (0.29 s at 100 fps)
    assert ev.ends == 1 and ev.errors == [] and pump.ended


def test_pump_not_realtime_delivers_every_frame_to_a_slow_consumer(video: Path) -> None:
    slot: LatestSlot[Frame] = LatestSlot()
    ev = Events()
    pump = SourcePump(VideoSource(video, loop=False), slot, realtime=False, on_end=ev.on_end).start()
    frames = []
    while len(frames) < N_FRAMES:
        f = slot.get(timeout=5)
        assert f is not None
        frames.append(f)
        time.sleep(0.003)  # slower than decoding: a lossy pump would drop here
    assert wait_until(lambda: ev.ends == 1)
    assert pump.stop()
    assert [number(f) for f in frames] == list(range(N_FRAMES))
    assert slot.dropped == 0


def test_pump_pause_step_resume(video: Path) -> None:
    slot: LatestSlot[Frame] = LatestSlot()
    src = VideoSource(video, loop=True)
    pump = SourcePump(src, slot, realtime=True).start()
    try:
        assert wait_until(lambda: slot.put_count >= 5)
        pump.pause()
        assert wait_until(lambda: settled(slot))  # a read in flight when pausing may still land
        slot.clear()
        count = slot.put_count
        time.sleep(0.1)  # 10 frame periods: nothing may arrive while paused
        assert slot.put_count == count and pump.paused
        current = src.position - 1
        pump.step(-1)
        back = slot.get(timeout=2)
        assert back is not None and back.index == (current - 1) % N_FRAMES and number(back) == back.index
        pump.step(+1)
        pump.step(+1)  # quick clicks add up to one step of +2
        ahead = slot.get(timeout=2)
        assert ahead is not None and ahead.index == (back.index + 2) % N_FRAMES
        pump.seek(3)
        assert slot.get(timeout=2).index == 3
        pump.request_next()  # a single frame while paused
        assert slot.get(timeout=2).index == 4
        pump.resume()
        assert wait_until(lambda: slot.put_count >= count + 10)
        assert pump.running and pump.frames >= count + 10
    finally:
        assert pump.stop()


def test_pump_folder_on_request_survives_a_bad_file(tmp_path: Path) -> None:
    for name, rgb in [("a.png", (200, 0, 0)), ("c.png", (0, 0, 200))]:
        Image.new("RGB", (8, 8), rgb).save(tmp_path / name)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    slot: LatestSlot[Frame] = LatestSlot()
    ev = Events()
    pump = SourcePump(FolderSource(tmp_path), slot, on_error=ev.on_error, on_end=ev.on_end).start()
    try:
        assert slot.get(timeout=0.1) is None  # folders wait to be asked
        pump.request_next()
        assert slot.get(timeout=2).origin.endswith("a.png")
        pump.request_next()
        assert wait_until(lambda: len(ev.errors) == 1)
        assert "b.jpg" in ev.errors[0] and pump.running  # reported, and the pump carries on
        pump.request_next()
        assert slot.get(timeout=2).origin.endswith("c.png")
        pump.request_next()
        assert wait_until(lambda: ev.ends == 1) and pump.running
        pump.step(-2)  # back from the end, to a.png
        assert slot.get(timeout=2).index == 0
    finally:
        assert pump.stop()


def test_pump_image_once_per_request(tmp_path: Path) -> None:
    path = tmp_path / "one.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    slot: LatestSlot[Frame] = LatestSlot()
    ev = Events()
    pump = SourcePump(ImageSource(path), slot, on_end=ev.on_end).start()
    try:
        pump.request_next()
        assert slot.get(timeout=2).origin == str(path)
        pump.request_next()
        assert wait_until(lambda: ev.ends == 1)
        pump.step(0)  # re-run the same image
        assert slot.get(timeout=2) is not None
    finally:
        assert pump.stop()


def test_pump_stops_cleanly_when_the_camera_vanishes(video: Path) -> None:
    captures: list[cv2.VideoCapture] = []

    def factory(index: int) -> cv2.VideoCapture:
        captures.append(cv2.VideoCapture(str(video)))
        return captures[-1]

    cam = CameraSource(0, capture_factory=factory, retry_delay=0.001)
    slot: LatestSlot[Frame] = LatestSlot()
    ev = Events()
    pump = SourcePump(cam, slot, on_error=ev.on_error).start()
    assert wait_until(lambda: not pump.running)
    assert pump.failed and slot.put_count == N_FRAMES
    assert len(ev.errors) == 1 and "camera 0 stopped delivering frames" in ev.errors[0]
    assert not captures[0].isOpened()
    # Retry button: reopen the same source and pump it again
    cam.reopen()
    retry = SourcePump(cam, slot, on_error=ev.on_error).start()
    assert wait_until(lambda: slot.put_count > N_FRAMES)
    assert retry.stop() and pump.stop()
    assert cam.closed and not any(c.isOpened() for c in captures)


def test_pump_stop_joins_and_releases_the_capture(video: Path) -> None:
    src = VideoSource(video, loop=True)
    cap = src.capture
    slot: LatestSlot[Frame] = LatestSlot()
    pump = SourcePump(src, slot, realtime=True).start()
    assert wait_until(lambda: slot.put_count >= 3)
    t0 = time.perf_counter()
    assert pump.stop(timeout=2.0)
    assert time.perf_counter() - t0 < 2.0
    assert not pump.running and not cap.isOpened() and src.closed
    assert pump.stop()  # idempotent


def test_pump_stop_from_a_live_camera_and_from_a_slow_lossless_wait(video: Path) -> None:
    # a camera streams unpaced: stop must still get through between reads
    cam = CameraSource(0, capture_factory=lambda i: cv2.VideoCapture(str(video)))
    cap = cam.capture
    pump = SourcePump(cam, LatestSlot()).start()
    assert pump.stop() and not cap.isOpened()
    # a lossless pump blocked on a consumer that never comes
    slot: LatestSlot[Frame] = LatestSlot()
    pump = SourcePump(VideoSource(video), slot, realtime=False).start()
    assert wait_until(lambda: slot.pending)
    assert pump.stop(timeout=2.0) and not pump.running


def test_pump_survives_callbacks_that_raise_and_a_closed_slot(video: Path, tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"junk")
    Image.new("RGB", (8, 8)).save(tmp_path / "y.png")

    def boom(*_: object) -> None:
        raise ValueError("callback bug")

    slot: LatestSlot[Frame] = LatestSlot()
    pump = SourcePump(FolderSource(tmp_path), slot, on_error=boom, on_end=boom).start()
    for _ in range(3):
        pump.request_next()  # error, frame, end: both callbacks raise
    assert wait_until(lambda: pump.errors == 1 and pump.ended)
    assert pump.running and slot.get(timeout=1) is not None
    slot.close()  # the consumer went away: the pump notices on its next put and winds down
    pump.step(0)
    assert wait_until(lambda: not pump.running)
    assert pump.source.closed and pump.stop()
