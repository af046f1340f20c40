"""Blocks found by behaviour: user-code SE variants no registry knows are found, recorded and
intervened on; static scales, elementwise ops and containers are not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sevgg_gui.inference import Predictor
from sevgg_gui.recorder import ExcitationRecorder, find_gate_blocks
from sevgg_gui.taps import attention_blocks, example_input

# The gate is read as output/input at the largest |input| of each channel: exact to a few float32
# ulps of the product, so 1e-5 relative is ample and still far below any real gate difference.
TOL = dict(rtol=1e-5, atol=1e-6)


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class InlineSE(nn.Module):
    """What a user writes: SE with the gate computed inline (no submodule outputs the gate)."""

    def __init__(self, c: int, r: int = 4, inplace: bool = False) -> None:
        super().__init__()
        self.fc1, self.fc2, self.inplace = nn.Linear(c, c // r), nn.Linear(c // r, c), inplace
        with torch.no_grad():  # a random 2-unit bottleneck can be dead (ReLU of negatives): keep it alive
            self.fc1.bias.fill_(1.0)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate(x)[:, :, None, None]
        return x.mul_(g) if self.inplace else x * g


class ChannelsLastSE(nn.Module):
    """SE on (B, H, W, C) tensors, as in ConvNeXt-style code."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c, c)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x.mean((1, 2))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, None, None, :]


class Wrapper(nn.Module):
    """A container whose output is its child's: the child is the block, not the wrapper."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.inner = InlineSE(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class LayerScale(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:, None, None]


class MyReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class MySiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SampleNorm(nn.Module):
    """Input-dependent but one factor for all channels: not a channel gate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.flatten(1).norm(dim=1)[:, None, None, None]


class Head(nn.Module):
    def __init__(self, c: int, n: int = 5) -> None:
        super().__init__()
        self.fc = nn.Linear(c, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


def user_net(block: nn.Module, c: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), block, nn.Conv2d(c, c, 3, padding=1), Head(c)).eval()


def test_inline_se_is_found_recorded_and_muted() -> None:
    net = user_net(InlineSE(8))
    ex = example_input(16)
    blocks, report = attention_blocks(net, ex)
    assert [(b.name, b.kind, b.channels, b.found_by) for b in blocks] == [
        ("1", "unknown-gate", 8, "behaviour")
    ]
    assert report is not None and report.forwards == 1 and report.candidates == 2  # InlineSE, Head
    assert hook_count(net) == 0  # the probe's hooks are gone
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    se = net[1]
    with torch.no_grad():
        plain = net(x)
        h = net[0](x)
        expected = se.gate(h)
        out = se(h)
        with ExcitationRecorder(net, example_input=ex, feature_maps=["1"]) as rec:
            assert torch.equal(net(x), plain)
            g = rec.excitations["1"]
            assert torch.allclose(rec.squeezes["1"], h.mean((2, 3)), **TOL)
            assert rec.feature_maps["1"][0].shape == (2, 8, 12, 10)
            rec.intervene("1", 3, value=0.0)
            muted = se(h)
            rec.clear_interventions()
            rec.intervene("1", 3, scale=2.0)
            boosted = se(h)
    assert torch.allclose(g, expected, **TOL)
    others = [c for c in range(8) if c != 3]
    assert torch.all(muted[:, 3] == 0) and torch.equal(muted[:, others], out[:, others])
    assert torch.allclose(boosted[:, 3], 2 * out[:, 3], **TOL)
    assert torch.equal(boosted[:, others], out[:, others])
    assert hook_count(net) == 0


def test_channels_last_and_in_place_se_are_found() -> None:
    c = 6
    net = nn.Sequential(ChannelsLastSE(c)).eval()
    ex = torch.randn(2, 7, 5, c, generator=torch.Generator().manual_seed(2))
    ex[1] = 0.3 * ex[1] + 1.0  # two clearly different inputs
    blocks, _ = attention_blocks(net, ex)
    assert [(b.name, b.found_by, b.tap.channel_dim) for b in blocks] == [("0", "behaviour", 3)]
    # In place, channels first: its own input layout.
    net2 = nn.Sequential(nn.Conv2d(3, c, 1), InlineSE(c, r=2, inplace=True)).eval()
    blocks2, _ = attention_blocks(net2, example_input(9))
    assert [(b.name, b.tap.channel_dim) for b in blocks2] == [("1", 1)]
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), ExcitationRecorder(net2, example_input=example_input(9)) as rec:
        h = net2[0](x)
        expected = net2[1].gate(h)
        rec.intervene("1", 0, value=0.0)
        y = net2(x)
    g = rec.excitations["1"]
    assert torch.all(g[:, 0] == 0) and torch.allclose(g[:, 1:], expected[:, 1:], **TOL)
    assert torch.all(y[:, 0] == 0) and torch.allclose(y[:, 1:], h[:, 1:] * expected[:, 1:, None, None], **TOL)
    with torch.no_grad(), ExcitationRecorder(net, example_input=ex) as rec:
        net(ex)
        assert torch.allclose(rec.excitations["0"], net[0].gate(ex), **TOL)


