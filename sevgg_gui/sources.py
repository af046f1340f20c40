"""Where frames come from: a camera, a video file, one image, or a folder of images.

Every source hands out :class:`Frame` objects holding RGB uint8 pixels, so the worker downstream never
cares what the input was. Failures raise :class:`SourceError` with one line meant for people; the
``fatal`` flag tells a reader (see :mod:`sevgg_gui.pipeline`) whether the source can keep going (a
corrupt file in a folder) or is finished (a camera that was unplugged).

No Qt here: this layer is used headless by the CLI and the tests, and by the app through a pump thread.
Sources are closed explicitly (``close()`` or a ``with`` block), never by ``__del__``: a camera handle
released at an arbitrary garbage-collection moment, possibly on another thread, is a classic crash.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import cv2
import numpy as np

from .images import ImageError, frame_to_rgb, is_image_path, load_image

VIDEO_SUFFIXES = {
    ".avi",
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".ts",
    ".mts",
    ".3gp",
    ".ogv",
}
DEFAULT_VIDEO_FPS = 30.0  # used when a container does not say; pacing at a guess beats not pacing


@dataclass(slots=True)
class Frame:
    """One picture on its way to the model.

    ``index``: position in the source (video frame number, folder item, count of camera frames).
    ``timestamp``: ``time.perf_counter()`` when the frame was captured, for end-to-end latency.
    ``origin``: the file the pixels came from, or ``"camera:N"``.
    ``capture_ms``: time spent reading and decoding it.
    """

    rgb: np.ndarray
    index: int
    timestamp: float
    origin: str
    capture_ms: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), the order people and Qt use."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


class SourceError(RuntimeError):
    """A source problem, as one user-facing line.

    ``fatal=False``: this read failed but the next may succeed (a corrupt file in a folder).
    ``fatal=True``: the source cannot deliver any more frames until reopened.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use, so tests can inject their own capture."""

    def isOpened(self) -> bool: ...  # OpenCV spelling
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop_id: int) -> float: ...
    def set(self, prop_id: int, value: float) -> bool: ...
    def release(self) -> None: ...


class FrameSource(ABC):
    """Common interface: ``read()`` the next frame, ``step()`` through it, ``close()`` it.

    ``position`` is the index of the frame the next ``read()`` returns, like a file cursor; ``step(d)``
    moves relative to the frame delivered last (``step(0)`` re-delivers it). Sources are not
    thread-safe: one thread (the pump) should own all calls except reading the attributes.
    """

    name: str = ""
    origin: str = ""
    is_live: bool = False
    can_step: bool = False
    length: int | None = None
    fps: float | None = None

    def __init__(self) -> None:
        self.position = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of a finite stream."""

    def step(self, delta: int) -> Frame | None:
        """Move ``delta`` frames relative to the last one delivered and return that frame.

        Wraps around with ``loop``, else stops at the ends; None when a video cannot decode there.
        """
        self._check_open()
        return self._goto(self._target(delta))

    def seek(self, index: int) -> Frame | None:
        """Jump to an absolute index (a slider), wrapped or clamped like ``step``."""
        self._check_open()
        return self._goto(self._bound(index))

    def _goto(self, index: int) -> Frame | None:
        """Deliver frame ``index`` and leave the cursor after it; steppable sources override this."""
        raise SourceError(f"{self.name}: cannot step through a live source")

    def close(self) -> None:
        """Release whatever the source holds; safe to call twice."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"position={self.position}"
        return f"<{type(self).__name__} {self.name!r} {state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise SourceError(f"{self.name}: source is closed", fatal=True)

    def _target(self, delta: int) -> int:
        """Index ``delta`` away from the frame delivered last.

        Before any read, ``+1`` means the first frame and ``-1`` the one before it (the last, when looping).
        """
        base = self.position - 1 if self.position > 0 else (-1 if delta > 0 else 0)
        return self._bound(base + delta)

    def _bound(self, index: int) -> int:
        """Wrap (``loop``) or clamp an index to the source's length."""
        n = self.length
        if n is None:
            return max(0, index)
        if getattr(self, "loop", False):
            return index % n
        return min(max(0, index), n - 1)


