"""Threads that move frames from a source to whoever consumes them, without Qt.

The model is slower than a camera, so a queue would only grow and show ever staler frames. A
:class:`LatestSlot` holds one item: a producer that outpaces its consumer overwrites the pending item
(and counts it as dropped), so the consumer always gets the newest frame and latency stays at one frame.

:class:`SourcePump` owns a :class:`~sevgg_gui.sources.FrameSource` on its own thread: it paces video
files to their frame rate, lets cameras pace themselves, reads images and folders on request, and
turns every source failure into an ``on_error(message)`` call instead of an exception lost in a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .sources import Frame, FrameSource, SourceError

T = TypeVar("T")
log = logging.getLogger(__name__)


class LatestSlot(Generic[T]):
    """A one-item mailbox: ``put`` replaces whatever is pending, ``get`` takes it.

    Counters: ``put_count`` (items offered), ``dropped`` (items replaced before anyone took them),
    ``taken`` (items handed to a consumer); ``put_count == dropped + taken + pending`` always holds.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has = False
        self._closed = False
        self.put_count = 0
        self.dropped = 0
        self.taken = 0

    def put(self, item: T) -> bool:
        """Offer ``item``, replacing a pending one; False (and nothing stored) once closed."""
        with self._cond:
            if self._closed:
                return False
            if self._has:
                self.dropped += 1
            self._item = item
            self._has = True
            self.put_count += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """The pending item, waiting up to ``timeout`` seconds (None: forever) for one.

        Returns None on timeout and once the slot is closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._has or self._closed, timeout)
            if self._closed or not self._has:
                return None
            return self._take()

    def clear(self) -> bool:
        """Discard the pending item (e.g. a frame of the previous source); True if there was one."""
        with self._cond:
            had = self._has
            if had:
                self.dropped += 1
                self._item = None
                self._has = False
                self._cond.notify_all()
            return had

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until the consumer has taken the pending item; True if the slot is empty (or closed)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._has or self._closed, timeout)

    def close(self) -> None:
        """Wake every waiter; from now on ``get`` returns None and ``put`` refuses."""
        with self._cond:
            self._closed = True
            self._item = None
            self._has = False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> bool:
        return self._has

    def _take(self) -> T | None:
        item = self._item
        self._item = None
        self._has = False
        self.taken += 1
        self._cond.notify_all()  # wakes wait_empty
        return item


ErrorCallback = Callable[[str], None]
EndCallback = Callable[[], None]

_STOP, _AUTO, _READ, _STEP, _SEEK = "stop", "auto", "read", "step", "seek"


class SourcePump:
    """Reads a source on a (non-daemon) thread and puts each :class:`Frame` into a slot.

    * Videos stream by themselves, paced to ``source.fps`` with ``realtime=True``; with
      ``realtime=False`` they go as fast as the consumer takes them and no frame is dropped.
    * Cameras stream at their own pace (a read blocks until the next frame).
    * Images and folders deliver one frame per :meth:`request_next` or :meth:`step` call.

    :meth:`pause` stops only the automatic streaming; ``step``/``seek``/``request_next`` still work.
    Source errors become ``on_error(message)``: a non-fatal one (a corrupt file in a folder) leaves the
    pump running, a fatal one (camera unplugged) ends the thread cleanly without closing the source,
    so the app can offer Retry (``source.reopen()`` and a new pump). At the end of a finite stream,
    ``on_end()`` is called and the pump idles, still answering steps. Callbacks run on the pump thread.
    :meth:`stop` must be called: it joins the thread and closes the source (releasing a camera).
    """

    def __init__(
        self,
        source: FrameSource,
        slot: LatestSlot[Frame],
        *,
        realtime: bool = True,
        on_error: ErrorCallback | None = None,
        on_end: EndCallback | None = None,
        consumer_poll: float = 0.05,
    ) -> None:
        self.source = source
        self.slot = slot
        self.realtime = realtime
        self.on_error = on_error
        self.on_end = on_end
        self.consumer_poll = consumer_poll
        self.streaming = source.is_live or source.fps is not None
        # Live sources pace themselves and must always show the newest frame, so only files are
        # paced (realtime) or held back until the consumer is ready (not realtime).
        self._period = 1.0 / source.fps if realtime and not source.is_live and source.fps else None
        self._lossless = self.streaming and not realtime and not source.is_live
        self._cond = threading.Condition()
        self._paused = False
        self._stopping = False
        self._ended = False
        self._failed = False
        self._requests = 0
        self._nav: tuple[str, int] | None = None
        self._due = 0.0
        self._close_lock = threading.Lock()
        self._source_closed = False
        self.frames = 0
        self.errors = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"SourcePump[{source.name}]", daemon=False)

    # -- control (any thread) -------------------------------------------------------------------

    def start(self) -> SourcePump:
        """Start the thread; returns self so ``pump = SourcePump(...).start()`` reads well."""
        with self._cond:
            self._due = time.perf_counter()
        self._thread.start()
        return self

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        """Continue streaming; after the end of a stream this reports the end again."""
        with self._cond:
            self._paused = False
            self._ended = False
            self._due = time.perf_counter()
            self._cond.notify_all()

    def request_next(self) -> None:
        """Read one more frame (how images and folders advance; a single frame for a paused video)."""
        with self._cond:
            self._requests += 1
            self._cond.notify_all()

    def step(self, delta: int) -> None:
        """Step the source by ``delta`` on the pump thread; quick clicks add up into one seek."""
        if not self.source.can_step:
            return
        with self._cond:
            kind, value = self._nav or (_STEP, 0)
            self._nav = (kind, value + delta)
            self._cond.notify_all()

    def seek(self, index: int) -> None:
        """Jump to an absolute frame/item index (a slider); replaces pending steps."""
        if not self.source.can_step:
            return
        with self._cond:
            self._nav = (_SEEK, index)
            self._cond.notify_all()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the thread and close the source; False if it did not finish within ``timeout``.

        A thread still blocked in a driver read closes the source itself as soon as the read returns.
        """
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.ident is None:  # never started
            self._close_source()
            return True
        if threading.current_thread() is self._thread:  # stop() from a callback: _run's finally closes
            return False
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        self._close_source()
        return True

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def failed(self) -> bool:
        """True once a fatal source error ended the thread."""
        return self._failed

    # -- pump thread ----------------------------------------------------------------------------

    def _next_action(self) -> tuple[str, int]:
        with self._cond:
            while True:
                if self._stopping:
                    return _STOP, 0
                if self._nav is not None:
                    action, self._nav = self._nav, None
                    return action
                if self._requests:
                    self._requests -= 1
                    return _READ, 0
                if self.streaming and not self._paused and not self._ended:
                    delay = self._due - time.perf_counter() if self._period else 0.0
                    if delay <= 0:
                        return _AUTO, 0
                    self._cond.wait(delay)
                else:
                    self._cond.wait()

    def _consumer_ready(self) -> bool:
        """Lossless mode: wait until the last frame was taken, giving up on pause/stop/navigation."""
        while not self.slot.wait_empty(self.consumer_poll):
            with self._cond:
                if self._stopping or self._paused or self._nav is not None:
                    return False
        return True

    def _run(self) -> None:
        src = self.source
        try:
            while True:
                kind, value = self._next_action()
                if kind == _STOP:
                    break
                if kind == _AUTO and self._lossless and not self._consumer_ready():
                    continue
                try:
                    if kind == _STEP:
                        frame = src.step(value)
                    elif kind == _SEEK:
                        frame = src.seek(value)
                    else:
                        frame = src.read()
                except SourceError as exc:
                    self._report(str(exc))
                    if exc.fatal:
                        self._failed = True
                        break
                    continue
                except Exception as exc:  # a driver bug must not die silently in this thread
                    self._report(f"{src.name}: {type(exc).__name__}: {exc}")
                    self._failed = True
                    break
                if kind == _AUTO and self._period:
                    self._advance_deadline()
                if frame is None:
                    if kind in (_AUTO, _READ):
                        with self._cond:
                            self._ended = True
                        self._call(self.on_end)
                    continue
                with self._cond:
                    if kind in (_STEP, _SEEK):
                        self._ended = False  # moved back from the end: play can continue from here
                if not self.slot.put(frame):  # the consumer closed its slot: nobody is listening
                    with self._cond:
                        self._stopping = True
                    break
                self.frames += 1
        finally:
            if self._stopping:
                self._close_source()

    def _advance_deadline(self) -> None:
        assert self._period is not None
        now = time.perf_counter()
        with self._cond:
            self._due += self._period
            if self._due < now - self._period:  # fell behind (slow decode, stall): no catch-up burst
                self._due = now

    def _report(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        self._call(self.on_error, message)

    def _call(self, callback: Callable[..., None] | None, *args: str) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("SourcePump callback %r raised", callback)

    def _close_source(self) -> None:
        with self._close_lock:
            if self._source_closed:
                return
            self._source_closed = True
        try:
            self.source.close()
        except Exception:
            log.exception("closing %s failed", self.source.name)


__all__ = ["LatestSlot", "SourcePump"]
