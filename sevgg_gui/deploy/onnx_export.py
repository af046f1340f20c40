"""``sevgg export``: ONNX with dynamic batch, height and width, checked against PyTorch with onnxruntime.

Works for every network here (VGG16 with any attention type, SE-ResNet, SE-Inception, SE-MobileNet,
torchvision's MobileNetV3 / EfficientNet / RegNetY) and anything :func:`~sevgg_gui.zoo.load_model` opens.

Two things need care:

* Adaptive pools. ``AdaptiveAvgPool2d((7, 7))`` has no ONNX operator for a size only known at run time
  (the exporter refuses it with dynamic H/W). It is swapped, for the export only, for the same average
  written as two pooling matrices built from the input's shape (:class:`ShapeAgnosticAdaptiveAvgPool2d`):
  ``P_h @ x @ P_w^T`` with PyTorch's own window bounds, so any input size works and the numbers match.
  ``AdaptiveMaxPool2d(1)`` (CBAM's channel max) becomes a max over H and W (:class:`GlobalMaxPool2d`):
  the exporter would otherwise bake in a ``MaxPool`` with the traced size as its kernel whenever it can
  see that size, silently wrong at any other size. Pools to 1x1 average already map to GlobalAveragePool.
* ``--with-excitations`` adds what :class:`~sevgg_gui.recorder.ExcitationRecorder` records, one output
  per channel gate (B, C) and per spatial map (B, 1, H, W) of every block the recorder's registry knows
  (SE, sSE, scSE, BAM, CBAM, ECA, torchvision's SqueezeExcitation, timm's SE / ESE / ECA / CBAM / GE /
  GC taps; see :mod:`sevgg_gui.taps`). Blocks found only by behaviour are not exported (no submodule
  computes their gate). They are captured by forward hooks
  on the very submodules the recorder hooks, during the one forward that computes the logits: no second
  forward, and the exported values are by construction what the recorder reports.

Output names (stable; block i counts recorded blocks from 1 in forward-definition order):
``gate<i>`` = channel gate of block i, ``map<i>`` = spatial map of block i (scSE, BAM and CBAM have both,
sSE only a map). A network whose blocks are all the article's ``SEBlock`` keeps the historical names
``se<i>`` (VGG16-SE: ``se1``..``se5``). The ONNX metadata says which block each output is:
``excitation_outputs`` = JSON list of ``{"output", "block", "type", "kind", "shape"}``, and
``excitation_blocks`` = the recorder's block names in order.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..models.se import SEBlock

DEFAULT_OPSET = 17


class ShapeAgnosticAdaptiveAvgPool2d(nn.Module):
    """``adaptive_avg_pool2d`` as matrix products, so ONNX export works with dynamic H and W.

    Window i of n over a length L spans [floor(i*L/n), ceil((i+1)*L/n)), PyTorch's definition.
    """

    def __init__(self, output_size: int | Sequence[int]) -> None:
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.output_size = (int(size[0]), int(size[1]))

    @staticmethod
    def _matrix(length: torch.Tensor | int, n: int, like: torch.Tensor) -> torch.Tensor:
        i = torch.arange(n, device=like.device)
        start = torch.div(i * length, n, rounding_mode="floor")
        end = torch.div((i + 1) * length + n - 1, n, rounding_mode="floor")
        j = torch.arange(length, device=like.device)
        inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
        return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph = self._matrix(x.shape[-2], self.output_size[0], x)
        pw = self._matrix(x.shape[-1], self.output_size[1], x)
        return torch.matmul(torch.matmul(ph, x), pw.transpose(0, 1))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class GlobalMaxPool2d(nn.Module):
    """``AdaptiveMaxPool2d(1)`` as ``amax`` over H and W: the same maximum over the same elements, but
    exported as ``ReduceMax`` over the axes, whatever size the exporter believes the input has."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1), keepdim=True)


def _export_substitute(module: nn.Module) -> nn.Module | None:
    """The size-agnostic stand-in for an adaptive pool that needs one, else None."""
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if any(s is None for s in sizes) or sizes == (1, 1):
            return None  # None keeps that input dimension; (1, 1) exports as GlobalAveragePool
        return ShapeAgnosticAdaptiveAvgPool2d(sizes)  # type: ignore[arg-type]
    if isinstance(module, nn.AdaptiveMaxPool2d) and not module.return_indices:
        size = module.output_size
        if size in (1, (1, 1)):
            return GlobalMaxPool2d()
    return None