def test_all_zero_channel_gives_nan_not_a_guess() -> None:
    net = user_net(InlineSE(8))
    with torch.no_grad():
        net[0].weight[2] = 0
        net[0].bias[2] = 0  # channel 2 of the SE input is all zero: its gate cannot be observed
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), ExcitationRecorder(net, example_input=example_input(8)) as rec:
        net(x)
        g = rec.excitations["1"]
        rec.intervene("1", 2, value=0.5)
        y = net[1](net[0](x))
    assert torch.isnan(g[:, 2]).all() and torch.isfinite(g[:, [0, 1, 3, 4, 5, 6, 7]]).all()
    assert torch.all(y[:, 2] == 0)  # 0 * anything, not NaN


def test_container_of_a_gate_is_not_a_block() -> None:
    net = user_net(Wrapper(8))
    assert [n for n, _ in find_gate_blocks(net, example_input(16))] == ["1.inner"]


@pytest.mark.parametrize("block", [LayerScale(8), MyReLU(), SampleNorm(), nn.BatchNorm2d(8)])
def test_static_scales_and_elementwise_ops_are_not_gates(block: nn.Module) -> None:
    if isinstance(block, nn.BatchNorm2d):
        with torch.no_grad():  # eval BatchNorm with real statistics: a fixed per-channel affine map
            block.running_mean.uniform_(-1, 1)
            block.running_var.uniform_(0.5, 2)
            block.weight.uniform_(0.5, 2)
    net = user_net(block)
    blocks, report = attention_blocks(net, example_input(16))
    assert blocks == []
    assert report is not None and "0 gate block(s)" in report.summary()
    with pytest.raises(ValueError, match="no recordable"):
        ExcitationRecorder(net, example_input=example_input(16))


def test_probe_costs_one_forward_and_none_for_known_types() -> None:
    from sevgg_gui.models.vgg import VGG16_SE

    calls = []
    net = user_net(InlineSE(8))
    net.register_forward_pre_hook(lambda m, i: calls.append(1))
    attention_blocks(net, example_input(16))
    assert len(calls) == 1
    with torch.device("meta"):  # VGG16-SE: every module type is known, so no forward at all
        model = VGG16_SE()
    _, report = attention_blocks(model, example_input(224, device="meta"))
    assert report is not None and report.forwards == 0 and report.candidates == 0 and report.error is None


def test_predictor_probes_a_user_model() -> None:
    net = user_net(InlineSE(8))
    pred = Predictor(net, device="cpu", class_names=[str(i) for i in range(5)])
    assert pred.block_names == ["1"]
    assert pred.recorder.probe_report.forwards == 1
    import numpy as np

    res = pred.predict(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    assert res.excitations["1"].shape == (8,)
    pred.close()
    assert hook_count(net) == 0


def test_timm_layerscale_and_convnext_have_no_gates() -> None:
    timm = pytest.importorskip("timm")
    from timm.layers import LayerScale2d

    torch.manual_seed(0)
    scale = LayerScale2d(8, init_values=0.5)
    with torch.no_grad():
        scale.gamma.uniform_(0.1, 2.0)  # per-channel, but the same for every input
    blocks, report = attention_blocks(user_net(scale), example_input(16))
    assert blocks == [] and report.candidates == 2 and report.forwards == 1
    convnext = timm.create_model("convnext_atto", pretrained=False, num_classes=3).eval()
    blocks, report = attention_blocks(convnext, example_input(64))
    assert blocks == [] and report.candidates > 10 and report.error is None


def test_nearly_linear_elementwise_op_on_tiny_features_is_not_a_gate() -> None:
    """SiLU on features of ~1e-4 (the head of a random-init timm EfficientNet) is x * (0.5 + x/4): a
    per-channel factor only to ~1e-4, whose differences between channels and images are of the same
    order. A true gate fits to rounding, so its differences stand far above the fit's residual."""
    from sevgg_gui.taps.probe import is_gate

    g = torch.Generator().manual_seed(0)
    x = 2e-4 * torch.randn(2, 1280, 4, 4, generator=g)
    x[1] += 2e-4 * torch.randn(1280, 1, 1, generator=g)  # the second image moves the channel levels
    silu = x * torch.sigmoid(x)
    assert not is_gate(x, silu, 1)
    assert is_gate(x, x * torch.rand(2, 1280, 1, 1, generator=g), 1)
    # A gate that barely moves (a random-init SE: 0.5 +- 1e-3) is still a gate: it fits exactly.
    assert is_gate(x, x * (0.5 + 1e-3 * torch.rand(2, 1280, 1, 1, generator=g)), 1)
    # Inputs constant over positions cannot tell a gate from an elementwise op: not reported.
    flat = x.mean((2, 3), keepdim=True).expand(-1, -1, 4, 4).contiguous()
    assert not is_gate(flat, flat * torch.rand(2, 1280, 1, 1, generator=g), 1)
