"""The Predictor: preprocess -> model -> recorder -> a Result, with per-stage timings.

Headless and thread-agnostic: the app's worker thread owns one, the CLI another. The model runs in
``torch.inference_mode`` on the best device available (CUDA > MPS > CPU) unless told otherwise.

Speed (``benchmarks/bench_fast_path.py``): by default the CPU path feeds the model channels_last
input and runs every ``Conv2d`` / ``Linear`` inside a ``Sequential`` as one oneDNN call (convolution
weights packed once), fused with the ``ReLU`` that follows it (:class:`CpuFastPath`); the numbers
equal eager channels_last to float rounding. ``SEVGG_FAST=0`` in the environment, or
``fuse=False, channels_last=False``, gives plain eager NCHW. On a GPU: channels_last,
``cudnn.benchmark``, pinned-memory uploads and optional half precision. ``torch_compile=True`` is
opt-in everywhere (about 30 s of compiling at the first frame on a 2-core CPU, and no faster there).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .images import Preprocess, to_rgb_array
from .models.se import SEBlock, se_then_max_pool
from .recorder import ExcitationRecorder
from .taps.probe import example_input


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
    """The 1,000 ImageNet class names from torchvision's weights metadata (no download).

    Read from torchvision's ``models/_meta.py`` source when torchvision is not imported yet: importing
    it costs a second of start-up (it pulls in ``torch._dynamo``), and the names are plain literals.
    """
    import sys

    if "torchvision.models" not in sys.modules:
        names = _imagenet_categories_from_source()
        if names is not None:
            return names
    from torchvision.models import VGG16_Weights

    return list(VGG16_Weights.IMAGENET1K_V1.meta["categories"])


def _imagenet_categories_from_source() -> list[str] | None:
    import ast
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / "models" / "_meta.py"
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets
            ):
                names = ast.literal_eval(node.value)
                if isinstance(names, list) and len(names) == 1000 and all(isinstance(n, str) for n in names):
                    return names
    except (ImportError, OSError, ValueError, SyntaxError, StopIteration):
        pass
    return None


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
    evidence: Any = None  # evidence.ClassEvidence of this frame while the class-evidence overlay is on

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
        channels_last: bool | None = None,
        maps_for: Iterable[str] = (),
        map_size: int = 28,
        fuse: bool | None = None,
        torch_compile: bool | str = False,
        pin_memory: bool | None = None,
        cudnn_benchmark: bool = True,
    ) -> None:
        """Speed options (``None`` = automatic; ``SEVGG_FAST=0`` turns the automatic ones off):

        ``channels_last``: feed NHWC input (CPU: with the fused path; GPU: also converts the model).
        ``fuse``: CPU only, :class:`CpuFastPath` (oneDNN convolutions and inner products, ReLU fused).
        ``torch_compile``: ``True`` or a mode name ("max-autotune", ...); opt-in, falls back to eager
        with a warning if compilation fails. ``pin_memory``: page-locked host buffers for the upload
        (GPU only). ``cudnn_benchmark``: let cuDNN pick the fastest kernels for the input shape.
        """
        self.device = resolve_device(device)
        self.half = bool(half and self.device.type == "cuda")
        fast = fast_defaults_enabled()
        on_cpu, on_cuda = self.device.type == "cpu", self.device.type == "cuda"
        if fast and on_cpu:
            from .allocator import keep_freed_memory

            keep_freed_memory()  # activations' pages kept between forwards (1.2-1.4x on CPU)
        fuse_auto = fuse is None
        if fuse is None:
            fuse = fast and on_cpu
        # torch.compile does its own fusion (and must not trace our swapped forwards).
        self.fused = bool(fuse and on_cpu and not torch_compile and cpu_fusion_available())
        # NHWC input that only follows the fused path (dropped with it if eager wins the trial).
        self._nhwc_with_fuse = channels_last is None and on_cpu and self.fused
        if channels_last is None:
            # CPU: NHWC only pays off together with the packed convolutions; GPU: NHWC kernels.
            channels_last = fast and ((on_cpu and (self.fused or bool(torch_compile))) or on_cuda)
        self.channels_last = bool(channels_last)
        # Automatic fusion is kept only where it measures faster than eager (FastPathTrial).
        self.fast_trial: FastPathTrial | None = FastPathTrial() if fuse_auto and self.fused else None
        self.fast_path_verdict: str | None = None
        self.pin_memory = bool(on_cuda if pin_memory is None else pin_memory and on_cuda)
        self.model = model.eval().to(self.device)
        if self.half:
            self.model.half()
        # The CPU fast path packs its own NHWC weights, so the caller's model keeps its layout; an
        # explicit request (or a GPU) converts the model's weights, as before.
        if self.channels_last and not self.fused:
            self.model.to(memory_format=torch.channels_last)
        self.fast_path = CpuFastPath(self.model) if self.fused else None
        self._run: Callable[[torch.Tensor], torch.Tensor] = self.model
        self.compile_error: str | None = None
        if torch_compile:
            mode = torch_compile if isinstance(torch_compile, str) else None
            self._run = torch.compile(self.model, mode=mode, dynamic=False)
        num_classes = _num_outputs(model)
        names = class_names or getattr(model, "class_names", None) or default_class_names(num_classes)
        self.class_names = list(names)
        self.preprocess = preprocess or Preprocess()
        # Two synthetic images at the model's input size: modules of unregistered types are probed
        # once for gate behaviour (no forward at all when every type is known, e.g. VGG16-SE).
        example = example_input(
            self.preprocess.crop_size, device=self.device, dtype=torch.half if self.half else torch.float32
        )
        self.recorder = ExcitationRecorder(
            self.model, feature_maps=maps_for, map_size=map_size, example_input=example
        ).attach()
        if on_cuda and cudnn_benchmark:
            torch.backends.cudnn.benchmark = True

    @property
    def block_names(self) -> list[str]:
        return list(self.recorder.blocks)

    def set_maps_for(self, names: Iterable[str]) -> None:
        self.recorder.set_feature_maps(names)

    def close(self) -> None:
        """Remove every hook this predictor put on the model (and drop packed weights)."""
        self.recorder.detach()
        if self.fast_path is not None:
            self.fast_path.release()

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
                    feature_maps={n: (_array(a[b]), _array(o[b])) for n, (a, o) in fm.items()},
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
                if self.pin_memory:
                    x = x.pin_memory()  # page-locked: the copy below runs asynchronously
                x = x.to(self.device, non_blocking=True)
                if self.half:
                    x = x.half()
                trial = self.fast_trial
                use_fast = self.fast_path is not None and (trial is None or trial.next_fused())
                if self.channels_last and (use_fast or not self._nhwc_with_fuse):
                    x = x.contiguous(memory_format=torch.channels_last)
                t0 = time.perf_counter()
                with self.fast_path.active() if use_fast else contextlib.nullcontext():
                    logits = self._call_model(x)
                probs = torch.softmax(logits.float(), dim=1).cpu()
                if trial is not None:
                    self._trial_step(trial, use_fast, (time.perf_counter() - t0) / max(1, x.shape[0]))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise InferenceError(
                "GPU out of memory: switch to CPU, enable half precision or close other GPU programs"
            ) from None
        return probs

    def _trial_step(self, trial: FastPathTrial, fused: bool, seconds_per_image: float) -> None:
        keep = trial.record(fused, seconds_per_image)
        if keep is None:
            return
        self.fast_trial, self.fast_path_verdict = None, trial.verdict
        if not keep and self.fast_path is not None:
            self.fast_path.release()  # eager is faster on this CPU: drop the packed weights too
            self.fast_path, self.fused = None, False
            if self._nhwc_with_fuse:
                self.channels_last = False

    def _call_model(self, x: torch.Tensor) -> torch.Tensor:
        if self._run is self.model:
            return self.model(x)
        try:
            return self._run(x)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # a model torch.compile cannot handle: stay correct, run eager
            self.compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"torch.compile failed, running eager: {self.compile_error}", stacklevel=3)
            self._run = self.model
            return self.model(x)


def _array(t: torch.Tensor) -> np.ndarray:
    """A small CPU tensor as a C-contiguous array (maps of a channels_last model come back NHWC)."""
    return np.ascontiguousarray(t.numpy())


# ----------------------------------------------------------------------------------------------
# CPU fast path
# ----------------------------------------------------------------------------------------------


def fast_defaults_enabled() -> bool:
    """The automatic speed options are on unless ``SEVGG_FAST`` is 0/false/off/no."""
    return os.environ.get("SEVGG_FAST", "1").strip().lower() not in ("0", "false", "off", "no")


def cpu_fusion_available() -> bool:
    """oneDNN's packed, fused convolution (the op inductor uses) is present in this torch build."""
    try:
        ops = torch.ops.mkldnn
        return bool(
            torch.backends.mkldnn.is_available()
            and hasattr(ops, "_convolution_pointwise")
            and hasattr(ops, "_reorder_convolution_weight")
            and hasattr(ops, "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


class FastPathTrial:
    """Whether the CPU fast path is faster than eager for this model on this CPU, measured on the
    predictor's first calls instead of assumed.

    oneDNN's packed, fused convolutions ran VGG16-SE at 0.78x torchvision VGG16's eager latency on an
    EPYC with AVX-512, but 1.7x slower than eager on an AVX2-only EPYC with the same torch (2.14.1).
    The first calls alternate the two paths; each path's first call is warm-up (weight packing,
    primitive creation), its next ``timed`` calls are timed per image, and the faster minimum wins.
    Every call's result is right either way: the two paths agree to float rounding.
    """

    def __init__(self, timed: int = 2) -> None:
        self.timed = timed
        self.calls = 0
        self.samples: dict[bool, list[float]] = {True: [], False: []}
        self.verdict: str | None = None

    def next_fused(self) -> bool:
        return self.calls % 2 == 0

    def record(self, fused: bool, seconds_per_image: float) -> bool | None:
        """Note one call; the decision (keep the fused path?) once both paths are timed, else None."""
        self.calls += 1
        if self.calls > 2:  # calls 1 and 2 warmed each path up
            self.samples[fused].append(seconds_per_image)
        if min(len(v) for v in self.samples.values()) < self.timed:
            return None
        f, e = min(self.samples[True]), min(self.samples[False])
        keep = f <= e
        self.verdict = (
            f"{'fused' if keep else 'eager'} kept: fused {f * 1e3:.1f} ms, eager {e * 1e3:.1f} ms per image"
        )
        return keep


def _big_linear(m: nn.Module) -> bool:
    """A ``Linear`` worth a oneDNN inner product: memory-bound (1M weights and more). Small ones
    (an SE block's excitation MLP) stay with the module, so they compute the same bits whether or
    not the recorder hooks them."""
    return type(m) is nn.Linear and m.weight.numel() >= 1 << 20


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _global_hooks() -> bool:
    from torch.nn.modules import module

    return bool(module._global_forward_hooks or module._global_forward_pre_hooks)


class CpuFastPath:
    """Run a model's convolutions and linear layers as oneDNN primitives, fused with a following ReLU.

    Eager PyTorch reorders every convolution weight into oneDNN's blocked layout on every call, runs
    each ``ReLU`` as a separate pass over the feature map, and sends ``Linear`` to MKL's GEMV, which
    streams VGG16's 400 MB classifier weights at about half the memory bandwidth. This packs each
    convolution weight once (again when it changes: a new tensor or an in-place update such as
    ``load_state_dict``), applies a following ReLU inside the convolution or inner product, and runs
    large ``Linear`` layers as oneDNN inner products. Results equal eager channels_last to float
    rounding (the convolutions bit for bit, the inner products within ~1e-6 relative).

    Only plain ``nn.Sequential`` containers are taken over, and only while :meth:`active` is entered
    (the Predictor enters it around each forward), by giving the container an instance ``forward``;
    the model's structure, parameters and state_dict are never changed. A layer or ReLU with hooks
    is called as a module, so hooks see what they always saw; every other module (SE blocks with
    the recorder's hooks, pools, dropout) is called as usual. Falls back to the module whenever the
    call is not a float32 CPU inference call.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.containers = [
            m
            for m in model.modules()
            if isinstance(m, nn.Sequential)
            and type(m).forward is nn.Sequential.forward
            and any(type(c) is nn.Conv2d or _big_linear(c) for c in m.children())
        ]
        self._packed: dict[nn.Conv2d, tuple[torch.Tensor, int, torch.Tensor]] = {}
        self.fused_calls = 0  # layer+ReLU pairs run fused (tests, benchmarks)
        self.plain_calls = 0  # layers run through oneDNN without a fused activation

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        patched = []
        try:
            for seq in self.containers:
                if "forward" not in seq.__dict__:
                    seq.forward = self._runner(seq)
                    patched.append(seq)
            yield
        finally:
            for seq in patched:
                seq.__dict__.pop("forward", None)

    def release(self) -> None:
        """Drop the packed weights (they are rebuilt on the next call)."""
        self._packed.clear()

    @property
    def packed_bytes(self) -> int:
        """Memory held by the packed weights (a copy of every convolution weight used so far)."""
        return sum(p.numel() * p.element_size() for _w, _v, p in self._packed.values())

    def _runner(self, seq: nn.Sequential) -> Callable[[torch.Tensor], torch.Tensor]:
        ops = torch.ops.mkldnn

        def forward(x: torch.Tensor) -> torch.Tensor:
            mods = list(seq._modules.values())
            n = len(mods)
            i = 0
            plain = not torch.is_grad_enabled() and not _global_hooks()
            while i < n:
                m = mods[i]
                kind = type(m)
                if plain and (kind is nn.Conv2d or _big_linear(m)) and self._fits(m, x):
                    act = mods[i + 1] if i + 1 < n else None
                    fuse = type(act) is nn.ReLU and not _hooked(act)  # type: ignore[arg-type]
                    attr = "relu" if fuse else "none"
                    if kind is nn.Conv2d:
                        x = ops._convolution_pointwise(
                            x,
                            self._weight(m),  # type: ignore[arg-type]
                            m.bias,
                            list(m.padding),
                            list(m.stride),
                            list(m.dilation),
                            m.groups,
                            attr,
                            [],
                            "",
                        )
                    else:
                        x = ops._linear_pointwise(x, m.weight, m.bias, attr, [], "")
                    if fuse:
                        self.fused_calls += 1
                        i += 2
                    else:
                        self.plain_calls += 1
                        i += 1
                    continue
                if plain and i + 1 < n and isinstance(m, SEBlock):
                    y = se_then_max_pool(m, mods[i + 1], x)  # gate applied after the pool: same numbers
                    if y is not None:
                        x = y
                        i += 2
                        continue
                x = m(x)
                i += 1
            return x

        return forward

    @staticmethod
    def _fits(m: nn.Module, x: torch.Tensor) -> bool:
        w = m.weight
        if _hooked(m) or x.dtype != torch.float32 or not x.is_cpu or x.requires_grad:
            return False
        if w.dtype != torch.float32 or not w.is_cpu:
            return False
        if type(m) is nn.Linear:
            return x.dim() == 2
        return x.dim() == 4 and m.padding_mode == "zeros" and not isinstance(m.padding, str)

    def _weight(self, conv: nn.Conv2d) -> torch.Tensor:
        w = conv.weight
        hit = self._packed.get(conv)
        if hit is not None and hit[0] is w and hit[1] == w._version:
            return hit[2]
        packed = torch.ops.mkldnn._reorder_convolution_weight(
            w.detach(), list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups
        )
        self._packed[conv] = (w, w._version, packed)
        return packed


def _num_outputs(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else 1000
