"""An exported model run by OpenVINO on the CPU, producing the same Result as the torch Predictor.

The same ``.onnx`` files as :class:`~sevgg_gui.backends.onnx_runtime.OnnxPredictor` (``sevgg export
--with-excitations``, and the INT8 QDQ files ``sevgg quantize`` writes, which OpenVINO runs in int8):
everything but the session is that class's, so preprocessing, the block names from the metadata and
the Result are identical; only :class:`OpenVinoSession` differs, an onnxruntime-shaped wrapper around
an OpenVINO compiled model.

Two choices, both measured (benchmarks/bench_runtimes.py):

* ``precision="f32"`` by default: on a CPU with AVX512-BF16 OpenVINO otherwise runs the float parts in
  bf16, which moved MobileNetV3-Small's gates by up to 0.045; f32 keeps them within float rounding of
  torch. ``precision=None`` leaves OpenVINO's default.
* Height and width are fixed at the model's crop size when compiling (the batch stays dynamic):
  everything the predictor feeds has that size, and OpenVINO's CPU plugin plans static shapes ahead.

Interventions: OpenVINO reads an ONNX input that also has an initializer (the export's ``<gate>_mul``
/ ``<gate>_add``, whose defaults let onnxruntime run on the image alone) as a constant. The session
turns each of those constants back into an input before compiling, so the predictor's
``recorder.intervene`` works here as in onnxruntime; the predictor feeds them on every run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .onnx_runtime import OnnxPredictor


@dataclass(frozen=True)
class _Port:
    name: str
    shape: list[Any]  # ints where static, None where dynamic (onnxruntime gives strings there)


@dataclass(frozen=True)
class _Meta:
    custom_metadata_map: dict[str, str]


def _ports(ports: Any) -> list[_Port]:
    return [
        _Port(p.get_any_name(), [d.get_length() if d.is_static else None for d in p.get_partial_shape()])
        for p in ports
    ]


class OpenVinoSession:
    """onnxruntime's ``InferenceSession`` surface (``run``, ``get_inputs``, ``get_outputs``,
    ``get_modelmeta``) over an OpenVINO CPU compiled model."""

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int = 0, precision: str | None = "f32"
    ) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(path))
        props: dict[str, str] = {}  # the ONNX metadata_props, which OpenVINO keeps under "framework"
        if model.has_rt_info("framework"):
            fw = model.get_rt_info()["framework"]
            props = {str(k): fw[k].astype(str) for k in fw.keys()}  # noqa: SIM118 - RTMap
        _reopen_inputs(model, props)
        inputs = [i for i in model.inputs if i.get_partial_shape().rank.get_length() == 4]
        if len(inputs) == 1:
            size = _size_from(props)
            if size:  # dynamic batch, static H and W (see the module docstring)
                model.reshape({inputs[0].get_any_name(): ov.PartialShape([-1, 3, size, size])})
        cfg: dict[str, Any] = {}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        if precision:
            cfg["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = core.compile_model(model, "CPU", cfg)
        self._request = self.compiled.create_infer_request()
        self._outputs = list(self.compiled.outputs)
        self._inputs = _ports(model.inputs)
        self._out_ports = _ports(model.outputs)
        self._meta = _Meta(props)

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        return list(self._out_ports)

    def get_modelmeta(self) -> _Meta:
        return self._meta

    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """All outputs in graph order (``output_names`` is accepted for onnxruntime's signature)."""
        res = self._request.infer(feed)
        return [np.array(res[o], copy=True) for o in self._outputs]  # the request reuses its buffers


def _reopen_inputs(model: Any, props: dict[str, str]) -> None:
    """Make the constants that hold the intervention inputs' defaults parameters again (see the
    module docstring); a name not found (an export without them) is left alone."""
    import openvino as ov

    try:
        entries = json.loads(props.get("intervention_inputs", "[]"))
    except (TypeError, ValueError):
        return
    wanted = {str(e[k]) for e in entries if isinstance(e, dict) for k in ("mul", "add") if k in e}
    if not wanted:
        return
    params = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant":
            continue
        names = op.output(0).get_names() | {op.get_friendly_name()}
        hit = sorted(names & wanted)
        if not hit:
            continue
        param = ov.opset13.parameter(
            op.get_output_partial_shape(0), op.get_output_element_type(0), name=hit[0]
        )
        param.output(0).set_names({hit[0]})
        op.output(0).replace(param.output(0))
        params.append(param)
        wanted.discard(hit[0])
    if params:
        model.add_parameters(params)
        model.validate_nodes_and_infer_types()


def _size_from(props: dict[str, str]) -> int:
    try:
        return int(json.loads(props.get("input_size", "0")))
    except (TypeError, ValueError):
        return 0


class OpenVinoPredictor(OnnxPredictor):
    """``predict(image) -> Result`` through OpenVINO (CPU) for an exported sevgg ``.onnx`` file."""

    runtime = "openvino"

    def __init__(
        self, path: str | os.PathLike[str], *, threads: int = 0, precision: str | None = "f32"
    ) -> None:
        self._precision = precision
        super().__init__(path, threads=threads)

    def _open_session(self, path: Path, threads: int) -> OpenVinoSession:
        return OpenVinoSession(path, threads=threads, precision=self._precision)
