"""Whole attention networks through ONNX: every network exports with dynamic batch/H/W and onnxruntime
matches PyTorch for the logits and for every recorded gate and spatial map.

References come from :class:`~sevgg_gui.recorder.ExcitationRecorder`, not from the exporter's own hooks,
and the exporter's own check is off: the comparisons here are independent of the code under test. Each
network is traced at batch 2, 32x32 and run at batches 1 and 3 and at two other sizes (one with odd and
non-square maps), so a shape baked into the graph anywhere shows up as a mismatch or an error.

BatchNorm statistics are calibrated on random data and the last layer scaled so logits are ~O(10):
freshly initialised GoogLeNet / MobileNet heads give logits of ~1e-10, where any export "matches".
The calibration batch matters: statistics from 4 images of 32x32 (1x1 maps at the end of ResNet-50)
leave near-zero variances whose 1/sqrt blows float32 rounding up to 1e-3..5e-2 of the logits in both
runtimes alike; 8 images of 64x64, and no variance under 0.05, keep every network at ~1e-5.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torchvision = pytest.importorskip("torchvision")

from sevgg_gui.cli import main  # noqa: E402
from sevgg_gui.deploy import onnx_export  # noqa: E402
from sevgg_gui.deploy.onnx_export import (  # noqa: E402
    GlobalMaxPool2d,
    ShapeAgnosticAdaptiveAvgPool2d,
    export_onnx,
    exportable_pools,
)
from sevgg_gui.models.networks import (  # noqa: E402
    se_inception,
    se_mobilenet,
    se_resnet18,
    se_resnet50,
    vgg16_attention,
)
from sevgg_gui.recorder import ExcitationRecorder  # noqa: E402

NUM_CLASSES = 5
TRACE = (2, 32)  # batch, square size the exporter traces with
# (batch, H, W) run through onnxruntime: two batch sizes and two sizes, all unlike the trace. 70x99
# gives VGG a 2x3 map before its 7x7 pool (overlapping windows) and odd maps on the way everywhere.
RUNS = ((1, 40, 56), (3, 70, 99))
TOL = 1e-4  # relative to max(1, the output's largest magnitude)

VGG_KINDS = ("se", "sse", "scse", "bam", "cbam", "eca")
NETWORKS: dict[str, Callable[[], nn.Module]] = {
    **{f"vgg16_{k}": (lambda k=k: vgg16_attention(k, NUM_CLASSES, width=0.125)) for k in VGG_KINDS},
    "se_resnet18": lambda: se_resnet18(NUM_CLASSES),
    "se_resnet50": lambda: se_resnet50(NUM_CLASSES),
    "se_inception": lambda: se_inception(NUM_CLASSES),
    "se_mobilenet": lambda: se_mobilenet(NUM_CLASSES, width_mult=0.25),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(num_classes=NUM_CLASSES),
}
# Output names per network: the article's SEBlock keeps se<i>; other gates are gate<i>, maps map<i>.
EXPECTED_NAMES: dict[str, list[str]] = {
    "vgg16_se": [f"se{i}" for i in range(1, 6)],
    "vgg16_sse": [f"map{i}" for i in range(1, 6)],
    "vgg16_scse": [n for i in range(1, 6) for n in (f"gate{i}", f"map{i}")],
    "vgg16_bam": [n for i in range(1, 6) for n in (f"gate{i}", f"map{i}")],
    "vgg16_cbam": [n for i in range(1, 6) for n in (f"gate{i}", f"map{i}")],
    "vgg16_eca": [f"gate{i}" for i in range(1, 6)],
    "se_resnet18": [f"se{i}" for i in range(1, 9)],
    "se_resnet50": [f"se{i}" for i in range(1, 17)],
    "se_inception": [f"se{i}" for i in range(1, 10)],
    "se_mobilenet": [f"se{i}" for i in range(1, 18)],
    "mobilenet_v3_small": [f"gate{i}" for i in range(1, 10)],
}


def nontrivial(model: nn.Module) -> nn.Module:
    """Eval-mode model with calibrated BatchNorm statistics and logits of a trained-like scale."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.train()(x)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_var.clamp_(min=0.05)  # a channel dead on the batch: 1/sqrt(eps) = 316x gain
        y = model.eval()(x)
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        k = 4.0 / float(y.std())
        head.weight.mul_(k)
        head.bias.mul_(k)
    return model


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _props(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _close(name: str, got: np.ndarray, want: torch.Tensor) -> float:
    """Assert ORT == PyTorch to TOL relative; returns the relative max difference."""
    assert got.shape == tuple(want.shape), f"{name}: {got.shape} vs {tuple(want.shape)}"
    scale = max(1.0, float(want.abs().max()))
    diff = float((torch.from_numpy(got) - want).abs().max())
    assert diff <= TOL * scale, f"{name}: max abs diff {diff:.3g} at output scale {scale:.3g}"
    return diff / scale


def check_network(model: nn.Module, tmp: Path) -> float:
    """Export plain and with excitations, compare both with PyTorch on RUNS; the worst relative diff."""
    plain, gated = tmp / "plain.onnx", tmp / "gates.onnx"
    export_onnx(model, plain, input_size=TRACE[1], check=False)
    report = export_onnx(model, gated, input_size=TRACE[1], with_excitations=True, check=False)
    s_plain, s_gated = _session(plain), _session(gated)
    assert s_plain.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    outputs = json.loads(_props(gated)["excitation_outputs"])
    assert [o["output"] for o in outputs] == report.output_names[1:]
    assert [o.name for o in s_gated.get_outputs()] == report.output_names
    # The metadata's shapes are the graph's: (batch, C) gates, maps with their own dynamic H and W.
    assert [o.shape for o in s_gated.get_outputs()[1:]] == [o["shape"] for o in outputs]
    assert all(
        o["shape"][2:] == [f"{o['output']}_height", f"{o['output']}_width"]
        for o in outputs
        if o["kind"] == "map"
    )
    worst = 0.0
    rec = ExcitationRecorder(model)
    for b, h, w in RUNS:
        x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(b * h + w))
        with rec, torch.no_grad():
            want = model(x)
        assert float(want.abs().max()) > 1.0  # a meaningful comparison, not two vectors of ~0
        ref = {"gate": rec.excitations, "map": rec.spatial_maps}
        (logits,) = s_plain.run(None, {"input": x.numpy()})
        worst = max(worst, _close(f"plain logits {b}x{h}x{w}", logits, want))
        got = s_gated.run(None, {"input": x.numpy()})
        worst = max(worst, _close(f"logits {b}x{h}x{w}", got[0], want))
        for o, g in zip(outputs, got[1:], strict=True):
            worst = max(
                worst, _close(f"{o['output']} ({o['block']}) {b}x{h}x{w}", g, ref[o["kind"]][o["block"]])
            )
    return worst


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_exports_and_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nontrivial(NETWORKS[name]())
    keys = list(model.state_dict())
    before = [type(m) for m in model.modules()]
    assert check_network(model, tmp_path) < TOL
    props = _props(tmp_path / "gates.onnx")
    outputs = json.loads(props["excitation_outputs"])
    assert [o["output"] for o in outputs] == EXPECTED_NAMES[name]
    rec = ExcitationRecorder(model)
    assert json.loads(props["excitation_blocks"]) == list(rec.blocks)
    assert {o["block"] for o in outputs if o["kind"] == "gate"} == set(rec.taps)
    assert {o["block"] for o in outputs if o["kind"] == "map"} == set(rec.spatial_taps)
    # The export-only substitutions are gone again: same modules, same keys.
    assert [type(m) for m in model.modules()] == before and list(model.state_dict()) == keys