@contextmanager
def exportable_pools(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily replace the adaptive pools ONNX cannot express for a dynamic input size (see above)."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = _export_substitute(child)
            if new is not None:
                swapped.append((parent, name, child))
                setattr(parent, name, new)
    try:
        yield model
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)


def se_blocks(model: nn.Module) -> list[tuple[str, SEBlock]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SEBlock)]


@dataclass(frozen=True)
class ExcitationOutput:
    """One extra ONNX output: a recorded block's channel gate (B, C) or spatial map (B, 1, H, W)."""

    name: str  # the ONNX output name, e.g. "gate3", "map3", "se1"
    block: str  # the block's module name in the network, e.g. "layer2.1.se"
    kind: Literal["gate", "map"]
    block_type: str  # e.g. "CBAM", "SqueezeExcitation"
    channels: int | None = None  # C of a gate
    # The gate is activation(tap output) when the block applies its sigmoid inline (timm's light CBAM).
    activation: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """The entry of the ``excitation_outputs`` metadata list; ``shape`` uses the ONNX dim names."""
        axes = self.dynamic_axes()
        shape: list[str | int] = (
            [axes[0], self.channels or "C"] if self.kind == "gate" else [axes[0], 1, axes[2], axes[3]]
        )
        return {
            "output": self.name,
            "block": self.block,
            "type": self.block_type,
            "kind": self.kind,
            "shape": shape,
        }

    def dynamic_axes(self) -> dict[int, str]:
        if self.kind == "gate":
            return {0: "batch"}
        return {0: "batch", 2: f"{self.name}_height", 3: f"{self.name}_width"}


def excitation_outputs(model: nn.Module) -> list[tuple[ExcitationOutput, nn.Module]]:
    """Every gate and map the recorder would record, with the submodule whose output it is.

    Asks :class:`~sevgg_gui.recorder.ExcitationRecorder` (not attached, so no hooks) which blocks and
    taps exist, so any type registered with the recorder is exported without changes here.
    """
    from ..recorder import ExcitationRecorder

    try:
        rec = ExcitationRecorder(model)
    except ValueError:
        raise ValueError(
            f"{type(model).__name__} has no SE blocks (nor any other attention block the recorder "
            "knows): nothing to export with --with-excitations"
        ) from None
    legacy = all(type(b) is SEBlock for b in rec.blocks.values())  # VGG16-SE's se1..se5, kept stable
    found: list[tuple[ExcitationOutput, nn.Module]] = []
    for i, (name, block) in enumerate(rec.blocks.items(), 1):
        kind_name = type(block).__name__
        if name in rec.taps:
            tap = rec.taps[name]
            if tap.ratio:  # found by behaviour: no submodule computes its gate (not exported)
                continue
            out = ExcitationOutput(
                f"se{i}" if legacy else f"gate{i}", name, "gate", kind_name, tap.channels, tap.activation
            )
            found.append((out, tap.gate))
        if name in rec.spatial_taps:
            found.append((ExcitationOutput(f"map{i}", name, "map", kind_name), rec.spatial_taps[name]))
    if not found:
        raise ValueError(
            f"{type(model).__name__}: its attention blocks have no gate submodule to export "
            "(found by behaviour only): nothing to export with --with-excitations"
        )
    seen: dict[int, str] = {}
    for out, module in found:  # one module object in two places: its hook could not tell them apart
        if seen.setdefault(id(module), out.name) != out.name:
            raise ValueError(f"{out.name} and {seen[id(module)]} are computed by one shared module")
    return found