class ImageSource(FrameSource):
    """A single image. Decoded once at open, so a bad file fails right away."""

    can_step = True  # stepping re-delivers the same image, so "next" re-runs the model harmlessly
    length = 1

    def __init__(self, path: str | os.PathLike[str], *, repeat: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = self.path.name or str(path)
        self.origin = str(self.path)
        self.repeat = repeat
        t0 = time.perf_counter()
        try:
            self._rgb = load_image(self.path)
        except ImageError as exc:
            raise SourceError(str(exc), fatal=True) from None
        self._decode_ms = (time.perf_counter() - t0) * 1000.0

    def _frame(self) -> Frame:
        # A copy per delivery: consumers may draw on their frame without corrupting the next one.
        return Frame(self._rgb.copy(), 0, time.perf_counter(), self.origin, self._decode_ms)

    def read(self) -> Frame | None:
        """The image once (every time with ``repeat=True``), then None."""
        self._check_open()
        if self.position >= 1 and not self.repeat:
            return None
        self.position = 1
        return self._frame()

    def _goto(self, index: int) -> Frame | None:
        self.position = 1
        return self._frame()

    def close(self) -> None:
        super().close()
        self._rgb = np.zeros((1, 1, 3), np.uint8)  # let a 100-megapixel photo go now


def _natural_key(name: str) -> tuple[list[Any], str]:
    """Sort "img2" before "img10", case-insensitively, with the plain name as tie-break."""
    parts = re.split(r"(\d+)", name)
    return [int(p) if p.isdigit() else p.lower() for p in parts], name


class FolderSource(FrameSource):
    """The images directly inside a folder, in natural name order (no recursion).

    Hidden files are skipped (macOS ``._photo.jpg`` companions are not images). A file that will not
    decode raises a non-fatal :class:`SourceError` naming it; the cursor has already moved past it, so
    the next ``read()`` continues with the following file.
    """

    can_step = True

    def __init__(self, path: str | os.PathLike[str], *, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = self.path.name or str(path)
        self.origin = str(self.path)
        self.loop = loop
        if not self.path.is_dir():
            raise SourceError(f"{self.name}: not a folder", fatal=True)
        try:
            entries = list(self.path.iterdir())
        except OSError as exc:
            raise SourceError(
                f"{self.name}: cannot list folder ({exc.strerror or exc})", fatal=True
            ) from None
        self.files = sorted(
            (p for p in entries if is_image_path(p) and not p.name.startswith(".") and p.is_file()),
            key=lambda p: _natural_key(p.name),
        )
        if not self.files:
            raise SourceError(f"{self.name}: no images in this folder", fatal=True)
        self.length = len(self.files)

    def read(self) -> Frame | None:
        """The next image; None after the last one unless ``loop``."""
        self._check_open()
        if self.position >= len(self.files):
            if not self.loop:
                return None
            self.position = 0
        i = self.position
        self.position = i + 1
        return self._load(i)

    def _goto(self, index: int) -> Frame | None:
        self.position = index + 1  # past it even if it fails to decode, so the next step moves on
        return self._load(index)

    def _load(self, i: int) -> Frame:
        path = self.files[i]
        t0 = time.perf_counter()
        try:
            rgb = load_image(path)
        except ImageError as exc:
            raise SourceError(str(exc)) from None  # names the file; the folder itself is fine
        t1 = time.perf_counter()
        return Frame(rgb, i, t1, str(path), (t1 - t0) * 1000.0)


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    """OpenCV's BGR (or gray/BGRA from odd cameras) to RGB uint8."""
    if bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3:
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # ~3x faster than slicing + copy
    return frame_to_rgb(bgr, bgr=True)


class VideoSource(FrameSource):
    """A video file through ``cv2.VideoCapture``.

    The first frame is decoded at open, so a file that is not a video, or whose codec OpenCV lacks,
    fails there with one line instead of producing a black player. ``loop`` rewinds at the end.
    """

    can_step = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        loop: bool = True,
        capture_factory: Callable[[str], Capture] = cv2.VideoCapture,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = self.path.name or str(path)
        self.origin = str(self.path)
        self.loop = loop
        if not self.path.is_file():
            raise SourceError(f"no such file: {path}", fatal=True)
        self._cap: Capture | None = capture_factory(str(self.path))
        try:
            if not self._cap.isOpened():
                raise SourceError(
                    f"{self.name}: not a video OpenCV can open (corrupt, or a format it lacks)", fatal=True
                )
            n = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
            self.length = int(n) if n and n > 0 else None
            fps = self._cap.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and 0 < fps < 1000 else DEFAULT_VIDEO_FPS
            t0 = time.perf_counter()
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                raise SourceError(
                    f"{self.name}: no frame could be decoded (corrupt, or a codec OpenCV lacks)", fatal=True
                )
            self._pending: tuple[np.ndarray, float] | None = (bgr, (time.perf_counter() - t0) * 1000.0)
        except BaseException:
            self._cap.release()
            self._cap = None
            raise

    @property
    def capture(self) -> Capture | None:
        """The underlying capture (None once closed), e.g. to check ``isOpened()``."""
        return self._cap

    def read(self) -> Frame | None:
        """The next frame; at the end, rewinds with ``loop``, else returns None."""
        cap = self._open_capture()
        if self._pending is not None:
            bgr, ms = self._pending
            self._pending = None
            return self._deliver(bgr, ms)
        t0 = time.perf_counter()
        ok, bgr = cap.read()
        if not ok or bgr is None:
            if self.position == 0:
                raise SourceError(f"{self.name}: the video stopped decoding", fatal=True)
            if self.length is None or self.position < self.length:
                self.length = self.position  # the container over-promised; trust what decoded
            if not self.loop:
                return None
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self.position = 0
            t0 = time.perf_counter()
            ok, bgr = cap.read()
            if not ok or bgr is None:
                raise SourceError(f"{self.name}: cannot rewind to the start", fatal=True)
        return self._deliver(bgr, (time.perf_counter() - t0) * 1000.0)

    def _goto(self, index: int) -> Frame | None:
        """Seek with CAP_PROP_POS_FRAMES and read; None when nothing decodes there."""
        cap = self._open_capture()
        self._pending = None
        t0 = time.perf_counter()
        cap.set(cv2.CAP_PROP_POS_FRAMES, float(index))
        self.position = index
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return None
        return self._deliver(bgr, (time.perf_counter() - t0) * 1000.0)

    def close(self) -> None:
        super().close()
        self._pending = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _open_capture(self) -> Capture:
        self._check_open()
        assert self._cap is not None
        return self._cap

    def _deliver(self, bgr: np.ndarray, ms: float) -> Frame:
        i = self.position
        self.position = i + 1
        rgb = _bgr_to_rgb(bgr)
        return Frame(rgb, i, time.perf_counter(), self.origin, ms)


class CameraSource(FrameSource):
    """A webcam through ``cv2.VideoCapture(index)``.

    A failed read is retried up to ``max_failures`` times (cameras drop the odd frame); after that the
    camera is considered gone, released, and every read raises a fatal :class:`SourceError` until
    :meth:`reopen` (the app's Retry button) succeeds. ``capture_factory`` receives the index; tests pass
    one that opens a real capture on a short video file to play a camera that runs dry.
    """

    is_live = True

    def __init__(
        self,
        index: int = 0,
        width: int | None = None,
        height: int | None = None,
        *,
        capture_factory: Callable[[int], Capture] = cv2.VideoCapture,
        max_failures: int = 5,
        retry_delay: float = 0.02,
    ) -> None:
        super().__init__()
        if index < 0:
            raise SourceError(f"camera {index}: camera numbers start at 0", fatal=True)
        self.index = index
        self.name = f"camera {index}"
        self.origin = f"camera:{index}"
        self.width = width
        self.height = height
        self.capture_factory = capture_factory
        self.max_failures = max(1, max_failures)
        self.retry_delay = retry_delay
        self._cap: Capture | None = None
        self._dead = False
        self._open()

    @property
    def capture(self) -> Capture | None:
        """The underlying capture (None once closed or gone)."""
        return self._cap

    def _open(self) -> None:
        cap = self.capture_factory(self.index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"camera {self.index} could not be opened (not connected, in use by another app, or no permission)",
                fatal=True,
            )
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(self.width))
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(self.height))
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        self._cap = cap
        self._dead = False
        self._closed = False

    def reopen(self) -> None:
        """Release and open the camera again (after it was unplugged and plugged back)."""
        self._release()
        self._open()

    def read(self) -> Frame | None:
        """The next frame; never None (a camera does not end), raises when it stops delivering."""
        self._check_open()
        if self._dead or self._cap is None:
            raise self._gone()
        for attempt in range(self.max_failures):
            t0 = time.perf_counter()
            ok, bgr = self._cap.read()
            if ok and bgr is not None and bgr.size:
                t1 = time.perf_counter()
                i = self.position
                self.position = i + 1
                return Frame(_bgr_to_rgb(bgr), i, t1, self.origin, (t1 - t0) * 1000.0)
            if attempt + 1 < self.max_failures and self.retry_delay > 0:
                time.sleep(self.retry_delay)
        self._dead = True
        self._release()  # free the device so a replugged camera can be opened again
        raise self._gone()

    def close(self) -> None:
        super().close()
        self._release()

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _gone(self) -> SourceError:
        return SourceError(f"camera {self.index} stopped delivering frames (unplugged?)", fatal=True)


