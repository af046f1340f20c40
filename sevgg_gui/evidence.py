"""Class evidence: where a model looks for one class (a class activation map) and which channels of an
attention block carry that class (first-order channel contributions), next to the gates that scaled them.

The map methods come from pytorch-grad-cam (``grad-cam`` on PyPI): its Grad-CAM, Grad-CAM++, LayerCAM,
Eigen-CAM and Score-CAM. Only their map arithmetic is used (``get_cam_image``); the forward and the backward
are ours, for three reasons (README, "Class evidence"):

* the library registers hooks when a CAM object is built and needs ``release()``/``with`` to remove them;
  built here with no target layers it registers none, so nothing can be left behind;
* its backward is ``loss.backward()``, which fills ``.grad`` of every parameter (550 MB for VGG16) and
  walks back to the first layer; ours is ``torch.autograd.grad`` to the captured block outputs only, and the
  part of the network before the first captured block runs without autograd at all;
* one forward and one backward give both the map and the evidence of every block asked for, through the
  model's own hooks: the recorder's interventions (a muted channel) apply to the explained forward too.

Evidence of channel k at a block output A (1, C, H, W) for class c with score S_c (the logit):
``e_k = sum_{h,w} dS_c/dA_k(h,w) * A_k(h,w)``, gradient x activation summed over positions (H·W times its
spatial mean). It is the first-order contribution of the channel to the score: for a score linear in the
block's pooled output (global average pool -> Linear) it is exactly ``w_ck * mean(A_k)``, and the channels'
evidence sums to ``S_c - b_c``. Grad-CAM's channel weight is the spatial mean of the same gradient.

Core module: no Qt. Works on any ``nn.Module`` whose output is (B, classes) logits.
"""

from __future__ import annotations

import contextlib
import io
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .images import Preprocess
    from .recorder import ExcitationRecorder

# name -> pytorch-grad-cam class name; gradient-free methods need no backward for their map
METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
}
GRADIENT_FREE = frozenset({"eigencam", "scorecam"})
LIVE_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")  # Score-CAM: one forward per channel
AUTO_LAYER = "auto"


class EvidenceError(ValueError):
    """A request that cannot be explained (unknown layer, class, method); one line."""


@dataclass
class ClassEvidence:
    """One explained forward: the class map at ``layer`` and the channel evidence of ``blocks``."""

    class_index: int
    score: float  # the class logit of the explained forward
    method: str
    layer: str  # module whose output the map was computed at
    cam: np.ndarray  # (h, w) float32 >= 0 at the layer's resolution, raw (not normalised)
    evidence: OrderedDict[str, np.ndarray]  # block -> (C,) float32, gradient x activation summed over space
    gates: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)  # block -> (C,) gates applied
    ms: float = 0.0

    def correlation(self, block: str) -> tuple[float, float]:
        """(Pearson, Spearman) between the block's gates and its evidence; NaN when undefined."""
        gate = self.gates.get(block)
        ev = self.evidence.get(block)
        if gate is None or ev is None or gate.shape != ev.shape:
            return float("nan"), float("nan")
        return pearson(gate, ev), spearman(gate, ev)

    def cam_resized(self, size: tuple[int, int]) -> np.ndarray:
        """The map resized (bilinear) to (height, width), e.g. the model's square crop for an overlay."""
        return _resize(self.cam, size)


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.size < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as Spearman's coefficient defines them)."""
    a = np.asarray(a, np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size, np.float64)
    sorted_a = a[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_a)) + 1]
    ends = np.r_[starts[1:], a.size]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(_ranks(a), _ranks(b))


