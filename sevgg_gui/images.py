"""Decode any image a user may have, safely, and preprocess frames for the model.

Everything becomes an RGB uint8 ``numpy`` array (H, W, 3). Failures raise :class:`ImageError` with a
one-line message meant for people (what is wrong, not a traceback).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:  # torch is imported where it is used: the app shows its window before torch loads
    import torch

MAX_PIXELS = 120_000_000  # ~11k x 11k; beyond that a file is far more likely a bomb than a photo
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".pbm",
    ".ico",
}


class ImageError(ValueError):
    """An input that is not a usable image; the message is one line."""


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGB uint8: 16-bit and float scaled, alpha composited on white, CMYK/P converted."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if mode.startswith("I;16"):
            a = a / 257.0
        else:
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        g = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "P" and "transparency" in img.info or mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def load_image(
    source: str | os.PathLike[str] | bytes | BinaryIO | Image.Image,
    *,
    max_pixels: int = MAX_PIXELS,
    draft_size: int | None = 1024,
) -> np.ndarray:
    """Decode a file, bytes, stream or PIL image to RGB uint8, honouring EXIF orientation.

    ``draft_size`` lets JPEG decode at reduced scale when the image is much larger (fast and
    memory-light for 50-megapixel photos); ``None`` decodes at full size.
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, str | os.PathLike):
            p = Path(source)
            if not p.exists():
                raise ImageError(f"{name}: no such file")
            if p.is_dir():
                raise ImageError(f"{name}: is a folder, not an image")
            if p.stat().st_size == 0:
                raise ImageError(f"{name}: empty file")
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        try:
            with warnings.catch_warnings():
                # Pillow warns above ~89 MP, below our own limit: max_pixels is checked right after opening.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(stream)
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image, or a format Pillow cannot read") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name}: refused: too many pixels (decompression-bomb guard)") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot open ({_first_line(exc)})") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(f"{name}: image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(
            f"{name}: refused: {w}x{h} is {w * h / 1e6:.0f} megapixels (limit {max_pixels / 1e6:.0f})"
        )
    try:
        if draft_size and img.format == "JPEG" and min(w, h) > 2 * draft_size:
            img.draft("RGB", (draft_size, draft_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            img = ImageOps.exif_transpose(img) or img
        return pil_to_rgb_array(img)
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise ImageError(f"{name}: corrupt or truncated image ({_first_line(exc)})") from None


def frame_to_rgb(frame: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """Normalise a numpy frame (gray, RGB/BGR, RGBA/BGRA, uint8/uint16/float) to RGB uint8."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"frame of shape {tuple(np.shape(frame))} is not an image (H, W[, 1|3|4])")
    if a.dtype == np.uint16:
        a = (a / 257.0).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = np.nan_to_num(a)  # before max(): one NaN would otherwise hide a [0, 1] frame's range
        a = np.clip(a * (255.0 if a.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    if bgr:
        a = a[..., ::-1]
    return np.ascontiguousarray(a)


def to_rgb_array(image: Any, *, bgr: bool = False) -> np.ndarray:
    """Accept a path, bytes, PIL image or numpy frame; return RGB uint8."""
    if isinstance(image, np.ndarray):
        return frame_to_rgb(image, bgr=bgr)
    return load_image(image)


@dataclass(frozen=True)
class Preprocess:
    """Resize-shorter-side + centre-crop + normalise, as torchvision's ImageNet transforms.

    Implemented as one crop-then-resize in source coordinates, so a 1x10,000 strip or a 1x1 pixel
    costs nothing extra and never allocates a giant intermediate. ``interpolation`` ("bilinear",
    "bicubic" or "nearest", a model's own recipe such as timm's data config) is used when the crop is
    enlarged; shrinking always averages (``INTER_AREA``), the anti-aliasing torchvision and PIL apply.
    """

    crop_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    @classmethod
    def from_weights(cls, weights: Any) -> Preprocess:
        """Read sizes and statistics from a torchvision weights enum (no download)."""
        t = weights.transforms()
        return cls(
            crop_size=int(t.crop_size[0]),
            resize_size=int(t.resize_size[0]),
            mean=tuple(float(m) for m in t.mean),
            std=tuple(float(s) for s in t.std),
        )

    def crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the centre square that maps onto the crop."""
        side = min(h, w) * self.crop_size / self.resize_size
        ch, cw = max(1, min(h, round(side))), max(1, min(w, round(side)))
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def crop_resize(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        top, left, ch, cw = self.crop_box(*rgb.shape[:2])
        region = rgb[top : top + ch, left : left + cw]
        s = self.crop_size
        enlarge = {"bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}.get(
            self.interpolation, cv2.INTER_LINEAR
        )
        interp = cv2.INTER_AREA if ch > s else enlarge
        return cv2.resize(np.ascontiguousarray(region), (s, s), interpolation=interp)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        """RGB uint8 (H, W, 3) -> normalised float tensor (3, S, S)."""
        import torch

        x = torch.from_numpy(self.crop_resize(rgb)).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return x.sub_(mean).div_(std)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _describe(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return Path(source).name or str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return "<PIL image>"
    return getattr(source, "name", "<stream>")
