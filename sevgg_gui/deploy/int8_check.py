"""Calibrate an INT8 model and check it on held-out images before anyone uses it (issue #14).

One code path for ``sevgg quantize`` (a folder of images) and the app's "Optimize for this CPU…"
(frames of the current source): :func:`calibrate_and_check` splits the images into calibration and
held-out ones (disjoint by construction: one list of indices is cut in two), quantizes with
:class:`Int8Config`, compares INT8 with fp32 on the held-out images only (top-1 agreement, largest and
mean SE gate difference) and times both side by side. Below the caller's ``min_agreement`` (or above
``max_gate_diff``) the INT8 file is refused: deleted, nothing installed, the numbers in one line.

Configurations (measured on MobileNetV3-Small over held-out real photos, benchmarks/bench_int8.py):
onnxruntime QDQ or QOperator format, per-tensor or per-channel weights, MinMax / Entropy / Percentile
calibration, 7-bit weights (``reduce_range``), symmetric activations, and which sub-graphs stay float:
the logit layer and the attention (SE) sub-graphs found structurally (pooling -> small convs/FCs ->
sigmoid -> the Mul that scales the features), so their gates are computed in float. ``engine="nncf"``
uses OpenVINO's NNCF post-training quantization (the ``deploy`` extra) on the same ONNX file.

No Qt here: the dialog passes ``progress`` and ``cancelled`` callables and runs this on a thread.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .quantize import (
    OnnxInfo,
    QuantizeError,
    _quiet,
    paired_latency_ms,
    read_onnx_info,
)

Progress = Callable[[float, str], None]
KEEP_FLOAT: tuple[str, ...] = ("none", "logits", "attention+logits")
FORMATS: tuple[str, ...] = ("qdq", "qoperator")
ENGINES: tuple[str, ...] = ("onnxruntime", "nncf")
# Ops whose chain from a global pooling to a Mul makes an attention (SE-style) sub-graph.
_POOL_OPS = {"GlobalAveragePool", "ReduceMean", "GlobalMaxPool", "ReduceMax"}
_GATE_OPS = {"Sigmoid", "HardSigmoid", "Hardsigmoid"}


class Int8Cancelled(Exception):
    """The caller's ``cancelled()`` said stop; nothing was installed."""


@dataclass(frozen=True)
class Int8Config:
    """How to quantize; the defaults are the best measured setting (see benchmarks/README.md)."""

    engine: str = "onnxruntime"
    fmt: str = "qdq"
    per_channel: bool = True
    calib_method: str = "minmax"
    reduce_range: bool = True  # 7-bit weights: exact u8 x s8 sums without VNNI (see quantize.py)
    symmetric_activations: bool = False
    percentile: float = 99.9  # the "percentile" method's cut (onnxruntime's default: 99.999)
    moving_average: bool = False  # MinMax: moving average of the per-batch ranges (TF's QAT style)
    keep_float: str = "attention+logits"
    op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul")

    def label(self) -> str:
        if self.engine == "nncf":
            return f"nncf, {self.keep_float} float"
        parts = [
            self.fmt,
            "per-channel" if self.per_channel else "per-tensor",
            self.calib_method + (f" {self.percentile:g}" if self.calib_method == "percentile" else ""),
            "7-bit w" if self.reduce_range else "8-bit w",
        ]
        if self.symmetric_activations:
            parts.append("sym act")
        if self.moving_average:
            parts.append("moving avg")
        return ", ".join(parts) + f", {self.keep_float} float"


