"""``sevgg quantize``: INT8 static quantization of an exported VGG16-SE with onnxruntime, calibrated on real
Fashion-MNIST images (a slim model trained for three epochs), against the float model: size, agreement,
accuracy, SE gates; dynamic mode and a folder of images; the one-line errors of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sevgg_gui.cli import main  # noqa: E402
from sevgg_gui.deploy.onnx_export import export_checkpoint  # noqa: E402
from sevgg_gui.deploy.quantize import QuantizeConfig, quantize_onnx, read_onnx_info  # noqa: E402
from sevgg_gui.training.train import TrainConfig, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("quant-cache"))


@pytest.fixture(scope="module")
def trained_onnx(fmnist: str, cache: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slim VGG16-SE (width 0.125) trained 3 epochs on 768 real images (~57% val top-1), exported with
    its SE gates as outputs."""
    d = tmp_path_factory.mktemp("quant-trained")
    cfg = TrainConfig(
        data=fmnist, out=str(d / "fm.pth"), cache_dir=cache, width=0.125, init="random", epochs=3, limit=768,
        val_limit=100, batch_size=32, lr_backbone=1e-3, lr_head=1e-3, augment="none", dropout=0.0,
        label_smoothing=0.0, seed=0,
    )  # fmt: skip
    result = train(cfg, log=lambda _: None)
    assert result.history[-1]["val_acc"] > 0.35
    export_checkpoint(d / "fm.pth", d / "fm.onnx", with_excitations=True, check=False)
    return d / "fm.onnx"