class WithExcitations(nn.Module):
    """``model(x)`` -> ``(logits, *excitations)`` in :func:`excitation_outputs` order, taken by hooks on
    the recorder's tap modules during the same forward (gates flattened to (B, C), maps as they are)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        found = excitation_outputs(model)
        self.outputs: list[ExcitationOutput] = [o for o, _ in found]
        self.block_names: list[str] = list(dict.fromkeys(o.block for o in self.outputs))
        self._captured: dict[str, torch.Tensor] = {}
        self._handles = [tap.register_forward_hook(partial(self._hook, o)) for o, tap in found]

    def _hook(self, out: ExcitationOutput, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        # Returns None: the forward goes on with exactly the tensor the model computed.
        if out.activation is not None:
            output = out.activation(output)
        self._captured[out.name] = output.reshape(output.shape[0], -1) if out.kind == "gate" else output

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._captured = {}
        logits = self.model(x)
        captured, self._captured = self._captured, {}
        missing = [o.name for o in self.outputs if o.name not in captured]
        if missing:
            raise RuntimeError(f"no value for {missing}: those blocks did not run in the forward")
        return (logits, *(captured[o.name] for o in self.outputs))

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@dataclass
class ExportReport:
    """What was written and how closely onnxruntime reproduced PyTorch.

    ``max_abs_diff``: "<output>@<B>x<H>x<W>" -> max |onnxruntime - PyTorch|; ``max_abs_ref``: same keys
    -> max |PyTorch output|, the scale the difference should be read against. ``warnings``: what the
    model spec warned about (e.g. random weights), for the CLI to pass on.
    """

    path: Path
    output_names: list[str]
    opset: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    max_abs_ref: dict[str, float] = field(default_factory=dict)
    excitations: list[ExcitationOutput] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)

    @property
    def worst_relative(self) -> float:
        """Largest difference as a fraction of its output's magnitude (at least 1: gates are in [0, 1])."""
        return max(
            (d / max(1.0, self.max_abs_ref.get(k, 0.0)) for k, d in self.max_abs_diff.items()), default=0.0
        )

    @property
    def checked_shapes(self) -> list[str]:
        """The input shapes compared, "BxHxW"."""
        return sorted(
            {k.split("@", 1)[1] for k in self.max_abs_diff}, key=lambda s: [int(v) for v in s.split("x")]
        )


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: int = 224,
    opset: int = DEFAULT_OPSET,
    with_excitations: bool = False,
    metadata: dict[str, Any] | None = None,
    check: bool = True,
    check_sizes: Sequence[int] | None = None,
    check_batches: Sequence[int] = (1, 3),
) -> ExportReport:
    """Export ``model`` (normalised RGB in, logits out) with dynamic batch/height/width; written atomically.

    Traced at batch 2 and ``input_size`` square. ``check`` runs onnxruntime at ``check_sizes`` (default:
    the export size and 1.5x it; each H x (H + 8), non-square on purpose) and ``check_batches`` (other
    than the traced 2 on purpose), recording the largest absolute difference to PyTorch per output.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset {opset} is too old: use 17 or newer")
    path = Path(path)
    model = model.eval().cpu()
    # eval() on the wrapper too: the exporter restores the wrapper's mode recursively afterwards.
    net: nn.Module = (WithExcitations(model) if with_excitations else model).eval()
    extra = net.outputs if isinstance(net, WithExcitations) else []
    names = ["logits"] + [o.name for o in extra]
    dynamic: dict[str, dict[int, str]] = {
        "input": {0: "batch", 2: "height", 3: "width"},
        "logits": {0: "batch"},
    }
    dynamic.update({o.name: o.dynamic_axes() for o in extra})
    dummy = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp (0600): the model file should get the umask's permissions, like any export.
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    open(tmp, "xb").close()
    try:
        with exportable_pools(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                net,
                (dummy,),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=names,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        proto = onnx.load(tmp)
        props = {
            "producer": "sevgg_gui",
            "input_size": str(input_size),
            "mean": json.dumps([0.485, 0.456, 0.406]),
            "std": json.dumps([0.229, 0.224, 0.225]),
            "excitation_blocks": json.dumps(net.block_names if extra else []),
            "excitation_outputs": json.dumps([o.describe() for o in extra]),
        }
        for k, v in (metadata or {}).items():
            props[k] = v if isinstance(v, str) else json.dumps(v)
        onnx.helper.set_model_props(proto, props)
        onnx.save(proto, tmp)
        onnx.checker.check_model(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(net, WithExcitations):
            net.remove_hooks()
    report = ExportReport(path, names, opset, excitations=list(extra))
    if check:
        sizes = list(check_sizes) if check_sizes else [input_size, input_size + input_size // 2]
        report.max_abs_diff, report.max_abs_ref = _compare(
            model, path, sizes, with_excitations, check_batches
        )
    return report


def compare_with_onnxruntime(
    model: nn.Module,
    path: str | os.PathLike[str],
    sizes: Sequence[int],
    with_excitations: bool = False,
    *,
    batches: Sequence[int] = (2,),
) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| per output and input shape, keyed "<output>@<B>x<H>x<W>" (inputs
    B x 3 x s x (s + 8) for s in ``sizes``, B in ``batches``: non-square on purpose)."""
    return _compare(model, path, sizes, with_excitations, batches)[0]