# ------------------------------------------------------------------------------------------------
# The substitutions are exact, and the tests notice when one is not
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 5), (32, 32), (45, 61)])
def test_global_max_pool_is_adaptive_max_pool(hw: tuple[int, int]) -> None:
    x = torch.randn(2, 6, *hw)
    x[0, 1, 0, 0] = float("-inf")
    x[1, 2, -1, -1] = float("nan")
    want = nn.AdaptiveMaxPool2d(1)(x)
    assert torch.equal(torch.nan_to_num(GlobalMaxPool2d()(x)), torch.nan_to_num(want))
    assert torch.isnan(GlobalMaxPool2d()(x)).equal(torch.isnan(want))


@pytest.mark.parametrize("out", [1, 2, (3, 5), (7, 7)])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (9, 13), (31, 17)])
def test_shape_agnostic_pool_matches_every_output_size(
    out: int | tuple[int, int], hw: tuple[int, int]
) -> None:
    x = torch.randn(2, 4, *hw)
    torch.testing.assert_close(ShapeAgnosticAdaptiveAvgPool2d(out)(x), F.adaptive_avg_pool2d(x, out))


def test_exportable_pools_swaps_only_for_the_export() -> None:
    model = vgg16_attention("cbam", NUM_CLASSES, width=0.125).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        want = model(x)
        with exportable_pools(model):
            kinds = {type(m) for m in model.modules()}
            got = model(x)
    assert ShapeAgnosticAdaptiveAvgPool2d in kinds and GlobalMaxPool2d in kinds
    assert nn.AdaptiveMaxPool2d not in kinds
    torch.testing.assert_close(got, want)
    kinds = {type(m) for m in model.modules()}
    assert nn.AdaptiveMaxPool2d in kinds and GlobalMaxPool2d not in kinds