# ----------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish)
_default_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The output of the last convolutional block, found by one traced forward (cached per input size).

    The last Conv2d whose output is still a spatial map (a 1x1 squeeze convolution inside an SE block does
    not count), then the highest module above it (not the model itself) whose output is a spatial map
    (h x w > 1): ``features`` of VGG and MobileNet, ``layer4`` of a ResNet. Without such a container (a
    flat ``Sequential``), the convolution itself, or the activation right after it.
    """
    key = tuple(x.shape[1:])
    cached = _default_cache.get(model, {}).get(key)
    if cached is not None:
        return cached
    names = {id(m): n for n, m in model.named_modules()}
    shapes: dict[str, tuple[int, ...]] = {}
    executed: list[str] = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        name = names.get(id(module))
        if name and isinstance(output, torch.Tensor):
            shapes[name] = tuple(output.shape)
            executed.append(name)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())

    def spatial(name: str) -> bool:
        s = shapes.get(name)
        return s is not None and len(s) == 4 and s[2] * s[3] > 1

    convs = [n for n in executed if isinstance(modules[n], nn.Conv2d)]
    if not convs:
        raise EvidenceError(f"{type(model).__name__} has no Conv2d: name a layer for the class map")
    spatial_convs = [n for n in convs if spatial(n)]
    conv = spatial_convs[-1] if spatial_convs else convs[-1]
    parts = conv.split(".")
    chosen = conv
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        if spatial(prefix):
            chosen = prefix
            break
    if chosen == conv:  # the activation executed right after the convolution, if it keeps the shape
        after = executed[executed.index(conv) + 1 :] if conv in executed else []
        nxt = next((n for n in after if not n.startswith(conv + ".")), None)
        if nxt is not None and isinstance(modules[nxt], _ACTIVATIONS) and shapes.get(nxt) == shapes[conv]:
            chosen = nxt
    _default_cache.setdefault(model, {})[key] = chosen
    return chosen


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise EvidenceError(f"no layer named {name!r} in {type(model).__name__}")
    return modules[name]


# ----------------------------------------------------------------------------------------------
# the explained forward
# ----------------------------------------------------------------------------------------------


class _Capture:
    """Forward hooks that keep given modules' outputs in the autograd graph, removed on exit.

    The forward starts without autograd; the first captured module to run switches it on and makes its
    output a leaf, so nothing before it records a graph. A later captured output that does not depend on
    a parameter or an earlier capture becomes a leaf of its own. A leaf is handed on as a copy, so the
    rest of the network may work in place on it.
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _Capture:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor) or output.is_meta:
                return None
            torch.set_grad_enabled(True)  # restored by the caller's no_grad() context on exit
            if output.requires_grad:
                self.outputs[name] = output
                return None
            leaf = output.detach().requires_grad_(True)
            self.outputs[name] = leaf
            return leaf.clone()

        return hook


