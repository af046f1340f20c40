"""ONNX export: dynamic batch/H/W checked against PyTorch with onnxruntime, and the SE gates as extra
outputs equal to what ExcitationRecorder records. Slim models (width 0.125) keep files small."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sevgg_gui.cli import main  # noqa: E402
from sevgg_gui.deploy.onnx_export import (  # noqa: E402
    ShapeAgnosticAdaptiveAvgPool2d,
    export_checkpoint,
    export_onnx,
)
from sevgg_gui.recorder import ExcitationRecorder  # noqa: E402
from sevgg_gui.training.models import build_model, load_trained  # noqa: E402

CLASSES = [f"c{i}" for i in range(10)]


def batch(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 7), (9, 13), (14, 14), (31, 17)])
def test_shape_agnostic_pool_is_adaptive_avg_pool(hw: tuple[int, int]) -> None:
    x = torch.randn(2, 5, *hw)
    torch.testing.assert_close(ShapeAgnosticAdaptiveAvgPool2d(7)(x), F.adaptive_avg_pool2d(x, 7))


def test_export_has_dynamic_batch_and_size(slim_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "slim.onnx"
    report = export_checkpoint(slim_ckpt, out)
    assert report.output_names == ["logits"] and report.opset >= 17
    assert report.worst < 1e-4, report.max_abs_diff
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    model, _ = load_trained(slim_ckpt)
    for b, h, w in ((3, 48, 48), (1, 32, 32), (2, 64, 40)):  # exported at 32, run at other sizes
        x = batch(b, h, w)
        got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
        with torch.no_grad():
            want = model(x)
        assert want.abs().max() > 1.0  # a meaningful comparison, not two vectors of ~0
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert json.loads(props["class_names"]) == CLASSES and props["input_size"] == "32"


def test_excitation_outputs_equal_the_recorder(slim_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "gates.onnx"
    report = export_checkpoint(slim_ckpt, out, with_excitations=True)
    assert report.output_names == ["logits", "se1", "se2", "se3", "se4", "se5"]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == report.output_names
    model, _ = load_trained(slim_ckpt)
    x = batch(2, 48, 48, seed=1)
    logits, *gates = sess.run(None, {"input": x.numpy()})
    with ExcitationRecorder(model) as rec, torch.no_grad():
        want = model(x)
    recorded = list(rec.excitations.values())
    assert len(gates) == len(recorded) == 5
    for got, ref in zip(gates, recorded, strict=True):
        assert got.shape == tuple(ref.shape)  # (B, C)
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(logits, want.numpy(), atol=1e-4)
    assert json.loads(
        {p.key: p.value for p in onnx.load(str(out)).metadata_props}["excitation_blocks"]
    ) == list(rec.blocks)


def test_cli_export_prints_the_check(slim_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", "-c", str(slim_ckpt), "--onnx", str(out), "--with-excitations"]) == 0
    text = capsys.readouterr().out
    assert "se1, se2, se3, se4, se5" in text and "max abs diff" in text
    diff = float(text.rsplit("max abs diff", 1)[1].split()[0])
    assert diff < 1e-4 and out.is_file()
    assert main(["export", "-c", str(slim_ckpt), "--onnx", str(out), "--opset", "13"]) == 1
    assert "opset 13 is too old" in capsys.readouterr().err


def test_plain_vgg_exports_but_has_no_gates(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = build_model("vgg16", 4, width=0.125)
    report = export_onnx(plain, tmp_path / "plain.onnx", input_size=32, check_sizes=[32, 40])
    assert report.worst < 1e-4
    with pytest.raises(ValueError, match="no SE blocks"):
        export_onnx(plain, tmp_path / "x.onnx", input_size=32, with_excitations=True)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.usefixtures("one_thread")  # tiny model: threads only contend
def test_cli_export_timm_random_with_gates_and_intervention_inputs(tmp_path: Path, capsys) -> None:
    """`sevgg export -c timm:<name>:random --with-excitations`: every per-channel gate an output, each
    with its mul/add inputs, which default to the identity (the export check feeds the image alone)."""
    pytest.importorskip("timm")
    out = tmp_path / "mnv3.onnx"
    code = main(
        ["export", "-c", "timm:mobilenetv3_small_050:random", "-o", str(out), "--with-excitations",
         "--input-size", "64"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert float(text.rsplit("max abs diff", 1)[1].split()[0]) < 1e-4
    props = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    gates = [o for o in json.loads(props["excitation_outputs"]) if o["kind"] == "gate"]
    knobs = json.loads(props["intervention_inputs"])
    assert len(gates) == 9 and [k["output"] for k in knobs] == [g["output"] for g in gates]
    assert [k["mul"] for k in knobs] == [f"gate{i}_mul" for i in range(1, 10)]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]  # the others have defaults
    assert {i.name for i in sess.get_overridable_initializers()} == {
        n for k in knobs for n in (k["mul"], k["add"])
    }
    assert all(k["channels"] == g["shape"][1] for k, g in zip(knobs, gates, strict=True))


@pytest.mark.usefixtures("one_thread")  # tiny model: threads only contend
def test_cli_export_model_code_exports_gates_found_by_behaviour(tmp_path: Path, capsys) -> None:
    """An inline SE no registry knows is found by the recorder's probe; the export has its gates, equal
    to the recorder's on the exporter's own check."""
    code_file = Path(__file__).parent / "data" / "user_models" / "inline_se.py"
    out = tmp_path / "inline.onnx"
    assert main(["export", "--model-code", f"{code_file}:build", "-o", str(out), "--with-excitations"]) == 0
    text = capsys.readouterr().out
    assert "gate1=features.2 (gate), gate2=features.5 (gate)" in text
    assert float(text.rsplit("max abs diff", 1)[1].split()[0]) < 1e-4
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    described = json.loads(props["excitation_outputs"])
    assert [(o["block"], o["found_by"]) for o in described] == [
        ("features.2", "behaviour"),
        ("features.5", "behaviour"),
    ]
    assert [b["found_by"] for b in json.loads(props["attention_blocks"])] == ["behaviour", "behaviour"]
