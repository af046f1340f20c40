"""An exported model run by onnxruntime, producing the same Result as the torch Predictor.

``sevgg export --with-excitations`` writes every attention block's gate (and spatial map) as extra
outputs, and the ONNX metadata says which block each output is (``excitation_outputs``), how to
preprocess (``input_size``, ``resize_size``, ``mean``, ``std``) and the class names; ``sevgg quantize``
copies that metadata into the INT8 file. So the fp32 and the INT8 export of a model report their gates
under the same block names as the torch model, and compare mode or ``sevgg diff`` can pair them.

Interventions work as in torch: ``predictor.recorder`` (:class:`~.interventions.RuntimeRecorder`) has
the torch recorder's ``intervene`` / ``undo`` / ``clear_interventions`` / ``interventions``, and its
per-block ``mul`` / ``add`` arrays are fed with every run (the export's intervention inputs, see
:mod:`sevgg_gui.deploy.onnx_gates`); the reported gates are the intervened ones, as in torch. An export
made before those inputs existed still runs; only ``intervene`` refuses, with one line. No feature maps
and no squeezes (they are not graph outputs).
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..images import Preprocess, to_rgb_array
from .interventions import RuntimeRecorder, exported_blocks, intervention_inputs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class OnnxModelError(ValueError):
    """An ONNX file this backend cannot run; one line."""


@dataclass(frozen=True)
class OnnxOutput:
    index: int  # position among the session's outputs
    name: str
    block: str
    kind: str  # "gate" (B, C) or "map" (B, 1, H, W)


def _prop(props: dict[str, str], key: str, default: Any) -> Any:
    try:
        return json.loads(props[key]) if key in props else default
    except (TypeError, ValueError):
        return default


def excitation_layout(output_names: Sequence[str], props: dict[str, str]) -> list[OnnxOutput]:
    """Which output is which block's gate or map, from ``sevgg export``'s metadata.

    Newer exports describe each output (``excitation_outputs``); older ones list the block names only
    (``excitation_blocks``), one gate output per block after the logits, in order.
    """
    position = {n: i for i, n in enumerate(output_names)}
    found: list[OnnxOutput] = []
    described = [d for d in _prop(props, "excitation_outputs", []) if isinstance(d, dict)]
    if described:
        for d in described:
            name, block = str(d.get("output", "")), str(d.get("block", ""))
            if name in position and block:
                kind = "map" if d.get("kind") == "map" else "gate"
                found.append(OnnxOutput(position[name], name, block, kind))
        return found
    blocks = [str(b) for b in _prop(props, "excitation_blocks", [])]
    for i, block in enumerate(blocks, start=1):
        if i < len(output_names):
            found.append(OnnxOutput(i, output_names[i], block, "gate"))
    return found


class OnnxPredictor:
    """``predict(image) -> Result`` through an onnxruntime CPU session (any exported sevgg model)."""

    runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 0) -> None:
        p = Path(path)
        if not p.is_file():
            raise OnnxModelError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
        try:
            self.session = self._open_session(p, threads)
        except Exception as exc:  # runtimes raise their own exception types for bad files
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise OnnxModelError(f"{p.name}: not a usable ONNX model ({first})") from None
        meta = self.session.get_modelmeta()
        props = dict(meta.custom_metadata_map)
        # The image is the one 4-D input; onnxruntime lists the intervention inputs (which have
        # defaults) apart, OpenVINO among the inputs (they must be fed there).
        images = [i for i in self.session.get_inputs() if len(i.shape) == 4]
        others = {i.name for i in self.session.get_inputs()} - {i.name for i in images}
        knobs = intervention_inputs(props, [*others, *self._overridable()])
        if len(images) != 1 or not others <= {n for k in knobs for n in (k.mul, k.add)}:
            raise OnnxModelError(f"{p.name}: expected one image input (B, 3, H, W)")
        self.input_name = images[0].name
        static = images[0].shape[2]
        size = int(_prop(props, "input_size", 0) or (static if isinstance(static, int) else 0) or 224)
        resize = int(_prop(props, "resize_size", 0) or round(size * 256 / 224))
        mean = tuple(float(v) for v in _prop(props, "mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in _prop(props, "std", IMAGENET_STD))
        self.preprocess = Preprocess(crop_size=size, resize_size=resize, mean=mean, std=std)  # type: ignore[arg-type]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.layout = excitation_layout(self.output_names, props)
        self.class_names: list[str] = [str(c) for c in _prop(props, "class_names", [])]
        self.path = str(p)
        self.props = props
        quant = " INT8" if "quantization" in props else ""
        self.provenance = f"{p.name} ({self.runtime}{quant}, {size}px)"
        self.device = f"cpu ({self.runtime})"
        self.half = False
        self.model = None  # no torch module: interventions go through the graph's inputs
        self.recorder = RuntimeRecorder(
            self.gate_blocks,
            [o.block for o in self.layout if o.kind == "map"],
            knobs,
            block_infos=exported_blocks(props),
            source=p.name,
        )

    def _open_session(self, path: Path, threads: int) -> Any:
        """The runtime's session; a subclass returns any object with onnxruntime's ``run``,
        ``get_inputs``, ``get_outputs`` and ``get_modelmeta`` (see the OpenVINO backend)."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(0, int(threads))
        so.log_severity_level = 3
        # Idle worker threads would spin after each call and take the CPU from the torch model that
        # runs next on the same frame (compare mode) or from the UI; measured in bench_runtimes.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def _overridable(self) -> list[str]:
        """Inputs with a default (onnxruntime's overridable initializers)."""
        get = getattr(self.session, "get_overridable_initializers", None)
        return [i.name for i in get()] if get is not None else []

    @property
    def block_names(self) -> list[str]:
        return list(dict.fromkeys(o.block for o in self.layout))

    @property
    def gate_blocks(self) -> list[tuple[str, int | None]]:
        """(block, channels) of every gate output (channels from the graph when static)."""
        shapes = {o.name: o.shape for o in self.session.get_outputs()}
        out = []
        for o in self.layout:
            if o.kind == "gate":
                c = shapes[o.name][1] if len(shapes[o.name]) == 2 else None
                out.append((o.block, c if isinstance(c, int) else None))
        return out

    def set_maps_for(self, names: Iterable[str]) -> None:
        """Feature maps are not graph outputs: nothing to record (kept for the Predictor's surface)."""

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> OnnxPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def predict(self, image: Any, topk: int = 5, *, bgr: bool = False) -> Any:
        return self.predict_batch([image], topk=topk, bgr=bgr)[0]

    def predict_batch(self, images: Sequence[Any], topk: int = 5, *, bgr: bool = False) -> list[Any]:
        from ..inference import Prediction, Result, default_class_names

        if self.session is None:
            raise OnnxModelError("this ONNX predictor was closed")
        t0 = time.perf_counter()
        rgbs = [to_rgb_array(im, bgr=bgr) for im in images]
        x = np.stack([self.preprocess(r).numpy() for r in rgbs]).astype(np.float32, copy=False)
        t1 = time.perf_counter()
        outs = self.session.run(None, {self.input_name: x, **self.recorder.feeds()})
        t2 = time.perf_counter()
        logits = outs[0].astype(np.float64)
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        names = self.class_names
        if len(names) != probs.shape[1]:
            names = self.class_names = default_class_names(probs.shape[1])
        k = min(topk, probs.shape[1])
        results = []
        for b, rgb in enumerate(rgbs):
            order = np.argsort(-probs[b], kind="stable")[:k]
            results.append(
                Result(
                    topk=[Prediction(int(i), names[int(i)], float(probs[b, i])) for i in order],
                    excitations=OrderedDict(
                        (o.block, np.ascontiguousarray(outs[o.index][b].reshape(-1), dtype=np.float32))
                        for o in self.layout
                        if o.kind == "gate"
                    ),
                    squeezes=OrderedDict(),
                    spatial_maps={
                        o.block: np.asarray(outs[o.index][b, 0], dtype=np.float32)
                        for o in self.layout
                        if o.kind == "map"
                    },
                    image=rgb,
                )
            )
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}
        for r in results:
            r.timings = dict(timings)
        return results
