"""The Predictor: preprocess -> model -> recorder -> a Result, with per-stage timings.

Headless and thread-agnostic: the app's worker thread owns one, the CLI another. The model runs in
``torch.inference_mode`` on the best device available (CUDA > MPS > CPU) unless told otherwise.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .images import Preprocess, to_rgb_array
from .recorder import ExcitationRecorder


class InferenceError(RuntimeError):
    """A failure while running the model (e.g. GPU out of memory); one-line message."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError("CUDA was requested but no CUDA GPU is available; use --device cpu")
    return dev


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names from torchvision's weights metadata (no download)."""
    from torchvision.models import VGG16_Weights

    return list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def default_class_names(num_classes: int) -> list[str]:
    return imagenet_categories() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]


@dataclass
class Prediction:
    index: int
    label: str
    prob: float


@dataclass
class Result:
    """Everything the views need about one input; numpy only, safe to hand across threads."""

    topk: list[Prediction]
    excitations: OrderedDict[str, np.ndarray]  # block -> (C,) gates in [0, 1]
    squeezes: OrderedDict[str, np.ndarray]  # block -> (C,) channel means before the gate
    # block -> (before gate, after gate), each (C, h, w), only for the blocks asked for
    feature_maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    spatial_maps: dict[str, np.ndarray] = field(default_factory=dict)  # block -> (h, w) spatial attention
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    image: np.ndarray | None = None  # the RGB frame that was classified
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def top1(self) -> Prediction:
        return self.topk[0]


class Predictor:
    """Run a model with attention recording on images or frames.

    ``maps_for``: block names whose feature maps to keep (before/after the gate, downsampled to
    ``map_size``); the app passes only the block on screen.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: str | torch.device | None = "auto",
        half: bool = False,
        class_names: Sequence[str] | None = None,
        preprocess: Preprocess | None = None,
        channels_last: bool = False,
        maps_for: Iterable[str] = (),
        map_size: int = 28,
    ) -> None:
        self.device = resolve_device(device)
        self.half = bool(half and self.device.type == "cuda")
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if self.half:
            self.model.half()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        num_classes = _num_outputs(model)
        names = class_names or getattr(model, "class_names", None) or default_class_names(num_classes)
        self.class_names = list(names)
        self.preprocess = preprocess or Preprocess()
        self.recorder = ExcitationRecorder(self.model, feature_maps=maps_for, map_size=map_size).attach()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @property
    def block_names(self) -> list[str]:
        return list(self.recorder.blocks)

    def set_maps_for(self, names: Iterable[str]) -> None:
        self.recorder.set_feature_maps(names)

    def close(self) -> None:
        """Remove every hook this predictor put on the model."""
        self.recorder.detach()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    def predict(self, image: Any, topk: int = 5, *, bgr: bool = False) -> Result:
        """Classify one image (path, bytes, PIL image or numpy frame)."""
        return self.predict_batch([image], topk=topk, bgr=bgr)[0]

    def predict_batch(self, images: Sequence[Any], topk: int = 5, *, bgr: bool = False) -> list[Result]:
        t0 = time.perf_counter()
        rgbs = [to_rgb_array(im, bgr=bgr) for im in images]
        x = torch.stack([self.preprocess(r) for r in rgbs])
        t1 = time.perf_counter()
        probs = self._forward(x)
        t2 = time.perf_counter()
        ex = self.recorder.excitations
        sq = self.recorder.squeezes
        fm = self.recorder.feature_maps
        sp = self.recorder.spatial_maps
        k = min(topk, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        results = []
        for b, rgb in enumerate(rgbs):
            preds = [
                Prediction(
                    int(i),
                    self.class_names[int(i)] if int(i) < len(self.class_names) else str(int(i)),
                    float(p),
                )
                for p, i in zip(top_p[b], top_i[b], strict=True)
            ]
            results.append(
                Result(
                    topk=preds,
                    excitations=OrderedDict((n, v[b].numpy()) for n, v in ex.items()),
                    squeezes=OrderedDict((n, v[b].numpy()) for n, v in sq.items()),
                    feature_maps={n: (a[b].numpy(), o[b].numpy()) for n, (a, o) in fm.items()},
                    spatial_maps={n: m[b, 0].numpy() for n, m in sp.items()},
                    image=rgb,
                )
            )
        t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "model": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        for r in results:
            r.timings = dict(timings)
        return results

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            with torch.inference_mode():
                x = x.to(self.device, non_blocking=True)
                if self.half:
                    x = x.half()
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                logits = self.model(x)
                probs = torch.softmax(logits.float(), dim=1).cpu()
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise InferenceError(
                "GPU out of memory: switch to CPU, enable half precision or close other GPU programs"
            ) from None
        return probs


def _num_outputs(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 1000