@pytest.fixture(scope="module")
def random_onnx(slim_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared random slim VGG16-SE (trained-like logits) as ONNX; needs no shared data."""
    out = tmp_path_factory.mktemp("quant-random") / "r.onnx"
    export_checkpoint(slim_ckpt, out, with_excitations=True, check=False)
    return out


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat folder of 24 smooth RGB images of varied sizes (no labels)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("quant-images")
    rng = np.random.default_rng(0)
    for i in range(24):
        h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([np.sin(6 * xx * rng.uniform(0.5, 2)), np.cos(5 * yy), xx * yy], -1)
        img = (img - img.min()) / (np.ptp(img) + 1e-9) * 255 + rng.normal(0, 12, (h, w, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"img{i:02d}.png")
    return d


def _initializer_bytes(path: Path, dtype: int) -> int:
    model = onnx.load(str(path))
    return sum(
        int(np.prod(t.dims)) * (1 if dtype == onnx.TensorProto.INT8 else 4)
        for t in model.graph.initializer
        if t.data_type == dtype and len(t.dims) >= 2
    )


def test_static_int8_is_small_agrees_and_keeps_the_gates(
    trained_onnx: Path, fmnist: str, cache: str, tmp_path: Path
) -> None:
    out = tmp_path / "fm.int8.onnx"
    cfg = QuantizeConfig(
        onnx=str(trained_onnx), out=str(out), calib_data=fmnist, calib_images=128, per_channel=True,
        limit=300, cache_dir=cache, latency_runs=5, threads=1,
    )  # fmt: skip
    report = quantize_onnx(cfg, log=lambda _: None)
    # Every conv / linear weight matrix is int8 except the logit layer's (kept float on purpose).
    assert report.size_ratio <= 0.3, report.to_dict()
    assert (
        _initializer_bytes(out, onnx.TensorProto.INT8)
        > 0.95 * _initializer_bytes(trained_onnx, onnx.TensorProto.FLOAT) / 4
    )
    # 7-bit weights: a pair of u8 x s8 products fits 16 bits (255 * 64 * 2 < 32767), so CPUs whose int8
    # kernels saturate there (x86 without VNNI) compute what this one does and the bounds below hold.
    weights = [
        onnx.numpy_helper.to_array(t)
        for t in onnx.load(str(out)).graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2
    ]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    # Fidelity on 300 held-out test images (the float model gets ~57%).
    assert report.eval_images == 300 and report.calib_images == 128
    assert report.agreement is not None and report.agreement >= 0.9, report.to_dict()
    assert report.fp32_top1 is not None and report.fp32_top1 > 0.35
    assert report.int8_top1 is not None and abs(report.int8_top1 - report.fp32_top1) <= 0.05
    assert list(report.gate_max_abs_diff) == ["se1", "se2", "se3", "se4", "se5"]
    assert report.max_gate_diff is not None and report.max_gate_diff < 0.02
    assert report.fp32_ms > 0 and report.int8_ms > 0 and report.latency_ratio > 0

    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["agreement"] == report.agreement and saved["size_ratio"] <= 0.3
    assert saved["max_gate_diff"] == report.max_gate_diff and saved["int8_bytes"] == out.stat().st_size

    # The model's interface survives: metadata (same preprocessing), dynamic batch and size.
    info = read_onnx_info(trained_onnx)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["input_size"] == "32" and props["mean"] == info.props["mean"]
    assert json.loads(props["quantization"])["per_channel"] is True
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    for b, h, w in ((1, 32, 32), (7, 32, 32), (2, 64, 48)):
        x = np.random.default_rng(b).standard_normal((b, 3, h, w)).astype(np.float32)
        logits, *gates = sess.run(None, {"input": x})
        assert logits.shape == (b, 10) and np.isfinite(logits).all()
        assert len(gates) == 5 and all(g.shape[0] == b and ((g >= 0) & (g <= 1)).all() for g in gates)


def test_dynamic_mode_and_a_folder_of_images(random_onnx: Path, photo_folder: Path, tmp_path: Path) -> None:
    """No shared data needed: unlabelled images, agreement without accuracy; dynamic needs no calibration."""
    static = tmp_path / "r.int8.onnx"
    report = quantize_onnx(
        QuantizeConfig(
            onnx=str(random_onnx), out=str(static), calib_data=str(photo_folder), calib_images=16,
            latency_runs=3, threads=1,
        ),
        log=lambda _: None,
    )  # fmt: skip
    assert report.calib_images == 16 and report.eval_images == 24  # evaluated on the folder's images
    assert report.fp32_top1 is None and report.int8_top1 is None
    assert report.agreement is not None and report.agreement >= 0.75, report.to_dict()
    assert report.size_ratio <= 0.3 and report.max_gate_diff is not None and report.max_gate_diff < 0.05

    dynamic = tmp_path / "r.dyn.onnx"
    rep = quantize_onnx(
        QuantizeConfig(
            onnx=str(random_onnx), out=str(dynamic), mode="dynamic", eval_data=str(photo_folder),
            latency_runs=3, threads=1,
        ),
        log=lambda _: None,
    )  # fmt: skip
    assert rep.calib_images == 0 and rep.calib_method is None and rep.size_ratio <= 0.3
    assert rep.agreement is not None and rep.agreement >= 0.75
    ops = {n.op_type for n in onnx.load(str(dynamic)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "QuantizeLinear" not in ops


def test_cli_quantize_prints_and_writes_the_report(
    random_onnx: Path, photo_folder: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "cli.int8.onnx"
    json_out = tmp_path / "reports" / "q.json"
    args = ["quantize", "--onnx", str(random_onnx), "--out", str(out), "--calib-data", str(photo_folder),
            "--calib-images", "8", "--latency-runs", "3", "--threads", "1", "--per-channel",
            "--json-out", str(json_out), "--min-agreement", "0"]  # fmt: skip
    assert main(args) == 0  # a flat folder: the checked path (6 images calibrate, 2 are held out)
    text = capsys.readouterr().out
    assert "size" in text and "latency" in text and "agreement" in text and "SE gates" in text
    report = json.loads(json_out.read_text())
    assert "per-channel" in report["config"] and report["held_out_images"] == 2 and out.is_file()


def test_cli_errors_are_one_line(random_onnx: Path, tmp_path: Path, capsys, is_one_line) -> None:
    out = tmp_path / "never.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    text_file = tmp_path / "fake.onnx"
    text_file.write_text("this is not a model\n")
    quantized = tmp_path / "q.onnx"
    quantize_onnx(
        QuantizeConfig(onnx=str(random_onnx), out=str(quantized), mode="dynamic", latency_runs=1),
        log=lambda _: None,
    )
    cases = [
        (["--onnx", str(tmp_path / "missing.onnx"), "--calib-data", str(empty)], "no such file"),
        (["--onnx", str(text_file), "--calib-data", str(empty)], "not an ONNX model"),
        (["--onnx", str(random_onnx), "--calib-data", str(empty)], "no calibration images"),
        (["--onnx", str(random_onnx), "--calib-data", str(tmp_path / "nowhere")], "no such file or folder"),
        (["--onnx", str(quantized), "--mode", "dynamic"], "already quantized"),
    ]
    for extra, message in cases:
        assert main(["quantize", "--out", str(out), *extra]) == 1, extra
        err = capsys.readouterr().err.strip()
        assert message in err and is_one_line(err), err
        assert not out.exists()
    assert main(["quantize", "--onnx", str(random_onnx), "--out", str(out)]) == 2
    assert "--calib-data is required" in capsys.readouterr().err
