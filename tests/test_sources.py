"""Frame sources against real OpenCV and Pillow files written into tmp_path (no fakes, no camera)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sevgg_gui.sources import (
    CameraSource,
    FolderSource,
    Frame,
    ImageSource,
    SourceError,
    VideoSource,
    list_cameras,
    open_source,
)

N_FRAMES = 30
STEP = 8  # frame i is RGB (255, 8*i, 0): red, with its number in green; MJPG keeps that within +-1


def write_video(path: Path, n: int = N_FRAMES, fps: float = 100.0, size: tuple[int, int] = (64, 48)) -> Path:
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((h, w, 3), (0, STEP * i, 255), np.uint8))  # BGR
    writer.release()
    return path


def frame_number(frame: Frame) -> int:
    return round(float(frame.rgb[..., 1].mean()) / STEP)


def write_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (20, 10)) -> Path:
    Image.new("RGB", size, rgb).save(path, format="PNG")
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "shots"
    d.mkdir()
    write_png(d / "img10.png", (0, 0, 200))
    write_png(d / "img2.png", (0, 200, 0))
    write_png(d / "IMG1.png", (200, 0, 0))
    (d / "notes.txt").write_text("not an image")
    (d / "._img3.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # hidden macOS companion
    (d / "sub").mkdir()
    write_png(d / "sub" / "img0.png", (9, 9, 9))  # not recursed into
    return d


def read_all(src, limit: int = 1000) -> list[Frame]:
    frames = []
    while (f := src.read()) is not None and len(frames) < limit:
        frames.append(f)
    return frames


# -- video ----------------------------------------------------------------------------------------


def test_video_reads_every_frame_in_order_as_rgb(video: Path) -> None:
    with VideoSource(video, loop=False) as src:
        assert (src.length, src.fps, src.can_step, src.is_live) == (N_FRAMES, 100.0, True, False)
        t0 = time.perf_counter()
        frames = read_all(src)
        assert src.read() is None and src.read() is None  # the end stays the end
    assert [f.index for f in frames] == list(range(N_FRAMES))
    assert [frame_number(f) for f in frames] == list(range(N_FRAMES))
    first = frames[0].rgb
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8 and first.flags.c_contiguous
    r, g, b = first.reshape(-1, 3).mean(0)
    assert r > 240 and g < 10 and b < 10  # pure red stays red: BGR was swapped to RGB
    assert all(f.origin == str(video) and f.capture_ms >= 0 for f in frames)
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps) and t0 <= stamps[0]
    assert frames[0].size == (64, 48)


def test_video_loop_rewinds_at_the_end(video: Path) -> None:
    with VideoSource(video, loop=True) as src:
        frames = [src.read() for _ in range(N_FRAMES + 5)]
    expected = list(range(N_FRAMES)) + list(range(5))
    assert [f.index for f in frames] == expected
    assert [frame_number(f) for f in frames] == expected


def test_video_step_back_and_forward(video: Path) -> None:
    with VideoSource(video, loop=False) as src:
        for _ in range(10):
            src.read()  # last shown: frame 9
        back = src.step(-1)
        assert back.index == 8 and frame_number(back) == 8
        assert frame_number(src.step(+1)) == 9
        assert frame_number(src.step(0)) == 9  # re-deliver the current frame
        assert frame_number(src.step(+5)) == 14
        assert frame_number(src.read()) == 15  # reading continues after the step
        assert src.step(-100).index == 0  # clamped without loop
        assert src.step(+100).index == N_FRAMES - 1
        assert frame_number(src.seek(20)) == 20
        assert src.position == 21 and frame_number(src.read()) == 21
    with VideoSource(video, loop=True) as src:
        src.read()  # frame 0
        last = src.step(-1)  # wraps to the last frame
        assert last.index == N_FRAMES - 1 and frame_number(last) == N_FRAMES - 1
        assert src.step(+1).index == 0


def test_video_step_before_first_read(video: Path) -> None:
    with VideoSource(video, loop=False) as src:
        assert src.step(+1).index == 0
    with VideoSource(video, loop=True) as src:
        assert src.step(-1).index == N_FRAMES - 1


@pytest.mark.parametrize(
    "content", [b"", b"this is not a video at all" * 50, b"RIFF\x00\x00\x00\x00AVI LIST"]
)
def test_unreadable_video_fails_at_open_with_one_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "broken.avi"
    bad.write_bytes(content)
    with pytest.raises(SourceError) as info:
        VideoSource(bad)
    message = str(info.value)
    assert "broken.avi" in message and "\n" not in message and info.value.fatal


def test_closed_video_releases_capture_and_refuses_reads(video: Path) -> None:
    src = VideoSource(video)
    cap = src.capture
    assert cap is not None and cap.isOpened()
    src.close()
    src.close()  # twice is fine
    assert not cap.isOpened() and src.capture is None and src.closed
    with pytest.raises(SourceError, match="closed"):
        src.read()


# -- folder ---------------------------------------------------------------------------------------


def colour(frame: Frame) -> tuple[int, ...]:
    return tuple(int(v) for v in frame.rgb[0, 0])


def test_folder_lists_images_in_natural_order_only(folder: Path) -> None:
    with FolderSource(folder) as src:
        assert [p.name for p in src.files] == ["IMG1.png", "img2.png", "img10.png"]
        assert src.length == 3 and src.fps is None and src.can_step
        frames = read_all(src)
        assert src.read() is None  # no loop: the end
    assert [colour(f) for f in frames] == [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[2].origin == str(folder / "img10.png")


def test_folder_prev_next_and_wrap(folder: Path) -> None:
    with FolderSource(folder, loop=False) as src:
        src.read()
        src.read()  # at item 1
        assert src.step(-1).index == 0
        assert src.step(-1).index == 0  # clamped
        assert src.step(+1).index == 1
        assert src.step(+5).index == 2
    with FolderSource(folder, loop=True) as src:
        assert [src.read().index for _ in range(5)] == [0, 1, 2, 0, 1]
        assert src.step(+1).index == 2
        assert src.step(+1).index == 0  # wraps forward
        assert src.step(-1).index == 2  # and backward
        assert src.seek(4).index == 1


def test_corrupt_image_in_folder_is_reported_and_skipped(folder: Path) -> None:
    (folder / "img5.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with FolderSource(folder) as src:
        assert [p.name for p in src.files][2] == "img5.jpg"
        assert src.read().index == 0
        assert src.read().index == 1
        with pytest.raises(SourceError, match="img5.jpg") as info:
            src.read()
        assert not info.value.fatal and "\n" not in str(info.value)
        assert src.read().index == 3  # moved on past the bad file
        with pytest.raises(SourceError, match="img5.jpg"):
            src.step(-1)  # stepping onto it fails the same way...
        assert src.step(-1).index == 1  # ...and the next step moves past it


def test_folder_without_images_fails_at_open(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(SourceError, match="no images"):
        FolderSource(tmp_path)


# -- image ----------------------------------------------------------------------------------------


def test_image_source_once_then_none_unless_repeat(tmp_path: Path) -> None:
    path = write_png(tmp_path / "red.png", (250, 10, 20))
    with ImageSource(path) as src:
        f = src.read()
        assert colour(f) == (250, 10, 20) and f.index == 0 and f.origin == str(path)
        assert src.read() is None
        f.rgb[:] = 0  # a consumer drawing on its frame...
        assert colour(src.step(+1)) == (250, 10, 20)  # ...does not change what stepping delivers
        assert colour(src.step(-1)) == (250, 10, 20)
    with ImageSource(path, repeat=True) as src:
        assert all(colour(src.read()) == (250, 10, 20) for _ in range(3))


def test_corrupt_image_fails_at_open(tmp_path: Path) -> None:
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(SourceError, match="photo.png"):
        ImageSource(bad)


# -- open_source ----------------------------------------------------------------------------------


def test_open_source_dispatches_each_kind(tmp_path: Path, folder: Path, video: Path) -> None:
    png = write_png(tmp_path / "one.png", (1, 2, 3))
    no_suffix_image = tmp_path / "picture"
    no_suffix_image.write_bytes(png.read_bytes())
    no_suffix_video = tmp_path / "recording"
    no_suffix_video.write_bytes(video.read_bytes())
    cases = {
        str(folder): FolderSource,
        str(png): ImageSource,
        str(no_suffix_image): ImageSource,
        str(video): VideoSource,
        str(no_suffix_video): VideoSource,
    }
    for spec, cls in cases.items():
        # loop/width are passed to every kind; each source takes only the options it knows
        with open_source(spec, loop=True, width=320) as src:
            assert type(src) is cls, spec
            assert src.read() is not None
    with open_source(video, loop=False) as src:
        assert src.loop is False


def test_open_source_camera_specs(video: Path) -> None:
    opened: list[int] = []

    def factory(index: int) -> cv2.VideoCapture:
        opened.append(index)
        return cv2.VideoCapture(str(video))

    for spec, index in [("camera", 0), ("camera:2", 2), ("CAMERA:11", 11)]:
        with open_source(spec, capture_factory=factory, loop=True) as src:
            assert isinstance(src, CameraSource) and src.is_live and not src.can_step
            assert src.origin == f"camera:{index}"
    assert opened == [0, 2, 11]


def test_open_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder: .*missing.mp4"):
        open_source(tmp_path / "missing.mp4")
    junk = tmp_path / "data.bin"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="data.bin: neither an image nor a video"):
        open_source(junk)


# -- camera ---------------------------------------------------------------------------------------


def test_missing_camera_fails_quickly() -> None:
    t0 = time.perf_counter()
    with pytest.raises(SourceError, match="camera 99 could not be opened") as info:
        CameraSource(99)
    assert time.perf_counter() - t0 < 3.0
    assert info.value.fatal


def test_camera_that_runs_dry_reports_and_reopens(video: Path) -> None:
    """A real capture on a short video plays a camera whose frames stop: unplugged, in effect."""
    captures: list[cv2.VideoCapture] = []

    def factory(index: int) -> cv2.VideoCapture:
        captures.append(cv2.VideoCapture(str(video)))
        return captures[-1]

    cam = CameraSource(0, width=640, height=480, capture_factory=factory, retry_delay=0.001)
    try:
        frames = [cam.read() for _ in range(N_FRAMES)]
        assert [f.index for f in frames] == list(range(N_FRAMES))
        assert frames[0].origin == "camera:0" and frame_number(frames[-1]) == N_FRAMES - 1
        with pytest.raises(SourceError, match=r"camera 0 stopped delivering frames \(unplugged\?\)") as info:
            cam.read()
        assert info.value.fatal
        assert not captures[0].isOpened() and cam.capture is None  # device released for a replug
        with pytest.raises(SourceError, match="stopped delivering"):
            cam.read()  # stays failed until reopened
        cam.reopen()
        assert len(captures) == 2 and frame_number(cam.read()) == 0
        captures[1].release()  # yanked mid-stream
        with pytest.raises(SourceError, match="stopped delivering"):
            cam.read()
    finally:
        cam.close()
    assert not any(c.isOpened() for c in captures)


def test_list_cameras_is_quick_and_quiet(capfd: pytest.CaptureFixture[str], video: Path) -> None:
    level = cv2.utils.logging.getLogLevel()
    t0 = time.perf_counter()
    found = list_cameras()
    assert time.perf_counter() - t0 < 3.0
    assert isinstance(found, list) and all(isinstance(i, int) for i in found)
    # probing indices with a factory bypasses the /dev shortcut; OpenCV still says nothing
    assert list_cameras(3, capture_factory=lambda i: cv2.VideoCapture(50 + i)) == []
    assert list_cameras(2, capture_factory=lambda i: cv2.VideoCapture(str(video))) == [0, 1]
    err = capfd.readouterr().err
    assert "WARN" not in err and "can't open camera" not in err
    assert cv2.utils.logging.getLogLevel() == level  # the quiet level was this call's only