class _NearestTo(nn.Module):
    """A wrong stand-in for adaptive average pooling: right for a 1x1 map (the 32x32 trace), wrong else."""

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=self.output_size, mode="nearest")


class _TracedSizeMaxPool(nn.Module):
    """What the exporter bakes in for AdaptiveMaxPool2d(1) when it sees the size: a fixed kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=(int(x.shape[-2]), int(x.shape[-1])))


@pytest.mark.parametrize(
    ("network", "attr", "broken"),
    [
        ("vgg16_se", "ShapeAgnosticAdaptiveAvgPool2d", _NearestTo),
        ("vgg16_cbam", "GlobalMaxPool2d", _TracedSizeMaxPool),
    ],
)
def test_a_wrong_substitution_fails(
    network: str, attr: str, broken: type[nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, attr, broken)
    torch.manual_seed(0)
    model = nontrivial(NETWORKS[network]())
    with pytest.raises(AssertionError, match="max abs diff"):
        check_network(model, tmp_path)


# ------------------------------------------------------------------------------------------------
# CLI with model specs other than a `sevgg train` checkpoint
# ------------------------------------------------------------------------------------------------

MOBILENET_FILE = "mobilenet_v3_small-tfslim_uint8-distilled.pth"


@pytest.fixture(scope="module")
def mobilenet_file(request: pytest.FixtureRequest) -> Path:
    shared = request.getfixturevalue("shared_dir")
    path = shared / "weights" / MOBILENET_FILE
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_cli_exports_a_pretrained_spec(
    mobilenet_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pretrained:mobilenet_v3_small` offline: the local weights stand in the torch hub cache."""
    from torchvision.models import MobileNet_V3_Small_Weights

    from sevgg_gui.models.vgg import cached_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = cached_weights_path(MobileNet_V3_Small_Weights.DEFAULT)
    assert str(cached).startswith(str(tmp_path))
    cached.parent.mkdir(parents=True)
    os.symlink(mobilenet_file, cached)
    out = tmp_path / "mv3.onnx"
    assert (
        main(["export", "-c", "pretrained:mobilenet_v3_small", "--onnx", str(out), "--with-excitations"]) == 0
    )
    text = capsys.readouterr().out
    assert "outputs logits, " + ", ".join(f"gate{i}" for i in range(1, 10)) in text
    assert "gate1=features.1.block.1 (gate)" in text
    assert "1x3x224x232" in text and "3x3x336x344" in text  # two batches, two sizes
    assert float(text.rsplit("max abs diff", 1)[1].split()[0]) < 1e-4

    props = _props(out)
    names = json.loads(props["class_names"])
    assert names == list(MobileNet_V3_Small_Weights.DEFAULT.meta["categories"]) and len(names) == 1000
    assert props["input_size"] == "224" and props["source"] == "pretrained:mobilenet_v3_small"
    assert json.loads(props["mean"]) == pytest.approx([0.485, 0.456, 0.406])

    model = torchvision.models.mobilenet_v3_small()
    model.load_state_dict(torch.load(mobilenet_file, weights_only=True))
    model.eval()
    x = torch.randn(2, 3, 160, 200, generator=torch.Generator().manual_seed(3))
    with ExcitationRecorder(model) as rec, torch.no_grad():
        want = model(x)
    logits, *gates = _session(out).run(None, {"input": x.numpy()})
    assert float(want.abs().max()) > 5.0  # trained ImageNet logits
    _close("logits", logits, want)
    assert len(gates) == len(rec.excitations) == 9
    for g, ref in zip(gates, rec.excitations.values(), strict=True):
        _close("gate", g, ref)


def test_cli_exports_a_torchvision_state_dict_file(
    mobilenet_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "file.onnx"
    args = ["export", "-c", str(mobilenet_file), "--onnx", str(out), "--input-size", "64", "--no-check"]
    assert main(args) == 0
    assert "outputs logits)" in capsys.readouterr().out
    props = _props(out)
    assert props["arch"] == "mobilenet_v3_small" and props["source"] == MOBILENET_FILE
    assert props["input_size"] == "64"


def test_cli_export_bad_specs_fail_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "-c", "vgg16:nonesuch", "--onnx", str(tmp_path / "a.onnx")]) == 1
    err = capsys.readouterr().err
    assert "unknown attention 'nonesuch'" in err and len(err.strip().splitlines()) == 1
    assert main(["export", "-c", str(tmp_path / "missing.pth"), "--onnx", str(tmp_path / "b.onnx")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx"))
