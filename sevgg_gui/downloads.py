"""Download a file with progress, cancellation and torchvision's hash-prefix check; no Qt.

Used for the ImageNet VGG16 weights, so the app can show a progress bar while it stays usable.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown)


class DownloadError(RuntimeError):
    """One-line reason a download failed."""


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    timeout: float = 30.0,
    chunk: int = 1 << 20,
) -> Path:
    """Fetch ``url`` to ``dest`` atomically (``.part`` then rename).

    torchvision names its files ``<name>-<first 8+ hex of sha256>.pth``; when ``dest`` follows that
    convention the hash is checked, so a truncated or tampered download is never used.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    m = re.search(r"-([a-f0-9]{8,})\.", dest.name)
    expected = m.group(1) if m else None
    sha = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                if cancel is not None and cancel.is_set():
                    raise DownloadError("download cancelled")
                block = resp.read(chunk)
                if not block:
                    break
                f.write(block)
                sha.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        if total and done != total:
            raise DownloadError(f"download incomplete: {done} of {total} bytes")
        if expected and not sha.hexdigest().startswith(expected):
            raise DownloadError(f"{dest.name}: hash mismatch (corrupt or tampered download)")
        os.replace(part, dest)
        return dest
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    except OSError as exc:  # URLError, timeouts, disk full...
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise DownloadError(f"could not download {url.rsplit('/', 1)[-1]}: {reason} (offline?)") from None


def vgg16_imagenet_target() -> tuple[str, Path]:
    """(url, cache path) of torchvision's ImageNet VGG16 weights."""
    from torchvision.models import VGG16_Weights

    from .models.vgg import cached_weights_path

    w = VGG16_Weights.IMAGENET1K_V1
    return w.url, cached_weights_path(w)
