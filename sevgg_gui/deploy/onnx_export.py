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
  per channel gate (B, C) and per spatial map (B, 1, H, W) of every block the recorder finds: by
  registered type (SE, sSE, scSE, BAM, CBAM, ECA, torchvision's SqueezeExcitation, timm's SE / ESE /
  ECA / CBAM / GE / GC taps; see :mod:`sevgg_gui.taps`) and, probed with the same two example images
  the torch Predictor uses, by behaviour (an inline SE in a user's model code). They are taken by
  hooks during the one forward that computes the logits (:mod:`.onnx_gates`): no second forward, and
  the exported values are by construction what the recorder reports.
* Interventions (on by default with ``--with-excitations``): per gate block two inputs
  ``<output>_mul`` and ``<output>_add`` (C,), ``gate' = gate * mul + add`` is what the block applies
  and what the gate output reports, so mute / boost / set work in onnxruntime and OpenVINO as in
  torch. They are initializers too (ones, zeros): a caller that feeds only the image (``sevgg
  quantize`` calibration, older code) runs the model unchanged.

Output names (stable; block i counts recorded blocks from 1 in forward-definition order):
``gate<i>`` = channel gate of block i, ``map<i>`` = spatial map of block i (scSE, BAM and CBAM have both,
sSE only a map). A network whose blocks are all the article's ``SEBlock`` keeps the historical names
``se<i>`` (VGG16-SE: ``se1``..``se5``). The ONNX metadata says which block each output is:
``excitation_outputs`` = JSON list of ``{"output", "block", "type", "kind", "shape", "found_by"}``,
``excitation_blocks`` = the recorder's block names in order, ``intervention_inputs`` = JSON list of
``{"block", "output", "mul", "add", "channels"}``, ``attention_blocks`` = every attention block as
``sevgg info`` describes it (recorded or only listed).
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.se import SEBlock
from .onnx_gates import ExcitationOutput, WithExcitations, excitation_outputs

__all__ = [
    "DEFAULT_OPSET",
    "ExcitationOutput",
    "ExportReport",
    "WithExcitations",
    "excitation_outputs",
    "export_checkpoint",
    "export_onnx",
    "export_spec",
]

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
    intervention_inputs: list[str] = field(default_factory=list)  # <gate>_mul, <gate>_add, ...

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
    interventions: bool = True,
    metadata: dict[str, Any] | None = None,
    check: bool = True,
    check_sizes: Sequence[int] | None = None,
    check_batches: Sequence[int] = (1, 3),
) -> ExportReport:
    """Export ``model`` (normalised RGB in, logits out) with dynamic batch/height/width; written atomically.

    Traced at batch 2 and ``input_size`` square; with ``with_excitations`` every gate and map is an
    output, and with ``interventions`` (the default) every gate block has its ``_mul`` / ``_add``
    inputs (module docstring). Behaviour-probed blocks are found with
    ``taps.example_input(input_size)``, the images the torch Predictor probes with at that crop size.
    ``check`` runs onnxruntime (image fed alone) at ``check_sizes`` (default: the export size and 1.5x
    it; each H x (H + 8), non-square on purpose) and ``check_batches`` (other than the traced 2 on
    purpose), recording the largest absolute difference to PyTorch per output.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset {opset} is too old: use 17 or newer")
    path = Path(path)
    model = model.eval().cpu()
    example = _probe_images(input_size) if with_excitations else None
    # eval() on the wrapper too: the exporter restores the wrapper's mode recursively afterwards.
    net: nn.Module = (WithExcitations(model, example) if with_excitations else model).eval()
    dummy = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    extra: list[ExcitationOutput] = []
    affine: list[torch.Tensor] = []
    knobs: list[ExcitationOutput] = []
    if isinstance(net, WithExcitations):
        if interventions:
            affine = net.identity_affine(dummy)
            knobs = net.gates
        extra = net.outputs
    names = ["logits"] + [o.name for o in extra]
    knob_names = [n for o in knobs for n in (o.mul_input, o.add_input)]
    dynamic: dict[str, dict[int, str]] = {
        "input": {0: "batch", 2: "height", 3: "width"},
        "logits": {0: "batch"},
    }
    dynamic.update({o.name: o.dynamic_axes() for o in extra})
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp (0600): the model file should get the umask's permissions, like any export.
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    open(tmp, "xb").close()
    try:
        with exportable_pools(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                net,
                (dummy, *affine),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=["input", *knob_names],
                output_names=names,
                dynamic_axes=dynamic,
                do_constant_folding=True,
            )
        proto = onnx.load(tmp)
        _default_inputs(proto, knob_names, affine)
        props = {
            "producer": "sevgg_gui",
            "input_size": str(input_size),
            "mean": json.dumps([0.485, 0.456, 0.406]),
            "std": json.dumps([0.229, 0.224, 0.225]),
            "excitation_blocks": json.dumps(net.block_names if extra else []),
            "excitation_outputs": json.dumps([o.describe() for o in extra]),
            "intervention_inputs": json.dumps([o.describe_inputs() for o in knobs]),
        }
        if isinstance(net, WithExcitations):
            props["attention_blocks"] = json.dumps(net.attention)
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
    report = ExportReport(path, names, opset, excitations=list(extra), intervention_inputs=knob_names)
    if check:
        sizes = list(check_sizes) if check_sizes else [input_size, input_size + input_size // 2]
        report.max_abs_diff, report.max_abs_ref = _compare(
            model, path, sizes, with_excitations, check_batches, example
        )
    return report


def _probe_images(input_size: int) -> torch.Tensor:
    """The two images the torch Predictor probes unknown module types with at this crop size."""
    from ..taps import example_input

    return example_input(input_size)


def _default_inputs(proto: Any, names: Sequence[str], values: Sequence[torch.Tensor]) -> None:
    """Give each intervention input an initializer of the same name (its default): onnxruntime then
    runs the graph with only the image fed. The IR version allows it from 4 on (ours: 8 and newer)."""
    from onnx import numpy_helper

    for name, value in zip(names, values, strict=True):
        proto.graph.initializer.append(numpy_helper.from_array(value.numpy().astype("float32"), name))


def compare_with_onnxruntime(
    model: nn.Module,
    path: str | os.PathLike[str],
    sizes: Sequence[int],
    with_excitations: bool = False,
    *,
    batches: Sequence[int] = (2,),
    example_input: torch.Tensor | None = None,
) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| per output and input shape, keyed "<output>@<B>x<H>x<W>" (inputs
    B x 3 x s x (s + 8) for s in ``sizes``, B in ``batches``: non-square on purpose). ``example_input``:
    the probe images the export used (blocks found by behaviour), see :func:`export_onnx`."""
    return _compare(model, path, sizes, with_excitations, batches, example_input)[0]


@torch.no_grad()
def _compare(
    model: nn.Module,
    path: str | os.PathLike[str],
    sizes: Sequence[int],
    with_excitations: bool,
    batches: Sequence[int],
    example: torch.Tensor | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """(max |ORT - torch|, max |torch|) per "<output>@<B>x<H>x<W>"; the second puts the first in scale.
    The image is fed alone: the intervention inputs keep their defaults. NaN (a gate found by
    behaviour on an all-zero channel) matches NaN."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3  # not the note that the intervention inputs have defaults (initializers)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    ref: nn.Module = (WithExcitations(model, example) if with_excitations else model).eval()
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
                    got_t = torch.from_numpy(a)
                    both_nan = got_t.isnan() & w.isnan()
                    diff = (got_t - w).abs().masked_fill(both_nan, 0.0).nan_to_num(nan=float("inf"))
                    diffs[key] = float(diff.max()) if diff.numel() else 0.0
                    scales[key] = float(w.nan_to_num(nan=0.0).abs().max()) if w.numel() else 0.0
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
