"""``sevgg quantize``: INT8 post-training quantization of an exported model with onnxruntime.

Static (default): weights and activations in int8, activation ranges calibrated on real images fed
through the model's own preprocessing (input size, mean and std from the ONNX metadata ``sevgg export``
writes), written in QDQ format so onnxruntime fuses it into ``QLinearConv`` / ``QGemm``. Dynamic
(``mode="dynamic"``): weights only, activation ranges computed at run time; no calibration data.

A flat folder of images goes through :mod:`~sevgg_gui.deploy.int8_check` instead (``sevgg quantize``
and the app's "Optimize for this CPU…" share it): a held-out share never calibrated on, per-channel
weights, percentile calibration, the attention sub-graphs kept float, and refusal below a minimum
agreement. This module keeps the labelled data sets (their own train/test splits), ``--eval-data``
and dynamic mode, and the pieces both use (reading the model, sessions, paired latency).

Choices, each measured (see README):

* Only ``Conv`` and ``Gemm`` are quantized by default: they hold ~all weights and time. The SE blocks'
  excitation MLPs (``MatMul``), their sigmoid and the channel scaling stay in float, so the gates stay
  close to the float model's (quantizing the sigmoid alone snaps every gate to a 1/255 grid) and
  onnxruntime does not wrap each tiny op in quantize/dequantize pairs, which made the model slower.
* The last layer (the one computing the logits) stays float: with its output on an 8-bit grid, close
  calls flip (top-1 agreement 89% instead of 97% on a briefly trained Fashion-MNIST model).
* The model goes through onnxruntime's ``quant_pre_process`` first (without the slow symbolic shape
  inference): the exporter leaves some conv biases behind ``Identity`` nodes, and such a conv stays float.
* Calibration runs one batch at a time (``CalibStridedMinMax`` with a stride of one batch; ranges merged):
  onnxruntime otherwise keeps every calibrated activation of every image in memory, ~100 MB per
  224 px image for VGG16.

The report compares the float and int8 files side by side: size, CPU latency (batch 1, runs interleaved,
median of the paired int8/fp32 ratios, so a noisy neighbour slows both alike), top-1 agreement,
accuracy when the images have labels, and the largest gate difference when the model was exported
``--with-excitations``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..images import Preprocess, is_image_path, load_image

Log = Callable[[str], None]
MODES: tuple[str, ...] = ("static", "dynamic")
CALIB_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "Gemm")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Ops that only a quantized model contains: quantizing twice would quantize the scales.
_QUANT_OPS = {
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "QGemm",
}


class QuantizeError(ValueError):
    """An input the quantizer cannot use; the message is one line."""


# ----------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class OnnxInfo:
    """What the quantizer needs to know about an exported model."""

    path: Path
    input_name: str
    input_size: int
    preprocess: Preprocess
    class_names: list[str]
    num_classes: int | None
    gate_outputs: list[str]  # se1..se5 (VGG16-SE) when exported --with-excitations
    props: dict[str, str]


def _json_prop(props: dict[str, str], key: str, default: Any) -> Any:
    try:
        return json.loads(props[key]) if key in props else default
    except (TypeError, ValueError):
        return default


def read_onnx_info(path: str | os.PathLike[str]) -> OnnxInfo:
    """Input name and size, preprocessing and outputs of an ONNX model; one-line errors for bad files."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise QuantizeError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, or a truncated file
        raise QuantizeError(f"{p.name}: not an ONNX model ({type(exc).__name__})") from None
    graph = proto.graph
    # Arbitrary bytes sometimes parse as an empty protobuf message: a model has nodes and an input.
    if not graph.node or not graph.input or not graph.output:
        raise QuantizeError(f"{p.name}: not an ONNX model (no graph)")
    if any(n.op_type in _QUANT_OPS for n in graph.node):
        raise QuantizeError(f"{p.name}: already quantized; quantize the float model instead")
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise QuantizeError(f"{p.name}: expected one image input, found {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or (dims[1].HasField("dim_value") and dims[1].dim_value != 3):
        raise QuantizeError(f"{p.name}: input {inputs[0].name!r} is not an image batch (B, 3, H, W)")
    props = {m.key: m.value for m in proto.metadata_props}
    static_size = dims[2].dim_value if dims[2].HasField("dim_value") else 0
    size = int(_json_prop(props, "input_size", 0) or static_size or 224)
    resize = int(_json_prop(props, "resize_size", 0) or round(size * 256 / 224))
    mean = tuple(float(v) for v in _json_prop(props, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in _json_prop(props, "std", IMAGENET_STD))
    out_dims = graph.output[0].type.tensor_type.shape.dim
    num_classes = (
        int(out_dims[1].dim_value) if len(out_dims) == 2 and out_dims[1].HasField("dim_value") else None
    )
    outputs = [o.name for o in graph.output]
    # sevgg export --with-excitations: outputs after the logits, described in the metadata (newer
    # exports list them in "excitation_outputs"; older ones only name the blocks).
    described = [d.get("output") for d in _json_prop(props, "excitation_outputs", []) if isinstance(d, dict)]
    gates = [o for o in outputs[1:] if o in described] or (
        outputs[1:] if _json_prop(props, "excitation_blocks", []) else []
    )
    return OnnxInfo(
        path=p,
        input_name=inputs[0].name,
        input_size=size,
        preprocess=Preprocess(crop_size=size, resize_size=resize, mean=mean, std=std),  # type: ignore[arg-type]
        class_names=[str(c) for c in _json_prop(props, "class_names", [])],
        num_classes=num_classes,
        gate_outputs=gates,
        props=props,
    )


# ----------------------------------------------------------------------------------- images
class _Preprocessed:
    """PIL image -> the model's input (float32 (3, S, S)); replaces a data set's own transform."""

    def __init__(self, pre: Preprocess) -> None:
        self.pre = pre

    def __call__(self, img: Any) -> np.ndarray:
        rgb = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
        return self.pre(rgb).numpy()


class _FolderImages:
    """A flat folder of unlabelled images (label -1), decoded as ``sevgg predict`` decodes them."""

    def __init__(self, paths: Sequence[Path], pre: Preprocess) -> None:
        self.paths = list(paths)
        self.pre = pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.pre(load_image(self.paths[i])).numpy(), -1


@dataclass
class ImageSource:
    """Images for calibration or evaluation, in the model's preprocessing."""

    items: Any  # __len__ and __getitem__ -> (float32 (3, S, S), label or -1)
    class_names: list[str] | None  # None: unlabelled
    description: str

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, batch_size: int, stop: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(self) if stop is None else min(stop, len(self))
        for i in range(0, n, batch_size):
            rows = [self.items[j] for j in range(i, min(n, i + batch_size))]
            yield (
                np.stack([r[0] for r in rows]).astype(np.float32, copy=False),
                np.asarray([r[1] for r in rows], dtype=np.int64),
            )


def _flat_images(folder: Path) -> list[Path] | None:
    """The images directly in ``folder`` when it has no sub-folders (else None: a class tree)."""
    children = list(folder.iterdir())
    if any(c.is_dir() for c in children):
        return None
    return sorted(c for c in children if c.is_file() and is_image_path(c))


def image_source(
    spec: str,
    pre: Preprocess,
    *,
    split: str,
    limit: int | None,
    seed: int = 0,
    cache_dir: str | None = None,
    what: str = "calibration",
) -> ImageSource:
    """A flat folder of images (unlabelled), an ImageFolder tree or ``KIND:PATH`` (labelled ``split``),
    at most ``limit`` images (class-balanced, seeded), every one through ``pre``."""
    from ..training.data import limit_indices, load_datasets, parse_data_spec

    if limit is not None and limit < 1:
        raise QuantizeError(f"the number of {what} images must be >= 1, got {limit}")
    p = Path(spec).expanduser()
    flat = _flat_images(p) if p.is_dir() else None
    if flat is not None:
        if not flat:
            raise QuantizeError(f"{p}: no {what} images (no image files in the folder)")
        keep = limit_indices(range(len(flat)), [0] * len(flat), limit, seed)
        return ImageSource(_FolderImages([flat[i] for i in keep], pre), None, f"{len(keep)} images in {p}")
    data_spec = parse_data_spec(spec)
    ds = load_datasets(
        data_spec,
        input_size=pre.crop_size,
        augment="none",
        seed=seed,
        limit=limit,
        val_limit=limit,
        cache_dir=cache_dir,
        splits=(split,),  # type: ignore[arg-type]
    )
    subset = ds.split(split)  # type: ignore[arg-type]
    if len(subset) == 0:
        raise QuantizeError(f"{data_spec}: no {what} images in the {split} split")
    subset.transform = _Preprocessed(pre)  # the model's own statistics, not the trainer's defaults
    return ImageSource(subset, list(ds.class_names), f"{len(subset)} {split} images of {data_spec}")


class _CalibrationReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over batches of images; ``set_range`` lets
    ``quantize_static`` calibrate one batch at a time (``CalibStridedMinMax``)."""

    def __init__(self, source: ImageSource, input_name: str, batch_size: int) -> None:
        self.source = source
        self.input_name = input_name
        n = len(source)
        self.spans = [(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
        self.set_range(0, len(self.spans))

    def __len__(self) -> int:
        return len(self.spans)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self.spans[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        span = next(self._next, None)
        if span is None:
            return None
        x = np.stack([self.source.items[i][0] for i in range(*span)]).astype(np.float32, copy=False)
        return {self.input_name: x}


def calibration_batch(input_size: int) -> int:
    """Images per calibration step: 4 at 224 px (VGG16's activations ~100 MB an image), 32 at 32 px."""
    return max(1, min(32, round(4 * (224 / input_size) ** 2)))


# ----------------------------------------------------------------------------------- quantizing
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantization tools print progress and log warnings to the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_file(
    src: Path,
    dst: Path,
    *,
    mode: str = "static",
    reader: _CalibrationReader | None = None,
    per_channel: bool = False,
    calib_method: str = "minmax",
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
) -> None:
    """Pre-process ``src`` and quantize it to ``dst`` (QDQ for static) with onnxruntime's tools."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in MODES:
        raise QuantizeError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    if calib_method not in CALIB_METHODS:
        raise QuantizeError(f"unknown calibration method {calib_method!r}: use {', '.join(CALIB_METHODS)}")
    with tempfile.TemporaryDirectory(prefix="sevgg-quant.") as tmp, _quiet():
        pre = str(Path(tmp) / "pre.onnx")
        quant_pre_process(str(src), pre, skip_symbolic_shape=True)
        if mode == "dynamic":  # weights only: the outputs stay float anyway
            # The dynamic quantizer rewrites Gemm as MatMul first: ask for MatMul, but leave the graph's
            # own MatMuls (SE excitation MLPs, pooling matrices) float unless MatMul was asked for.
            ops = list(dict.fromkeys([*op_types, *(["MatMul"] if "Gemm" in op_types else [])]))
            keep = [] if "MatMul" in op_types else _nodes_of(pre, "MatMul")
            quantize_dynamic(
                pre,
                str(dst),
                op_types_to_quantize=ops,
                nodes_to_exclude=keep,
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
                reduce_range=True,  # 7-bit weights: see quantize_static below
            )
            return
        if reader is None or len(reader) == 0:
            raise QuantizeError("static quantization needs calibration images")
        method = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[calib_method]
        quantize_static(
            pre,
            str(dst),
            reader,  # type: ignore[arg-type]
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # Weights in [-64, 64]: on x86 CPUs without VNNI, onnxruntime's u8 x s8 kernels add pairs of
            # products in 16 bits with saturation (255 * 127 * 2 > 32767); with 7-bit weights a pair
            # stays below 32767, so every CPU sums the integers exactly (VNNI or not). Measured on
            # the tests' Fashion-MNIST model: same agreement with fp32 (97.7%), gate drift 0.0032 vs 0.0033.
            reduce_range=True,
            calibrate_method=method,
            nodes_to_exclude=_logit_layers(pre, op_types),
            extra_options={"CalibStridedMinMax": 1},  # one batch per stride: bounded memory
        )


def _nodes_of(path: str, op_type: str) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(path, load_external_data=False).graph.node if n.op_type == op_type]


def _logit_layers(path: str, op_types: Sequence[str]) -> list[str]:
    """The node computing the logits stays float: an 8-bit logit grid (range / 255) flips close calls."""
    import onnx

    proto = onnx.load(path, load_external_data=False)
    first = proto.graph.output[0].name
    return [n.name for n in proto.graph.node if first in n.output and n.op_type in op_types and n.name]


def _write_with_props(model_path: Path, out: Path, props: dict[str, str]) -> None:
    """Copy ``model_path`` to ``out`` atomically with ``props`` as its metadata."""
    import onnx

    proto = onnx.load(str(model_path))
    onnx.helper.set_model_props(proto, props)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}.tmp"
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- measuring
def session(path: str | os.PathLike[str], threads: int = 0) -> Any:
    """A CPU onnxruntime session; ``threads`` 0 leaves onnxruntime's default (one per core)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(0, int(threads))
    so.log_severity_level = 3  # no warnings about unused initializers and the like
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def paired_latency_ms(
    a: Any, b: Any, feed: dict[str, np.ndarray], *, runs: int = 20, warmup: int = 3
) -> tuple[float, float, float]:
    """(median ms of a, median ms of b, median of the per-round b/a ratios), runs interleaved and the
    order alternated each round, so drifting load and cache warmth hit both sides alike."""
    for _ in range(warmup):
        a.run(None, feed)
        b.run(None, feed)
    ta: list[float] = []
    tb: list[float] = []
    for i in range(max(1, runs)):
        for sess, times in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
    ratios = [y / x for x, y in zip(ta, tb, strict=True)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


@dataclass
class Fidelity:
    """The int8 model against the float one on the same images."""

    images: int = 0
    agreement: float | None = None  # share of images with the same top-1 class
    fp32_top1: float | None = None
    int8_top1: float | None = None
    max_logit_diff: float | None = None
    gate_max_abs_diff: dict[str, float] = field(default_factory=dict)


def compare_outputs(
    fp32: Any, int8: Any, source: ImageSource, input_name: str, gate_outputs: Sequence[str], batch_size: int
) -> Fidelity:
    """Run both sessions over ``source`` in batches (the dynamic batch axis in use)."""
    n = agree = hits32 = hits8 = labelled = 0
    logit_diff = 0.0
    gates = {g: 0.0 for g in gate_outputs}
    for x, y in source.batches(batch_size):
        out32 = fp32.run(None, {input_name: x})
        out8 = int8.run(None, {input_name: x})
        p32, p8 = out32[0].argmax(1), out8[0].argmax(1)
        agree += int((p32 == p8).sum())
        logit_diff = max(logit_diff, float(np.abs(out32[0] - out8[0]).max()))
        for k, g in enumerate(gate_outputs, start=1):
            gates[g] = max(gates[g], float(np.abs(out32[k] - out8[k]).max()))
        known = y >= 0
        labelled += int(known.sum())
        hits32 += int((p32[known] == y[known]).sum())
        hits8 += int((p8[known] == y[known]).sum())
        n += len(x)
    if n == 0:
        return Fidelity()
    return Fidelity(
        images=n,
        agreement=agree / n,
        fp32_top1=hits32 / labelled if labelled else None,
        int8_top1=hits8 / labelled if labelled else None,
        max_logit_diff=logit_diff,
        gate_max_abs_diff=gates,
    )


# ----------------------------------------------------------------------------------- sevgg quantize
@dataclass
class QuantizeConfig:
    onnx: str
    out: str
    calib_data: str | None = None  # a folder of images, an ImageFolder tree or KIND:PATH
    calib_images: int = 256
    calib_split: str = "train"
    calib_method: str = "minmax"
    mode: str = "static"
    per_channel: bool = False
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    eval_data: str | None = None  # default: calib_data
    split: str = "test"  # evaluation split of a labelled data set
    limit: int | None = 1000  # evaluation images
    batch_size: int = 32
    latency_runs: int = 20
    threads: int = 0
    json_out: str | None = None  # default: OUT with .json
    cache_dir: str | None = None
    seed: int = 0


@dataclass
class QuantizeReport:
    source: str
    out: str
    mode: str
    per_channel: bool
    calib_method: str | None
    op_types: list[str]
    calib_images: int
    calib_source: str | None
    input_size: int
    fp32_bytes: int
    int8_bytes: int
    fp32_ms: float
    int8_ms: float
    latency_ratio: float  # median of the paired int8/fp32 times (batch 1)
    latency_runs: int
    threads: int
    eval_source: str | None
    eval_images: int
    agreement: float | None
    fp32_top1: float | None
    int8_top1: float | None
    max_logit_diff: float | None
    gate_max_abs_diff: dict[str, float]
    seconds: float

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / max(1, self.fp32_bytes)

    @property
    def max_gate_diff(self) -> float | None:
        return max(self.gate_max_abs_diff.values()) if self.gate_max_abs_diff else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size_ratio"] = round(self.size_ratio, 4)
        d["max_gate_diff"] = self.max_gate_diff
        return d

    def format(self) -> str:
        how = f"{self.mode}, {'per-channel' if self.per_channel else 'per-tensor'} weights"
        if self.mode == "static":
            how += f", {self.calib_method} over {self.calib_images} images ({self.calib_source})"
        mb = 1024 * 1024
        lines = [
            f"{self.source} -> {self.out}: {how}; {', '.join(self.op_types)} in int8",
            f"size     fp32 {self.fp32_bytes / mb:8.2f} MB   int8 {self.int8_bytes / mb:8.2f} MB   "
            f"x{self.size_ratio:.3f}",
            f"latency  fp32 {self.fp32_ms:8.2f} ms   int8 {self.int8_ms:8.2f} ms   x{self.latency_ratio:.3f} "
            f"(batch 1, {self.input_size}px, median of {self.latency_runs} interleaved pairs, "
            f"{self.threads or 'default'} thread(s))",
        ]
        if self.eval_images:
            acc = ""
            if self.fp32_top1 is not None and self.int8_top1 is not None:
                acc = f"; top-1 fp32 {self.fp32_top1:.2%}, int8 {self.int8_top1:.2%}"
            lines.append(
                f"fidelity top-1 agreement {self.agreement:.2%} on {self.eval_source}{acc}; "
                f"max |logit diff| {self.max_logit_diff:.3g}"
            )
        if self.gate_max_abs_diff:
            per = ", ".join(f"{k} {v:.3g}" for k, v in self.gate_max_abs_diff.items())
            lines.append(f"SE gates max |int8 - fp32| {self.max_gate_diff:.3g} ({per})")
        return "\n".join(lines)


def default_json_path(out: str | os.PathLike[str]) -> Path:
    return Path(out).with_suffix(".json")


def write_report(report: QuantizeReport, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path


def quantize_onnx(cfg: QuantizeConfig, *, log: Log = print) -> QuantizeReport:
    """Quantize ``cfg.onnx`` to ``cfg.out``, measure both, write the JSON report beside ``cfg.out``."""
    t_start = time.perf_counter()
    if cfg.mode not in MODES:
        raise QuantizeError(f"unknown mode {cfg.mode!r}: use {', '.join(MODES)}")
    info = read_onnx_info(cfg.onnx)
    src, out = info.path, Path(cfg.out)
    if out.resolve() == src.resolve():
        raise QuantizeError(f"{out}: the output would overwrite the float model")
    calib: ImageSource | None = None
    if cfg.mode == "static":
        if not cfg.calib_data:
            raise QuantizeError("static quantization needs calibration images (--calib-data)")
        calib = image_source(
            cfg.calib_data,
            info.preprocess,
            split=cfg.calib_split,
            limit=cfg.calib_images,
            seed=cfg.seed,
            cache_dir=cfg.cache_dir,
        )
    eval_spec = cfg.eval_data or cfg.calib_data
    evals: ImageSource | None = None
    if eval_spec:
        evals = image_source(
            eval_spec,
            info.preprocess,
            split=cfg.split,
            limit=cfg.limit,
            seed=cfg.seed,
            cache_dir=cfg.cache_dir,
            what="evaluation",
        )
        _check_classes(info, evals)
        if evals.class_names is None and not cfg.eval_data and calib is not None:
            log("note: agreement is measured on the calibration folder; --eval-data gives held-out images")

    batch = calibration_batch(info.input_size)
    if calib is not None:
        log(f"calibrating on {calib.description} ({cfg.calib_method}, {batch} per step)")
    reader = _CalibrationReader(calib, info.input_name, batch) if calib is not None else None
    with tempfile.TemporaryDirectory(prefix="sevgg-quant.") as tmp:
        raw = Path(tmp) / "int8.onnx"
        quantize_file(
            src,
            raw,
            mode=cfg.mode,
            reader=reader,
            per_channel=cfg.per_channel,
            calib_method=cfg.calib_method,
            op_types=cfg.op_types,
        )
        props = dict(info.props)
        props["quantization"] = json.dumps(
            {
                "mode": cfg.mode,
                "per_channel": cfg.per_channel,
                "op_types": list(cfg.op_types),
                "calib_method": cfg.calib_method if calib else None,
                "calib_images": len(calib) if calib else 0,
                "source": src.name,
            }
        )
        _write_with_props(raw, out, props)

    fp32, int8 = session(src, cfg.threads), session(out, cfg.threads)
    sample = evals or calib
    if sample is not None and len(sample):
        x1 = next(sample.batches(1))[0]
    else:
        x1 = np.random.default_rng(cfg.seed).standard_normal((1, 3, info.input_size, info.input_size))
    feed = {info.input_name: x1.astype(np.float32)}
    log(f"timing fp32 vs int8: {cfg.latency_runs} interleaved pairs at batch 1")
    ms32, ms8, ratio = paired_latency_ms(fp32, int8, feed, runs=cfg.latency_runs)
    fid = Fidelity()
    if evals is not None:
        log(f"comparing outputs on {evals.description}")
        fid = compare_outputs(fp32, int8, evals, info.input_name, info.gate_outputs, cfg.batch_size)
    report = QuantizeReport(
        source=str(src),
        out=str(out),
        mode=cfg.mode,
        per_channel=cfg.per_channel,
        calib_method=cfg.calib_method if calib else None,
        op_types=list(cfg.op_types),
        calib_images=len(calib) if calib else 0,
        calib_source=calib.description if calib else None,
        input_size=info.input_size,
        fp32_bytes=src.stat().st_size,
        int8_bytes=out.stat().st_size,
        fp32_ms=round(ms32, 3),
        int8_ms=round(ms8, 3),
        latency_ratio=round(ratio, 4),
        latency_runs=cfg.latency_runs,
        threads=cfg.threads,
        eval_source=evals.description if evals else None,
        eval_images=fid.images,
        agreement=fid.agreement,
        fp32_top1=fid.fp32_top1,
        int8_top1=fid.int8_top1,
        max_logit_diff=fid.max_logit_diff,
        gate_max_abs_diff=fid.gate_max_abs_diff,
        seconds=round(time.perf_counter() - t_start, 2),
    )
    write_report(report, cfg.json_out or default_json_path(out))
    return report


def _check_classes(info: OnnxInfo, source: ImageSource) -> None:
    """Labels only mean something when the data set's classes are the model's, in the same order."""
    from ..training.data import DataError

    names = source.class_names
    if names is None:
        return
    if info.class_names and list(info.class_names) != names:
        raise DataError(
            f"{source.description}: classes {names[:3]}... differ from the model's {info.class_names[:3]}..."
        )
    if info.num_classes is not None and info.num_classes != len(names):
        raise DataError(f"{source.description}: {len(names)} classes for a model with {info.num_classes}")