# ----------------------------------------------------------------------------------- the graph
def attention_nodes(proto: Any) -> list[str]:
    """Names of the nodes of every attention sub-graph: from a global pooling of a feature map, through
    the small layers and the sigmoid, to the Mul that scales a feature map by the gate."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    found: list[str] = []
    for mul in (n for n in proto.graph.node if n.op_type == "Mul" and len(n.input) == 2):
        for gate_in in mul.input:
            path = _walk_to_pool(gate_in, producer)
            gate = next((n for n in path if n.op_type in _GATE_OPS), None)
            if gate is not None and gate.input[0] in mul.input:
                continue  # x * sigmoid(x): a swish / hard-swish activation (onnxruntime inlines HardSwish so)
            if path:
                found += [n.name for n in path] + [mul.name]
                break
    return list(dict.fromkeys(n for n in found if n))


# Between the Mul and the sigmoid only reshaping ops; between the sigmoid and the pooling no Mul of two
# computed tensors (that would be another block's feature scaling, not this gate's MLP).
_RESHAPING = {"Reshape", "Unsqueeze", "Squeeze", "Expand", "Cast", "Flatten", "Identity", "Transpose"}


def _walk_to_pool(start: str, producer: dict[str, Any], depth: int = 12) -> list[Any]:
    """The nodes from ``start`` back to a global pooling through a sigmoid-like op, else []."""
    path: list[Any] = []
    seen_gate = False
    name = start
    for _ in range(depth):
        node = producer.get(name)
        if node is None:
            return []
        path.append(node)
        # before the sigmoid: reshaping, or x * a + b with a, b not computed (constants, or the gate
        # intervention inputs sevgg export adds: gate<i>_mul / gate<i>_add)
        affine = node.op_type in ("Mul", "Add") and sum(i in producer for i in node.input) == 1
        if not seen_gate and node.op_type not in _GATE_OPS and node.op_type not in _RESHAPING and not affine:
            return []
        if node.op_type == "Mul" and sum(i in producer for i in node.input) > 1:
            return []
        seen_gate = seen_gate or node.op_type in _GATE_OPS
        if node.op_type in _POOL_OPS:  # (the Mul may scale a later tensor: VGG16-SE gates after pooling)
            return path if seen_gate else []
        # follow the data input (first non-constant one): Conv/Gemm/MatMul/Relu/Reshape/... chains
        name = next((i for i in node.input if i in producer), "")
    return []


def logit_nodes(proto: Any) -> list[str]:
    """The node computing the first output (the logits), and a Flatten/Reshape-free chain above it up
    to the last Conv/Gemm/MatMul: an 8-bit logit grid flips close calls."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    node = producer.get(proto.graph.output[0].name)
    out: list[str] = []
    while node is not None and len(out) < 4:
        out.append(node.name)
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            break
        node = producer.get(node.input[0])
    return [n for n in out if n]


