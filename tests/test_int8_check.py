"""The checked INT8 path shared by ``sevgg quantize`` and the app's "Optimize for this CPU…": real
onnxruntime on a slim random VGG16-SE at 32 px (trained-like logits), images made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sevgg_gui.cli import main  # noqa: E402
from sevgg_gui.deploy.int8_check import (  # noqa: E402
    Int8Cancelled,
    Int8Config,
    attention_nodes,
    calibrate_and_check,
    split_indices,
)
from sevgg_gui.deploy.onnx_export import export_checkpoint  # noqa: E402
from sevgg_gui.deploy.quantize import QuantizeError, read_onnx_info, session  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def slim_onnx(slim_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8-model") / "slim.onnx"
    export_checkpoint(slim_ckpt, out, with_excitations=True, check=False)
    return out


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """16 smooth RGB frames of varied sizes with noise (arrays, as the app's frames are)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(16):
        h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([np.sin(6 * xx * rng.uniform(0.5, 2)), np.cos(5 * yy), xx * yy], -1)
        img = (img - img.min()) / (np.ptp(img) + 1e-9) * 255 + rng.normal(0, 12, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def test_split_is_disjoint_and_covers_everything_by_construction() -> None:
    for n in (2, 3, 10, 41):
        for frac in (0.1, 0.25, 0.5, 0.9):
            for contiguous in (False, True):
                calib, held = split_indices(n, frac, contiguous=contiguous, seed=n)
                assert not set(calib) & set(held) and sorted(calib + held) == list(range(n))
                assert calib and held
                if contiguous:  # the latest frames are held out, away from their near-copies
                    assert min(held) > max(calib)
    with pytest.raises(QuantizeError, match="at least one"):
        split_indices(1, 0.5)


def test_shared_path_numbers_equal_a_direct_recomputation(
    slim_onnx: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "ok.int8.onnx"
    rep = calibrate_and_check(
        slim_onnx, images, out, held_out_fraction=0.25, min_agreement=0.0, latency_runs=2
    )
    assert rep.installed == str(out) and out.is_file() and rep.refused is None
    assert rep.calib_images == 12 and rep.held_out_images == 4
    assert not set(rep.calib_indices) & set(rep.held_out_indices)
    # Recompute from scratch with fresh sessions on the held-out images only.
    info = read_onnx_info(slim_onnx)
    fp32, int8 = session(slim_onnx, 1), session(out, 1)
    agree, worst = 0, {g: 0.0 for g in info.gate_outputs}
    for i in rep.held_out_indices:
        x = info.preprocess(images[i]).numpy()[None]
        a, b = fp32.run(None, {info.input_name: x}), int8.run(None, {info.input_name: x})
        agree += int(a[0].argmax() == b[0].argmax())
        for k, g in enumerate(info.gate_outputs, start=1):
            worst[g] = max(worst[g], float(np.abs(a[k] - b[k]).max()))
    assert rep.agree == agree and rep.agreement == agree / 4
    assert len(worst) == 5 and set(rep.gate_diffs) == set(worst)
    for g, v in worst.items():  # same files, same kernels: equal up to float32 rounding of the runs
        assert rep.gate_diffs[g] == pytest.approx(v, abs=1e-6)
    assert rep.max_gate_diff == pytest.approx(max(worst.values()), abs=1e-6)
    assert rep.speedup > 0 and "quantization" in {p.key for p in onnx.load(str(out)).metadata_props}


def test_refusal_installs_nothing_and_states_the_numbers_in_one_line(
    slim_onnx: Path, images: list[np.ndarray], tmp_path: Path, is_one_line
) -> None:
    out = tmp_path / "refused.int8.onnx"
    rep = calibrate_and_check(
        slim_onnx, images, out, min_agreement=0.0, max_gate_diff=1e-9, latency_runs=2
    )  # no INT8 gate equals fp32 to 1e-9
    assert rep.installed is None and not out.exists() and list(tmp_path.iterdir()) == []
    line = rep.line()
    assert is_one_line(line) and line.startswith("INT8 refused")
    assert f"{rep.agreement:.1%}" in line and f"{rep.max_gate_diff:.3g}" in line and "speed-up" in line
    assert "no INT8 file installed" in line


def test_cancel_leaves_no_file(slim_onnx: Path, images: list[np.ndarray], tmp_path: Path) -> None:
    out = tmp_path / "c.int8.onnx"
    with pytest.raises(Int8Cancelled):
        calibrate_and_check(slim_onnx, images, out, min_agreement=0.0, cancelled=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_attention_subgraphs_are_found_and_kept_float(
    slim_onnx: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    proto = onnx.load(str(slim_onnx))
    found = attention_nodes(proto)
    ops = [n.op_type for n in proto.graph.node if n.name in set(found)]
    assert ops.count("Sigmoid") == 5 and ops.count("Mul") >= 5  # the 5 SE blocks of VGG16-SE
    out = tmp_path / "q.onnx"
    calibrate_and_check(
        slim_onnx,
        images,
        out,
        min_agreement=0.0,
        latency_runs=1,
        config=Int8Config(op_types=("Conv", "Gemm", "MatMul")),
    )
    q = onnx.load(str(out))
    feeds = {i for n in q.graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    for n in q.graph.node:  # no SE node reads a dequantized tensor: the gates are computed in float
        if n.name in set(found):
            assert not set(n.input) & feeds, n.name


def test_cli_refuses_below_the_threshold(
    slim_onnx: Path, images: list[np.ndarray], tmp_path: Path, capsys
) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images[:8]):
        Image.fromarray(im).save(folder / f"f{i}.png")
    out = tmp_path / "cli.int8.onnx"
    base = ["quantize", "--onnx", str(slim_onnx), "--out", str(out), "--calib-data", str(folder),
            "--latency-runs", "2", "--threads", "1"]  # fmt: skip
    assert main([*base, "--min-agreement", "0", "--max-gate-diff", "0"]) == 1
    text = capsys.readouterr().out
    assert "INT8 refused" in text and "2 held out" in text and not out.exists()
    assert main([*base, "--min-agreement", "0"]) == 0
    text = capsys.readouterr().out
    assert "INT8 accepted" in text and "6 for calibration, 2 held out" in text and out.is_file()


def test_attention_subgraphs_of_mobilenet_v3(tmp_path: Path) -> None:
    """torchvision's MobileNetV3-Small (random weights, 64 px): 9 SE blocks of GlobalAveragePool, two 1x1
    Convs, Relu, HardSigmoid and the Mul; no other node (the 1x1 convs of the features stay quantizable)."""
    import torch
    import torchvision

    from sevgg_gui.deploy.onnx_export import export_onnx

    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    export_onnx(
        torchvision.models.mobilenet_v3_small().eval(),
        path,
        input_size=64,
        with_excitations=True,
        check=False,
    )
    proto = onnx.load(str(path))
    found = set(attention_nodes(proto))
    ops = [n.op_type for n in proto.graph.node if n.name in found]
    for op, count in {"GlobalAveragePool": 9, "Conv": 18, "Relu": 9, "HardSigmoid": 9}.items():
        assert ops.count(op) == count, (op, ops.count(op))  # the SE layers, and no feature conv
    # besides: the Mul scaling the features, reshapes and the export's gate intervention Mul/Add
    assert set(ops) <= {"GlobalAveragePool", "Conv", "Relu", "HardSigmoid", "Mul", "Add", "Reshape"}
    assert ops.count("Mul") >= 9
    # onnxruntime's pre-processing inlines HardSwish as x * HardSigmoid(x): not a gate, nothing more found
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(path), str(tmp_path / "pre.onnx"), skip_symbolic_shape=True)
    pre = onnx.load(str(tmp_path / "pre.onnx"))
    assert set(attention_nodes(pre)) == found and sum(n.op_type == "Mul" for n in pre.graph.node) > 9
