"""`sevgg quantize` on an export with intervention inputs (issue #14 item 1): calibration feeds only the
image (the inputs' defaults apply), and the INT8 file keeps the inputs, so muting and boosting a gate
work on the quantized model in onnxruntime and OpenVINO as on the float one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from sevgg_gui.backends.onnx_runtime import OnnxPredictor  # noqa: E402
from sevgg_gui.backends.openvino_runtime import OpenVinoPredictor  # noqa: E402
from sevgg_gui.deploy.onnx_export import export_checkpoint  # noqa: E402
from sevgg_gui.deploy.quantize import QuantizeConfig, quantize_onnx  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(d / f"im{i}.png")
    return d


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_keeps_the_intervention_inputs(slim_ckpt: Path, images: Path, tmp_path: Path, mode: str) -> None:
    fp32 = tmp_path / "slim.onnx"
    export_checkpoint(slim_ckpt, fp32, with_excitations=True, check=False)
    int8 = tmp_path / "slim.int8.onnx"
    cfg = QuantizeConfig(
        onnx=str(fp32), out=str(int8), calib_data=str(images), calib_images=8, mode=mode, limit=8,
        latency_runs=2, threads=1,
    )  # fmt: skip
    report = quantize_onnx(cfg, log=lambda _: None)
    assert report.agreement is not None and report.eval_images == 8
    assert list(report.gate_max_abs_diff) == ["se1", "se2", "se3", "se4", "se5"]
    graph = onnx.load(str(int8)).graph
    knobs = {f"se{i}_{k}" for i in range(1, 6) for k in ("mul", "add")}
    assert knobs <= {i.name for i in graph.input} and knobs <= {t.name for t in graph.initializer}
    assert any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger") for n in graph.node)

    img = (np.random.default_rng(5).random((40, 40, 3)) * 255).astype(np.uint8)
    for cls in (OnnxPredictor, OpenVinoPredictor):
        pred = cls(int8)
        base = pred.predict(img)
        g0 = base.excitations["features.18"]
        top = int(np.argmax(g0))
        pred.recorder.intervene("features.18", top, value=0.0)
        pred.recorder.intervene("features.18", 0, scale=2.0)
        got = pred.predict(img)
        g = got.excitations["features.18"]
        assert g[top] == 0.0
        # Same input and graph: the doubled gate is the int8 gate times 2 (the Mul stays float).
        np.testing.assert_allclose(g[0], 2 * g0[0], rtol=1e-6)
        others = [c for c in range(len(g)) if c not in (top, 0)]
        np.testing.assert_allclose(g[others], g0[others], atol=1e-6)
        np.testing.assert_allclose(got.excitations["features.10"], base.excitations["features.10"], atol=1e-6)
        # Downstream blocks see the muted channel (8-bit activations may round small changes away;
        # muting the block's strongest gate is not small).
        assert float(np.abs(got.excitations["features.34"] - base.excitations["features.34"]).max()) > 0
        pred.recorder.clear_interventions()
        again = pred.predict(img)
        np.testing.assert_allclose(again.excitations["features.18"], g0, atol=1e-6)