# ----------------------------------------------------------------------------------- quantizing
class _Feeds:
    """onnxruntime's CalibrationDataReader over arrays, one batch at a time, checking ``cancelled``."""

    def __init__(self, xs: np.ndarray, input_name: str, batch: int, cancelled: Callable[[], bool]) -> None:
        self.xs, self.input_name, self.cancelled = xs, input_name, cancelled
        self.spans = [(i, min(len(xs), i + batch)) for i in range(0, len(xs), batch)]
        self.set_range(0, len(self.spans))

    def __len__(self) -> int:
        return len(self.spans)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self.spans[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.cancelled():
            raise Int8Cancelled
        span = next(self._next, None)
        return None if span is None else {self.input_name: self.xs[span[0] : span[1]]}


def quantize_to(
    src: Path,
    dst: Path,
    calib: np.ndarray,
    input_name: str,
    config: Int8Config,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Quantize ``src`` (float ONNX) to ``dst`` with ``config``, calibrated on ``calib`` (N, 3, S, S)."""
    import onnx

    if config.engine not in ENGINES:
        raise QuantizeError(f"unknown engine {config.engine!r}: use {', '.join(ENGINES)}")
    if config.keep_float not in KEEP_FLOAT:
        raise QuantizeError(f"unknown keep_float {config.keep_float!r}: use {', '.join(KEEP_FLOAT)}")
    if len(calib) == 0:
        raise QuantizeError("no calibration images")
    import onnxruntime as ort

    # onnxruntime's quantization tools open their own sessions at the default (warning) level: each one
    # warns that the gate intervention inputs (initializers that are also graph inputs) are not constants.
    ort.set_default_logger_severity(3)
    with tempfile.TemporaryDirectory(prefix="sevgg-int8.") as tmp, _quiet():
        pre = Path(tmp) / "pre.onnx"
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        proto = onnx.load(str(pre))
        exclude: list[str] = []
        if config.keep_float != "none":
            exclude += logit_nodes(proto)
        if config.keep_float == "attention+logits":
            exclude += attention_nodes(proto)
        if config.engine == "nncf":
            _quantize_nncf(proto, dst, calib, input_name, exclude, cancelled)
            return
        _quantize_ort(pre, dst, calib, input_name, config, exclude, cancelled)


def _quantize_ort(
    pre: Path,
    dst: Path,
    calib: np.ndarray,
    input_name: str,
    config: Int8Config,
    exclude: list[str],
    cancelled: Callable[[], bool],
) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .quantize import CALIB_METHODS, calibration_batch

    if config.fmt not in FORMATS:
        raise QuantizeError(f"unknown format {config.fmt!r}: use {', '.join(FORMATS)}")
    if config.calib_method not in CALIB_METHODS:
        raise QuantizeError(f"unknown calibration method {config.calib_method!r}")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[config.calib_method]
    batch = calibration_batch(calib.shape[-1]) if config.calib_method == "minmax" else 1
    extra: dict[str, Any] = {
        "ActivationSymmetric": config.symmetric_activations,
        "CalibMovingAverage": config.moving_average,
        "CalibPercentile": config.percentile,
    }
    if config.calib_method == "minmax":
        extra["CalibStridedMinMax"] = 1  # one batch per stride: bounded memory
    quantize_static(
        str(pre),
        str(dst),
        # Histogram calibrators (percentile, entropy) stack every batch's activations: batches of one
        # image, else a short last batch makes onnxruntime fail on ragged arrays.
        _Feeds(calib, input_name, batch, cancelled),  # type: ignore[arg-type]
        quant_format=QuantFormat.QDQ if config.fmt == "qdq" else QuantFormat.QOperator,
        op_types_to_quantize=list(config.op_types),
        per_channel=config.per_channel,
        # symmetric activations need a signed type (zero point 0); else u8 as onnxruntime prefers
        activation_type=QuantType.QInt8 if config.symmetric_activations else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=config.reduce_range,
        calibrate_method=method,
        nodes_to_exclude=exclude,
        extra_options=extra,
    )


def _quantize_nncf(
    proto: Any,
    dst: Path,
    calib: np.ndarray,
    input_name: str,
    exclude: list[str],
    cancelled: Callable[[], bool],
) -> None:
    """NNCF's post-training quantization (its ONNX backend; QDQ output onnxruntime runs)."""
    try:
        import nncf
    except ImportError:
        raise QuantizeError("engine nncf needs the nncf package (pip install nncf)") from None
    import onnx

    def item(i: int) -> dict[str, np.ndarray]:
        if cancelled():
            raise Int8Cancelled
        return {input_name: calib[i : i + 1]}

    names = {n.name for n in proto.graph.node}
    quantized = nncf.quantize(
        proto,
        nncf.Dataset(list(range(len(calib))), item),
        subset_size=len(calib),
        ignored_scope=nncf.IgnoredScope(names=[n for n in exclude if n in names], validate=False),
    )
    onnx.save(quantized, str(dst))


# ----------------------------------------------------------------------------------- the check
@dataclass
class Int8Check:
    """The INT8 model against fp32 on held-out images, and whether it was installed."""

    source: str
    config: str
    calib_images: int
    held_out_images: int
    agree: int
    agreement: float
    max_gate_diff: float | None  # None: the model has no gate outputs
    mean_gate_diff: float | None
    max_logit_diff: float
    fp32_ms: float
    int8_ms: float
    speedup: float  # fp32 time / int8 time, median of paired runs (batch 1)
    min_agreement: float
    max_gate_allowed: float | None
    installed: str | None  # the INT8 file, or None when refused
    refused: str | None  # why, in words
    fp32_bytes: int = 0
    int8_bytes: int = 0
    gate_diffs: dict[str, float] = field(default_factory=dict)  # gate output -> max |diff|
    calib_indices: list[int] = field(default_factory=list)
    held_out_indices: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        """The numbers in one line (what the CLI prints and the dialog shows when refused)."""
        gate = (
            "no gate outputs"
            if self.max_gate_diff is None
            else f"largest gate difference {self.max_gate_diff:.3g}"
        )
        nums = (
            f"top-1 agreement {self.agreement:.1%} ({self.agree}/{self.held_out_images} held-out images, "
            f"{self.calib_images} for calibration), {gate}, speed-up {self.speedup:.2f}x"
        )
        if 0.0 < self.min_agreement < 1.0 and self.held_out_images < round(1 / (1 - self.min_agreement)):
            # one disagreement among n images moves agreement by 1/n: fewer than 1/(1 - threshold) images
            # cannot show the threshold is met
            nums += (
                f" (only {self.held_out_images} held-out images: too few to resolve {self.min_agreement:.1%})"
            )
        if self.refused:
            return f"INT8 refused: {nums}; {self.refused}; no INT8 file installed"
        return f"INT8 accepted: {nums}; installed {self.installed}"

    def format(self) -> str:
        """The full report: settings, split, speed, fidelity per gate, then :meth:`line`."""
        lines = [
            f"{self.source}: {self.config}",
            f"images   {self.calib_images} for calibration, {self.held_out_images} held out (never calibrated on)",
            f"size     fp32 {self.fp32_bytes / 2**20:.2f} MB   int8 {self.int8_bytes / 2**20:.2f} MB",
            f"latency  fp32 {self.fp32_ms:.2f} ms   int8 {self.int8_ms:.2f} ms   speed-up x{self.speedup:.2f} "
            "(batch 1, median of interleaved pairs)",
            f"fidelity top-1 agreement {self.agreement:.2%} on the held-out images; "
            f"max |logit diff| {self.max_logit_diff:.3g}",
        ]
        if self.gate_diffs:
            per = ", ".join(f"{k} {v:.3g}" for k, v in self.gate_diffs.items())
            lines.append(
                f"SE gates max |int8 - fp32| {self.max_gate_diff:.3g}, mean {self.mean_gate_diff:.3g} ({per})"
            )
        return "\n".join([*lines, self.line()])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_indices(
    n: int, held_out_fraction: float, *, contiguous: bool = False, seed: int = 0
) -> tuple[list[int], list[int]]:
    """(calibration, held-out) indices of ``n`` images, disjoint and covering all: one permutation cut
    in two. ``contiguous``: the last share is held out (consecutive video frames are near-copies, so a
    shuffled split would test on neighbours of calibration frames)."""
    if not 0.0 < held_out_fraction < 1.0:
        raise QuantizeError(f"the held-out share must be between 0 and 1, got {held_out_fraction}")
    held = min(n - 1, max(1, round(n * held_out_fraction)))
    if n < 2:
        raise QuantizeError(f"{n} image(s): need at least one for calibration and one held out")
    order = list(range(n)) if contiguous else [int(i) for i in np.random.default_rng(seed).permutation(n)]
    return sorted(order[: n - held]), sorted(order[n - held :])


def _inputs(images: Sequence[Any], info: OnnxInfo) -> np.ndarray:
    """(N, 3, S, S) float32 model inputs from paths, PIL images or RGB uint8 arrays."""
    from ..images import load_image

    xs = []
    for im in images:
        if isinstance(im, str | os.PathLike):
            im = load_image(Path(im))
        rgb = np.asarray(im.convert("RGB") if hasattr(im, "convert") else im)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        xs.append(info.preprocess(np.ascontiguousarray(rgb[..., :3])).numpy())
    return np.stack(xs).astype(np.float32, copy=False)


def resolve_onnx(model: str | os.PathLike[str]) -> Path:
    """An ``.onnx`` file as is; any other model spec through the backends' cached gate-output export."""
    p = Path(model).expanduser()
    if p.suffix.lower() == ".onnx":
        return p
    from ..backends.export_cache import cached_export

    return cached_export(str(model))


def compare(
    fp32: Any, int8: Any, xs: np.ndarray, info: OnnxInfo, cancelled: Callable[[], bool] = lambda: False
) -> tuple[int, float, dict[str, float], float]:
    """(agreeing images, max |logit diff|, per gate output max |diff|, mean |gate diff|) over ``xs``,
    one image at a time (the live app's batch)."""
    agree, logit, gates = 0, 0.0, {g: 0.0 for g in info.gate_outputs}
    names = [o.name for o in fp32.get_outputs()]
    idx = {g: names.index(g) for g in info.gate_outputs}
    sums, count = 0.0, 0
    for x in xs:
        if cancelled():
            raise Int8Cancelled
        a = fp32.run(None, {info.input_name: x[None]})
        b = int8.run(None, {info.input_name: x[None]})
        agree += int(a[0].argmax() == b[0].argmax())
        logit = max(logit, float(np.abs(a[0] - b[0]).max()))
        for g, k in idx.items():
            d = np.abs(a[k].astype(np.float64) - b[k])
            gates[g] = max(gates[g], float(d.max()))
            sums += float(d.sum())
            count += d.size
    return agree, logit, gates, (sums / count if count else 0.0)


def calibrate_and_check(
    model: str | os.PathLike[str],
    images: Sequence[Any],
    out: str | os.PathLike[str],
    *,
    held_out_fraction: float = 0.25,
    min_agreement: float = 0.99,
    max_gate_diff: float | None = None,
    config: Int8Config | None = None,
    contiguous: bool = False,
    seed: int = 0,
    latency_runs: int = 20,
    threads: int = 0,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Int8Check:
    """Quantize ``model`` (an ``.onnx`` file or a model spec, exported with its gates) on part of
    ``images`` and check it on the rest; write ``out`` only when it passes. See the module docstring."""
    from .quantize import session

    t0 = time.perf_counter()
    cfg = config or Int8Config()
    say = progress or (lambda f, t: None)
    if not 0.0 <= min_agreement <= 1.0:
        raise QuantizeError(f"the minimum agreement must be between 0 and 1, got {min_agreement}")
    say(0.0, "exporting the float model" if Path(model).suffix.lower() != ".onnx" else "reading the model")
    src = resolve_onnx(model)
    info = read_onnx_info(src)
    dst = Path(out).expanduser()
    if dst.resolve() == src.resolve():
        raise QuantizeError(f"{dst}: the INT8 file would overwrite the float model")
    calib_idx, held_idx = split_indices(len(images), held_out_fraction, contiguous=contiguous, seed=seed)
    say(0.05, f"preprocessing {len(images)} images")
    calib = _inputs([images[i] for i in calib_idx], info)
    held = _inputs([images[i] for i in held_idx], info)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{secrets.token_hex(6)}.tmp"
    try:
        say(0.1, f"calibrating on {len(calib)} images ({cfg.label()})")
        quantize_to(src, tmp, calib, info.input_name, cfg, cancelled)
        _set_props(tmp, info, cfg, len(calib))
        fp32, int8 = session(src, threads), session(tmp, threads)
        say(0.6, f"comparing on {len(held)} held-out images")
        agree, logit, gates, mean_gate = compare(fp32, int8, held, info, cancelled)
        say(0.8, f"timing fp32 vs INT8 ({latency_runs} pairs)")
        if cancelled():
            raise Int8Cancelled
        ms32, ms8, ratio = paired_latency_ms(fp32, int8, {info.input_name: held[:1]}, runs=latency_runs)
        agreement = agree / len(held)
        worst = max(gates.values()) if gates else None
        why = []
        if agreement < min_agreement:
            why.append(f"agreement below the required {min_agreement:.1%}")
        if max_gate_diff is not None and worst is not None and worst > max_gate_diff:
            why.append(f"a gate moved more than the allowed {max_gate_diff:g}")
        if cancelled():
            raise Int8Cancelled
        refused = " and ".join(why) or None
        size8 = tmp.stat().st_size
        if refused is None:
            os.replace(tmp, dst)
        say(1.0, "done")
        return Int8Check(
            source=str(src),
            config=cfg.label(),
            calib_images=len(calib),
            held_out_images=len(held),
            agree=agree,
            agreement=agreement,
            max_gate_diff=worst,
            mean_gate_diff=mean_gate if gates else None,
            max_logit_diff=logit,
            fp32_ms=round(ms32, 3),
            int8_ms=round(ms8, 3),
            speedup=round(1.0 / ratio, 3) if ratio > 0 else float("nan"),
            min_agreement=min_agreement,
            max_gate_allowed=max_gate_diff,
            installed=None if refused else str(dst),
            refused=refused,
            fp32_bytes=src.stat().st_size,
            int8_bytes=size8,
            gate_diffs=gates,
            calib_indices=calib_idx,
            held_out_indices=held_idx,
            seconds=round(time.perf_counter() - t0, 2),
        )
    finally:
        tmp.unlink(missing_ok=True)


def _set_props(path: Path, info: OnnxInfo, cfg: Int8Config, n_calib: int) -> None:
    """The float model's metadata (preprocessing, classes, gate layout) plus how it was quantized."""
    import json

    import onnx

    proto = onnx.load(str(path))
    props = dict(info.props)
    props["quantization"] = json.dumps({**asdict(cfg), "calib_images": n_calib, "source": info.path.name})
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))


__all__ = [
    "Int8Cancelled",
    "Int8Check",
    "Int8Config",
    "attention_nodes",
    "calibrate_and_check",
    "compare",
    "logit_nodes",
    "quantize_to",
    "resolve_onnx",
    "split_indices",
]