def explain(
    model: nn.Module,
    x: torch.Tensor,
    class_index: int | None = None,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    blocks: Iterable[str] | None = None,
    recorder: ExcitationRecorder | None = None,
) -> ClassEvidence:
    """Explain class ``class_index`` (default: the top-1 of this forward) for one input ``x`` (1, 3, H, W).

    ``layer``: module name for the map (``None``/"auto": :func:`default_layer`). ``blocks``: attention
    blocks whose channel evidence to compute (default: every block with a channel gate). ``recorder``: an
    attached :class:`ExcitationRecorder` of ``model`` whose gates (and interventions) this forward uses;
    without one a temporary recorder is attached for the call. Leaves no hooks, no ``.grad``, and no change
    of any parameter's ``requires_grad`` behind.
    """
    from .recorder import ExcitationRecorder, find_gate_blocks

    t0 = time.perf_counter()
    if method not in METHODS:
        raise EvidenceError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if x.dim() != 4 or x.shape[0] != 1:
        raise EvidenceError(f"explain takes one image (1, 3, H, W), got {tuple(x.shape)}")
    p = next(model.parameters(), None)
    if p is not None:
        x = x.to(device=p.device, dtype=p.dtype)
    layer = default_layer(model, x) if layer in (None, "", AUTO_LAYER) else layer
    layer_module = resolve_module(model, layer)
    if blocks is None:
        blocks = list(recorder.taps) if recorder is not None else [n for n, _m in find_gate_blocks(model)]
    blocks = list(blocks)
    captured = {layer: layer_module} | {b: resolve_module(model, b) for b in blocks}

    own_recorder = None
    if recorder is None or not recorder.attached:
        with contextlib.suppress(ValueError):  # a model without attention blocks: no gates to report
            own_recorder = ExcitationRecorder(model)
        recorder = own_recorder
    with contextlib.ExitStack() as stack:
        if own_recorder is not None:
            stack.enter_context(own_recorder)
        stack.enter_context(torch.inference_mode(False))
        capture = stack.enter_context(_Capture(captured))
        with torch.no_grad():  # the captures switch autograd on; no_grad's exit switches it back
            logits = model(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise EvidenceError(f"model output {type(logits).__name__} is not (batch, classes) logits")
            c = int(logits[0].argmax()) if class_index is None else int(class_index)
            if not 0 <= c < logits.shape[1]:
                raise EvidenceError(f"class {c} out of range (the model has {logits.shape[1]} classes)")
            score = logits[0, c]
            names = [n for n in captured if n in capture.outputs]
            outs = [capture.outputs[n] for n in names]
            if not score.requires_grad or not outs:
                raise EvidenceError(f"the class score does not depend on layer {layer!r}")
            grads = torch.autograd.grad(score, outs, allow_unused=True)
        gates = recorder.excitations if recorder is not None else OrderedDict()
    acts = dict(zip(names, outs, strict=True))
    grad_of = {
        n: (g if g is not None else torch.zeros_like(a)) for n, a, g in zip(names, outs, grads, strict=True)
    }
    if layer not in acts:
        raise EvidenceError(f"layer {layer!r} did not run in the forward")
    evidence = OrderedDict(
        (b, _channel_evidence(acts[b], grad_of[b])) for b in blocks if b in acts and acts[b].dim() >= 2
    )
    cam = _cam(method, model, x, layer_module, c, acts[layer], grad_of[layer])
    return ClassEvidence(
        class_index=c,
        score=float(score.detach()),
        method=method,
        layer=layer,
        cam=cam,
        evidence=evidence,
        gates=OrderedDict((b, gates[b][0].numpy()) for b in blocks if b in gates),
        ms=(time.perf_counter() - t0) * 1e3,
    )


def _channel_evidence(a: torch.Tensor, g: torch.Tensor) -> np.ndarray:
    """(1, C, ...) activation and gradient -> (C,) sum over positions of gradient x activation."""
    prod = a.detach().double() * g.detach().double()
    return prod.reshape(prod.shape[0], prod.shape[1], -1).sum(-1)[0].float().cpu().numpy()


def _cam(
    method: str, model: nn.Module, x: torch.Tensor, layer: nn.Module, c: int, a: torch.Tensor, g: torch.Tensor
) -> np.ndarray:
    """The library's map for one layer: ReLU(its weighted combination), at the layer's resolution."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if a.dim() != 4:
        raise EvidenceError(f"layer output of shape {tuple(a.shape)} is not a (1, C, h, w) map")
    cam_obj = getattr(pytorch_grad_cam, METHODS[method])(model, target_layers=[])  # no hooks registered
    acts = a.detach().float().cpu().numpy()
    grads = g.detach().float().cpu().numpy()
    quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
    with quiet, torch.inference_mode(False):  # Score-CAM's progress bar; its forwards run in no_grad
        cam = cam_obj.get_cam_image(x, layer, [ClassifierOutputTarget(c)], acts, grads, False)
    cam = np.nan_to_num(np.maximum(np.asarray(cam, np.float32)[0], 0.0))  # as the library's own __call__
    return np.ascontiguousarray(cam)


# ----------------------------------------------------------------------------------------------
# image coordinates
# ----------------------------------------------------------------------------------------------


def _resize(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    return cv2.resize(np.asarray(m, np.float32), (max(1, w), max(1, h)), interpolation=cv2.INTER_LINEAR)


def cam_in_image(cam: np.ndarray, image_hw: tuple[int, int], preprocess: Preprocess) -> np.ndarray:
    """The map in the input image's own pixels: (H, W) float32, NaN outside the centre crop the model saw.

    ``Preprocess`` crops ``crop_box`` and resizes it to the square input, so the layer's map covers that
    box: it is resized (bilinear) onto the box and placed there. Pixels the model never saw are NaN, not 0,
    so "no evidence" and "not looked at" stay distinguishable.
    """
    h, w = image_hw
    top, left, ch, cw = preprocess.crop_box(h, w)
    out = np.full((h, w), np.nan, np.float32)
    out[top : top + ch, left : left + cw] = _resize(cam, (ch, cw))
    return out


def overlay_image(
    rgb: np.ndarray, cam_image: np.ndarray, *, alpha: float = 0.5, caption: str | None = None
) -> np.ndarray:
    """RGB uint8 picture of ``cam_in_image`` output over the image (jet, scaled to the map's maximum); the
    pixels the model never saw (NaN) are dimmed. ``caption`` (ASCII) is written in the top-left corner."""
    import cv2

    out = np.asarray(rgb, np.float32).copy()
    valid = np.isfinite(cam_image)
    hi = float(np.nanmax(cam_image)) if valid.any() else 0.0
    norm = np.where(valid, np.nan_to_num(cam_image) / hi if hi > 0 else 0.0, 0.0)
    heat = cv2.applyColorMap(np.clip(norm * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    out[valid] = (1 - alpha) * out[valid] + alpha * heat[valid]
    out[~valid] *= 0.45
    out = np.clip(out, 0, 255).astype(np.uint8)
    if caption:
        text = caption.encode("ascii", "replace").decode()
        scale = max(0.4, out.shape[1] / 900)
        thick = max(1, round(scale * 1.5))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.rectangle(out, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
        cv2.putText(
            out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA
        )
    return np.ascontiguousarray(out)


def explain_image(
    predictor: Any,
    rgb: np.ndarray,
    class_index: int | None = None,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    blocks: Iterable[str] | None = None,
) -> ClassEvidence:
    """:func:`explain` for an RGB frame through a :class:`~sevgg_gui.inference.Predictor`: its
    preprocessing, device and recorder (so its interventions apply), and its CPU fast path for the part
    of the network before the first explained layer (that part runs without autograd; the fast path
    falls back to the modules for every input that needs a gradient, so the rest is plain autograd)."""
    x = predictor.preprocess(rgb).unsqueeze(0)
    if getattr(predictor, "channels_last", False):
        x = x.contiguous(memory_format=torch.channels_last)
    fast = getattr(predictor, "fast_path", None)
    with fast.active() if fast is not None else contextlib.nullcontext():
        return explain(
            predictor.model,
            x,
            class_index,
            method=method,
            layer=layer,
            blocks=blocks,
            recorder=predictor.recorder,
        )


def class_index_of(name_or_index: str | int, class_names: Sequence[str]) -> int:
    """A class given by index ("281") or name ("tabby", case-insensitive, unique prefix allowed)."""
    text = str(name_or_index).strip()
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(class_names):
            raise EvidenceError(f"class {i} out of range (the model has {len(class_names)} classes)")
        return i
    low = text.lower()
    exact = [i for i, n in enumerate(class_names) if n.lower() == low]
    if exact:
        return exact[0]
    prefix = [i for i, n in enumerate(class_names) if n.lower().startswith(low)]
    if len(prefix) == 1:
        return prefix[0]
    if not prefix:
        raise EvidenceError(f"no class named {text!r}")
    shown = ", ".join(class_names[i] for i in prefix[:4])
    raise EvidenceError(f"class {text!r} is ambiguous: {shown}{', …' if len(prefix) > 4 else ''}")


@dataclass(frozen=True)
class EvidenceRequest:
    """What the live loop explains (plain data; the app replaces it, never mutates it)."""

    class_index: int | None = None  # None: the frame's top-1
    method: str = "gradcam"
    layer: str | None = None  # None: the last convolutional block
    block: str | None = None  # channel evidence of this block (None: the first attention block)


class LiveEvidence:
    """Called after each prediction on the worker thread while the overlay is on: explains the same frame
    and puts the :class:`ClassEvidence` in ``result.evidence``; what it asks for that the current model
    lacks (a block or layer of the previous model, a class index past its classes) falls back to the
    defaults. A failure leaves ``result.evidence`` None and says why in ``result.meta["evidence_error"]``."""

    def __init__(self, request: EvidenceRequest | None = None) -> None:
        self.request = request or EvidenceRequest()

    def __call__(self, predictor: Any, frame: Any, result: Any) -> None:
        req = self.request
        if getattr(predictor, "model", None) is None:  # a runtime graph (onnxruntime...): no autograd
            runtime = getattr(predictor, "runtime", "this backend")
            result.meta["evidence_error"] = f"class evidence needs the torch backend ({runtime} runs)"
            return
        rec = predictor.recorder
        blocks = [req.block] if req.block in rec.blocks else list(rec.blocks)[:1]
        c = req.class_index
        if c is None or not 0 <= c < len(predictor.class_names):
            c = result.top1.index
        layer = req.layer
        if layer is not None and layer not in dict(predictor.model.named_modules()):
            layer = None
        try:
            result.evidence = explain_image(
                predictor, frame.rgb, c, method=req.method, layer=layer, blocks=blocks
            )
        except EvidenceError as exc:
            result.meta["evidence_error"] = str(exc)
            return
        result.timings["evidence"] = result.evidence.ms
