"""timm SE networks through ONNX with their gates as outputs: onnxruntime matches PyTorch for the
logits and every recorded gate (the comparison of :mod:`test_onnx_networks`, references from the
recorder, the exporter's own check off). Random weights, BatchNorm calibrated so nothing is ~0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")
pytest.importorskip("onnxruntime")

from test_onnx_networks import _props, check_network, nontrivial  # noqa: E402

from sevgg_gui.recorder import ExcitationRecorder  # noqa: E402

NUM_CLASSES = 5


def light_cbam_net() -> nn.Module:
    """timm's light CBAM applies its channel sigmoid inline: the export applies it to fc2's output."""
    from timm.layers.cbam import LightCbamModule as Light

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        Light(16, rd_ratio=0.25),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, NUM_CLASSES),
    )


NETWORKS = {
    "seresnet18": (lambda: timm.create_model("seresnet18", num_classes=NUM_CLASSES), 8, ["SEModule"]),
    "legacy_seresnet18": (
        lambda: timm.create_model("legacy_seresnet18", num_classes=NUM_CLASSES),
        8,
        ["SEModule"],
    ),
    "ecaresnet26t": (lambda: timm.create_model("ecaresnet26t", num_classes=NUM_CLASSES), 8, ["EcaModule"]),
    "mobilenetv3_small_050": (
        lambda: timm.create_model("mobilenetv3_small_050", num_classes=NUM_CLASSES),
        9,
        ["SqueezeExcite"],
    ),
    # EfficientNet family at its smallest (TinyNet-E: EfficientNet-B0 blocks at reduced width/depth).
    "tinynet_e": (lambda: timm.create_model("tinynet_e", num_classes=NUM_CLASSES), 10, ["SqueezeExcite"]),
    "light_cbam": (light_cbam_net, 1, ["LightChannelAttn"]),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_timm_network_exports_its_gates(name: str, tmp_path: Path) -> None:
    build, gates, types = NETWORKS[name]
    tol = 1e-4  # test_onnx_networks.TOL: relative to max(1, |output|)
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():  # timm zero-inits each residual branch's last BN gamma: make gates vary
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    model = nontrivial(model)
    assert check_network(model, tmp_path) < tol
    outputs = json.loads(_props(tmp_path / "gates.onnx")["excitation_outputs"])
    channel = [o for o in outputs if o["kind"] == "gate"]
    assert len(channel) == gates and {o["type"] for o in channel} == set(types)
    rec = ExcitationRecorder(model)
    assert all(o["shape"] == ["batch", rec.taps[o["block"]].channels] for o in channel)
