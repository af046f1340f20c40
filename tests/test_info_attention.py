"""`sevgg info` on any architecture: every attention block with kind, channels and found-by, and the
cost table from torch's FLOP counter. The model is built here (timm, random weights; a user-style
network) and handed to the command as ``zoo.load_model`` would (timm: specs are parsed elsewhere)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from sevgg_gui.analysis import layer_macs, model_cost
from sevgg_gui.cli import inspection
from sevgg_gui.zoo import LoadedModel


def run_info(monkeypatch, capsys, model: nn.Module, *, as_json: bool, size: int = 64) -> tuple[int, str]:
    loaded = LoadedModel(model.eval(), "built in the test, random weights")
    monkeypatch.setattr(inspection, "load", lambda args: loaded)
    args = argparse.Namespace(
        checkpoint="given", input_size=size, json=as_json, num_classes=1000, reduction=16
    )
    code = inspection.cmd_info(args)
    return code, capsys.readouterr().out


class InlineSE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, c // 2), nn.Linear(c // 2, c)
        with torch.no_grad():
            self.fc1.bias.fill_(1.0)  # alive at random init (a dead ReLU bottleneck gives a constant gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))[:, :, None, None]


def user_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), InlineSE(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )


def test_info_json_on_timm_eca_and_se(monkeypatch, capsys) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    code, out = run_info(monkeypatch, capsys, timm.create_model("ecaresnet26t", num_classes=10), as_json=True)
    assert code == 0
    data = json.loads(out)
    blocks = data["blocks"]
    assert len(blocks) == 8 and data["attention_kinds"] == {"eca": 8}
    assert [b["channels"] for b in blocks] == [256, 256, 512, 512, 1024, 1024, 2048, 2048]
    assert all(b["found_by"] == "type" and b["recorded"] for b in blocks)
    assert blocks[0]["name"] == "layer1.0.se" and blocks[0]["spatial"] == [16, 16]  # 64 px input, stride 4
    assert data["total_macs"] > 0 and data["se_macs"] > 0

    code, out = run_info(
        monkeypatch, capsys, timm.create_model("legacy_seresnet18", num_classes=10), as_json=False
    )
    assert code == 0 and "attention blocks: 8 (se x8)" in out
    assert "SE1 layer1.0.se_module" in out


def test_info_lists_attention_that_is_not_recorded(monkeypatch, capsys) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    code, out = run_info(monkeypatch, capsys, timm.create_model("resnest14d", num_classes=10), as_json=False)
    assert code == 0
    assert "attention blocks: 4 (split-attention x4)" in out
    assert "split-attention: softmax over radix splits: not a per-channel gate, not recorded" in out


def test_info_on_user_code_finds_the_inline_se(monkeypatch, capsys) -> None:
    code, out = run_info(monkeypatch, capsys, user_net(), as_json=True, size=32)
    data = json.loads(out)
    assert code == 0
    assert [(b["name"], b["kind"], b["channels"], b["found_by"]) for b in data["blocks"]] == [
        ("1", "unknown-gate", 8, "behaviour")
    ]
    assert "1 gate block(s)" in data["probe"]


def test_info_on_a_model_without_attention_says_so(monkeypatch, capsys) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 32, 32))  # materialise the lazy layer
    code, out = run_info(monkeypatch, capsys, net, as_json=False, size=32)
    assert code == 0 and "no attention block found" in out


def test_flop_counter_macs_match_the_hand_count() -> None:
    """Conv and linear MACs from torch's FLOP counter equal the textbook count, per module and total."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 5 * 6, 7))
    shapes = layer_macs(net, (5, 6))
    conv, fc = 8 * 5 * 6 * 3 * 9, 8 * 5 * 6 * 7
    assert shapes.macs["0"] == conv and shapes.macs["2"] == fc and shapes.total_macs == conv + fc
    assert shapes.macs[""] == conv + fc  # the whole model, its submodules included


def test_cost_of_a_timm_block_counts_its_layers() -> None:
    pytest.importorskip("timm")
    from timm.layers import SEModule

    net = nn.Sequential(nn.Conv2d(3, 32, 1), SEModule(32, rd_ratio=0.25))
    cost = model_cost(net, (4, 4))
    (b,) = cost.blocks
    # fc1 (32 -> 8) and fc2 (8 -> 32) as 1x1 convs on the squeezed vector, plus squeeze and scale.
    assert (b.kind, b.channels, b.hidden, b.spatial) == ("se", 32, 8, (4, 4))
    assert b.macs == 32 * 8 + 8 * 32 + 2 * 32 * 4 * 4


def test_counting_macs_sets_no_global_module_hooks() -> None:
    """The app costs a meta copy on a helper thread while the inference thread runs the live model:
    global module hooks (FlopCounterMode's own module tracker) would fire in that forward too."""
    from torch.nn.modules import module as torch_module

    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(bool(torch_module._global_forward_pre_hooks or torch_module._global_forward_hooks))
            return x

    net = nn.Sequential(nn.Conv2d(3, 4, 3), Probe())
    assert layer_macs(net, (8, 8)).total_macs == 4 * 6 * 6 * 3 * 9
    assert seen == [False]
