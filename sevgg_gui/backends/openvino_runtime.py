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
        inputs = list(model.inputs)
        if len(inputs) == 1 and inputs[0].get_partial_shape().rank.get_length() == 4:
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