@torch.no_grad()
def _compare(
    model: nn.Module,
    path: str | os.PathLike[str],
    sizes: Sequence[int],
    with_excitations: bool,
    batches: Sequence[int],
) -> tuple[dict[str, float], dict[str, float]]:
    """(max |ORT - torch|, max |torch|) per "<output>@<B>x<H>x<W>"; the second puts the first in scale."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    ref: nn.Module = (WithExcitations(model) if with_excitations else model).eval()
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    try:
        for s in sizes:
            for b in batches:
                x = torch.randn(b, 3, s, s + 8, generator=torch.Generator().manual_seed(s * 131 + b))
                got = sess.run(None, {"input": x.numpy()})
                want = ref(x)
                want = want if isinstance(want, tuple) else (want,)
                for name, a, w in zip(out_names, got, want, strict=True):
                    key = f"{name}@{b}x{s}x{s + 8}"
                    if tuple(a.shape) != tuple(w.shape):
                        raise RuntimeError(
                            f"{key}: onnxruntime gave shape {a.shape}, PyTorch {tuple(w.shape)}"
                        )
                    diffs[key] = float((torch.from_numpy(a) - w).abs().max())
                    scales[key] = float(w.abs().max())
    finally:
        if isinstance(ref, WithExcitations):
            ref.remove_hooks()
    return diffs, scales


def _open_trained(checkpoint: str | os.PathLike[str]) -> tuple[nn.Module, int | None, dict[str, Any]]:
    """A `sevgg train` (or VGG16-SE) checkpoint: model, its input size, metadata for the ONNX file."""
    from ..training.models import load_trained

    model, meta = load_trained(checkpoint)
    extra: dict[str, Any] = {"class_names": meta.get("class_names") or [], "source": Path(checkpoint).name}
    if meta.get("arch"):
        extra["arch"] = str(meta["arch"])
    size = meta.get("input_size")
    return model, int(size) if size else None, extra


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    with_excitations: bool = False,
    opset: int = DEFAULT_OPSET,
    input_size: int | None = None,
    check: bool = True,
) -> ExportReport:
    """Export a checkpoint at the input size stored in it, class names in the ONNX metadata."""
    return _export_trained(_open_trained(checkpoint), out, with_excitations, opset, input_size, check)


def _export_trained(
    opened: tuple[nn.Module, int | None, dict[str, Any]],
    out: str | os.PathLike[str],
    with_excitations: bool,
    opset: int,
    input_size: int | None,
    check: bool,
) -> ExportReport:
    model, size, extra = opened
    return export_onnx(
        model,
        out,
        input_size=int(input_size or size or 224),
        opset=opset,
        with_excitations=with_excitations,
        metadata=extra,
        check=check,
    )


def export_spec(
    spec: str | None,
    out: str | os.PathLike[str],
    *,
    with_excitations: bool = False,
    opset: int = DEFAULT_OPSET,
    input_size: int | None = None,
    check: bool = True,
    model_code: str | None = None,
) -> ExportReport:
    """Export any model spec the app and CLI open: a checkpoint path, ``pretrained:<torchvision name>``,
    ``vgg16:<attention>``, ``timm:<name>``, a model folder, or ``model_code`` with its weights (see
    :func:`~sevgg_gui.zoo.load_model`).

    A `sevgg train` checkpoint goes through :func:`export_checkpoint` (its own metadata); anything else
    through ``load_model``, whose class names, preprocessing statistics and crop size go into the
    metadata, and whose warning (e.g. random weights) is passed on in ``report.warnings``.
    """
    from ..checkpoints import CheckpointError
    from ..zoo import load_model

    if spec is not None and not model_code and Path(spec).is_file():
        try:
            opened = _open_trained(spec)
        except CheckpointError as exc:
            first = exc
        else:
            return _export_trained(opened, out, with_excitations, opset, input_size, check)
        try:  # a file of another kind, e.g. a torchvision MobileNetV3 state dict
            loaded = load_model(spec)
        except CheckpointError:
            raise first from None
    else:
        loaded = load_model(spec, model_code=model_code)
    pre = loaded.preprocess()
    meta: dict[str, Any] = {
        "class_names": loaded.class_names or [],
        "source": (Path(spec).name if Path(spec).exists() else spec) if spec else str(model_code),
        "provenance": str(loaded.provenance),
        "mean": list(pre.mean),
        "std": list(pre.std),
        "resize_size": str(pre.resize_size),
    }
    if loaded.info is not None and loaded.info.architecture:
        meta["arch"] = str(loaded.info.architecture)
    report = export_onnx(
        loaded.model,
        out,
        input_size=int(input_size or pre.crop_size),
        opset=opset,
        with_excitations=with_excitations,
        metadata=meta,
        check=check,
    )
    report.warnings = [loaded.warning] if loaded.warning else []
    return report
