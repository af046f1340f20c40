"""``sevgg export``: ONNX with dynamic batch, height and width, checked against PyTorch with onnxruntime.

Two things need care:

* ``AdaptiveAvgPool2d((7, 7))`` has no ONNX operator for a size only known at run time (the exporter
  refuses it with dynamic H/W). It is swapped, for the export only, for the same average written as
  two pooling matrices built from the input's shape (:class:`ShapeAgnosticAdaptiveAvgPool2d`):
  ``P_h @ x @ P_w^T`` with PyTorch's own window bounds, so any input size works and the numbers match.
* ``--with-excitations`` adds the SE gates as outputs ``se1``..``se5`` (B, C). They are captured by
  forward hooks on each SE block's ``fc`` during the one forward that computes the logits, which is
  exactly where :class:`~sevgg_gui.recorder.ExcitationRecorder` reads them: no second forward.
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


@contextmanager
def exportable_pools(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily replace every adaptive average pool to a size other than 1 (1 maps to GlobalAveragePool)."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d):
                size = child.output_size
                sizes = (size, size) if isinstance(size, int) else tuple(size)
                if any(s is None for s in sizes) or sizes == (1, 1):
                    continue
                swapped.append((parent, name, child))
                setattr(parent, name, ShapeAgnosticAdaptiveAvgPool2d(sizes))  # type: ignore[arg-type]
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def se_blocks(model: nn.Module) -> list[tuple[str, SEBlock]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SEBlock)]


class WithExcitations(nn.Module):
    """``model(x)`` -> ``(logits, gate_1, ..., gate_K)``: gates taken from each SE block's ``fc``
    output by hooks during the same forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.block_names = [n for n, _ in se_blocks(model)]
        if not self.block_names:
            raise ValueError(
                f"{type(model).__name__} has no SE blocks: nothing to export with --with-excitations"
            )
        self._gates: list[torch.Tensor] = []
        self._handles = [b.fc.register_forward_hook(self._hook) for _, b in se_blocks(model)]

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._gates.append(output.reshape(output.shape[0], -1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self._gates = []
        logits = self.model(x)
        gates, self._gates = self._gates, []
        return (logits, *gates)

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@dataclass
class ExportReport:
    path: Path
    output_names: list[str]
    opset: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # "<output>@<H>x<W>" -> max |ORT - torch|

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)


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
) -> ExportReport:
    """Export ``model`` (normalised RGB in, logits out) with dynamic batch/height/width; written atomically.

    ``check`` runs onnxruntime at ``check_sizes`` (default: the export size and 1.5x it) and records the
    largest absolute difference to PyTorch for every output.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset {opset} is too old: use 17 or newer")
    path = Path(path)
    model = model.eval().cpu()
    # eval() on the wrapper too: the exporter restores the wrapper's mode recursively afterwards.
    net: nn.Module = (WithExcitations(model) if with_excitations else model).eval()
    n_gates = len(net.block_names) if isinstance(net, WithExcitations) else 0
    names = ["logits"] + [f"se{i + 1}" for i in range(n_gates)]
    dynamic: dict[str, dict[int, str]] = {"input": {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({n: {0: "batch"} for n in names})
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
            "excitation_blocks": json.dumps(net.block_names if n_gates else []),
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
    report = ExportReport(path, names, opset)
    if check:
        sizes = list(check_sizes) if check_sizes else [input_size, input_size + input_size // 2]
        report.max_abs_diff = compare_with_onnxruntime(model, path, sizes, with_excitations)
    return report


@torch.no_grad()
def compare_with_onnxruntime(
    model: nn.Module, path: str | os.PathLike[str], sizes: Sequence[int], with_excitations: bool = False
) -> dict[str, float]:
    """Max |onnxruntime - PyTorch| per output and input size (batch 2, non-square on purpose)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    ref: nn.Module = (WithExcitations(model) if with_excitations else model).eval()
    diffs: dict[str, float] = {}
    try:
        for s in sizes:
            g = torch.Generator().manual_seed(s)
            x = torch.randn(2, 3, s, s + 8, generator=g)
            got = sess.run(None, {"input": x.numpy()})
            want = ref(x)
            want = want if isinstance(want, tuple) else (want,)
            for name, a, b in zip(out_names, got, want, strict=True):
                diffs[f"{name}@{s}x{s + 8}"] = float((torch.from_numpy(a) - b).abs().max())
    finally:
        if isinstance(ref, WithExcitations):
            ref.remove_hooks()
    return diffs


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
    from ..training.models import load_trained

    model, meta = load_trained(checkpoint)
    size = int(input_size or meta.get("input_size") or 224)
    extra = {"class_names": meta.get("class_names") or [], "source": Path(checkpoint).name}
    if meta.get("arch"):
        extra["arch"] = str(meta["arch"])
    return export_onnx(
        model,
        out,
        input_size=size,
        opset=opset,
        with_excitations=with_excitations,
        metadata=extra,
        check=check,
    )