_CAMERA_SPEC = re.compile(r"^(?:camera|cam)(?::(\d+))?$", re.IGNORECASE)


def _accepted(cls: type, kw: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kw.items() if k in params}


def is_camera_spec(spec: str | os.PathLike[str]) -> bool:
    """``"camera"`` / ``"camera:N"`` (or ``cam``): opening one can take seconds, so the app opens it
    off the UI thread."""
    return _CAMERA_SPEC.match(os.fspath(spec).strip()) is not None


def open_source(spec: str | os.PathLike[str], **kw: Any) -> FrameSource:
    """Open whatever ``spec`` names: ``"camera"``/``"camera:N"``, a folder, an image, or a video.

    Keyword options a given source does not take are ignored, so one set of settings (``loop``,
    ``width``...) can be passed for any spec. Images are recognised by suffix, or for a file with an
    unknown suffix by decoding it; anything else is tried as a video.
    """
    text = os.fspath(spec)
    m = _CAMERA_SPEC.match(text.strip())
    if m:
        return CameraSource(int(m.group(1) or 0), **_accepted(CameraSource, kw))
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(f"no such file or folder: {text}", fatal=True)
    if path.is_dir():
        return FolderSource(path, **_accepted(FolderSource, kw))
    if is_image_path(path):
        return ImageSource(path, **_accepted(ImageSource, kw))
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        with contextlib.suppress(SourceError):
            return ImageSource(path, **_accepted(ImageSource, kw))
    try:
        return VideoSource(path, **_accepted(VideoSource, kw))
    except SourceError:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            raise
        raise SourceError(f"{path.name}: neither an image nor a video that can be read", fatal=True) from None


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log (``[ WARN ] can't open camera by index``) and restore it afterwards."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # very old builds
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def list_cameras(
    max_index: int = 4, *, capture_factory: Callable[[int], Capture] = cv2.VideoCapture
) -> list[int]:
    """Indices in ``0 .. max_index - 1`` that open as cameras, probed without console noise.

    On Linux an index without a ``/dev/videoN`` node is skipped without asking OpenCV at all.
    """
    skip_missing = sys.platform.startswith("linux") and Path("/dev").is_dir()
    found: list[int] = []
    with _quiet_opencv():
        for i in range(max(0, max_index)):
            if skip_missing and capture_factory is cv2.VideoCapture and not Path(f"/dev/video{i}").exists():
                continue
            cap = capture_factory(i)
            try:
                if cap.isOpened():
                    found.append(i)
            finally:
                cap.release()
    return found


__all__ = [
    "VIDEO_SUFFIXES",
    "is_camera_spec",
    "CameraSource",
    "Capture",
    "FolderSource",
    "Frame",
    "FrameSource",
    "ImageSource",
    "SourceError",
    "VideoSource",
    "list_cameras",
    "open_source",
]
