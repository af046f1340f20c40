"""Attention registry: shapes at any size, gradients, ONNX with dynamic H/W, the papers' equations,
and what the recorder sees (channel gates, spatial maps, interventions) for every type."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sevgg_gui.analysis import layer_macs
from sevgg_gui.models.attention import (
    BAM,
    CBAM,
    DEFAULT_ATTENTION,
    ECA,
    SCSE,
    SpatialSE,
    attention_options,
    available_attention,
    create_attention,
    eca_kernel_size,
)
from sevgg_gui.models.se import SEBlock
from sevgg_gui.recorder import ExcitationRecorder, find_gate_blocks

NAMES = ["se", "sse", "scse", "bam", "cbam", "eca"]
CHANNEL_GATED = {"se", "scse", "bam", "cbam", "eca"}
SPATIAL = {"sse", "scse", "bam", "cbam"}


def randomise_bn(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so an eval-mode BN is not the identity in the checks."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def small(name: str, channels: int) -> nn.Module:
    """``name`` with reduction 2 where the type has a bottleneck (sSE and ECA have none)."""
    opts = {"reduction": 2} if "reduction" in attention_options(name) else {}
    return create_attention(name, channels, **opts)


# ---------------------------------------------------------------------------------------- registry
def test_registry_keys_and_unknown_name() -> None:
    assert available_attention() == NAMES
    with pytest.raises(ValueError, match="se, sse, scse, bam, cbam, eca"):
        create_attention("nope", 8)


def test_factory_types_and_default() -> None:
    assert DEFAULT_ATTENTION == "se" and type(create_attention(DEFAULT_ATTENTION, 8)) is SEBlock
    expected = {"se": SEBlock, "sse": SpatialSE, "scse": SCSE, "bam": BAM, "cbam": CBAM, "eca": ECA}
    for name, cls in expected.items():
        assert type(create_attention(name, 8)) is cls
    assert type(create_attention("CBAM", 8)) is CBAM  # names are case-insensitive


def test_se_key_is_the_article_block() -> None:
    block = create_attention("se", 64, reduction=16)
    assert list(block.state_dict()) == ["fc.0.weight", "fc.2.weight"]
    assert block.fc[0].out_features == 4
    hard = create_attention("se", 64, gate="hard_sigmoid")
    assert isinstance(hard.fc[3], nn.Hardsigmoid)
    assert list(hard.state_dict()) == ["fc.0.weight", "fc.2.weight"]


def test_option_vocabulary() -> None:
    for name in NAMES:
        assert "gate" in attention_options(name)
    for name in ("se", "scse", "bam", "cbam"):
        assert "reduction" in attention_options(name)
    for name in ("sse", "scse", "bam", "cbam", "eca"):
        assert "kernel_size" in attention_options(name)
    with pytest.raises(ValueError, match="takes no option"):
        create_attention("se", 8, kernel_size=3)
    with pytest.raises(ValueError, match="takes no option"):
        create_attention("eca", 8, reduction=4)
    with pytest.raises(ValueError, match="unknown gate"):
        create_attention("cbam", 8, gate="tanh")
    with pytest.raises(ValueError, match="odd"):
        create_attention("cbam", 8, kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        create_attention("bam", 0)
    assert create_attention("cbam", 64, reduction=8).mlp[0].out_features == 8
    assert create_attention("bam", 64, reduction=4).spatial[0].out_channels == 16
    assert create_attention("cbam", 8, kernel_size=3).conv.kernel_size == (3, 3)
    assert isinstance(create_attention("sse", 8, gate="hard_sigmoid").spatial_gate, nn.Hardsigmoid)


# ---------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [(1, 1), (7, 7), (13, 17), (32, 32)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("channels", [1, 3, 16, 64])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_equals_input_shape(name: str, channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    m = create_attention(name, channels).eval()
    x = torch.randn(2, channels, *size)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("channels", range(1, 9))
def test_scse_small_channel_counts(channels: int) -> None:
    m = create_attention("scse", channels)
    x = torch.randn(2, channels, 5, 6, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------- gradients
def layers_feeding_batchnorm(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """(name, conv/linear) whose output tensor is the very input of a BatchNorm, found by running ``x``
    (so it sees torchvision blocks' attribute-wired convs as well as Sequentials)."""
    produced: dict[int, tuple[str, nn.Module]] = {}
    fed: list[tuple[str, nn.Module]] = []
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear):
            handles.append(
                m.register_forward_hook(lambda m, i, o, n=name: produced.__setitem__(id(o), (n, m)))
            )
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(
                m.register_forward_pre_hook(
                    lambda m, i: fed.append(produced[id(i[0])]) if id(i[0]) in produced else None
                )
            )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return fed


@pytest.mark.parametrize("name", NAMES)
def test_no_bias_feeds_a_batchnorm(name: str) -> None:
    """A bias right before a BatchNorm is dead weight: BN subtracts the batch mean, so its gradient is
    exactly zero (in exact arithmetic) and BN's own shift already does its job."""
    m = small(name, 16).eval()
    fed = layers_feeding_batchnorm(m, torch.randn(2, 16, 9, 9))
    assert bool(fed) == (name == "bam")  # BAM is the registry's only type with BatchNorm
    assert [n for n, layer in fed if layer.bias is not None] == []


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_finite_gradient(name: str, gate: str) -> None:
    torch.manual_seed(0)
    opts = {"reduction": 2} if "reduction" in attention_options(name) else {}  # 8 hidden units, not 1
    m = create_attention(name, 16, gate=gate, **opts).train()
    # Samples whose channel means differ (offsets of std 1): a bottleneck ReLU unit is then active for
    # some samples and not others, so nothing is zero by accident of the draw (with iid noise every
    # channel mean is ~0 and a whole unit can be off for the whole batch, a legitimate exact zero).
    x = (torch.randn(4, 16, 7, 9) + torch.randn(4, 16, 1, 1)).requires_grad_(True)
    m(x).square().mean().backward()
    params = dict(m.named_parameters())
    assert params
    for pname, p in params.items():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} gradient not finite"
        # Every parameter here can learn (none feeds a BatchNorm, see above), so each gets a real
        # gradient. RMS >= 1e-5: over 200 seeds of this setup the smallest real one was 4.6e-4 (both
        # gates), while a mathematically-zero gradient (the old BAM biases before BN) came out as
        # float32 rounding dust of at most 9e-7; the floor sits between the two, an order from each.
        rms = float(p.grad.square().mean().sqrt())
        assert rms > 1e-5, f"{name}.{pname}: gradient RMS {rms:.2e} is rounding dust, not learning"
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("name", NAMES)
def test_onnx_dynamic_batch_and_size_matches_pytorch(name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    gate = "hard_sigmoid" if name in ("eca", "cbam") else "sigmoid"  # both gates go through ONNX
    m = create_attention(name, 4, gate=gate).eval()
    randomise_bn(m)
    f = io.BytesIO()
    dyn = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (torch.randn(1, 4, 9, 11),),
            f,
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamic_axes={"x": dyn, "y": dyn},
            dynamo=False,
        )
    sess = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(3, 4, 13, 17), (2, 4, 1, 1), (1, 4, 32, 24)]:
        x = torch.randn(*shape)
        (got,) = sess.run(None, {"x": x.numpy()})
        with torch.no_grad():
            ref = m(x).numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------- equations
def test_sse_equation() -> None:
    m = create_attention("sse", 6).eval()
    x = torch.randn(2, 6, 5, 7)
    assert torch.allclose(m(x), x * torch.sigmoid(m.conv(x)))
    assert m.conv.out_channels == 1 and m.conv.kernel_size == (1, 1)


@pytest.mark.parametrize("combine", ["add", "max"])
def test_scse_equation(combine: str) -> None:
    m = create_attention("scse", 8, reduction=2, combine=combine).eval()
    x = torch.randn(2, 8, 5, 7)
    g_c = torch.sigmoid(m.fc(x.mean(dim=(2, 3))))[:, :, None, None]
    g_s = torch.sigmoid(m.conv(x))
    expected = x * g_c + x * g_s if combine == "add" else torch.maximum(x * g_c, x * g_s)
    assert torch.allclose(m(x), expected, atol=1e-6)


def test_scse_default_is_addition() -> None:
    assert SCSE(8).combine == "add"
    with pytest.raises(ValueError, match="combine"):
        SCSE(8, combine="mul")  # type: ignore[arg-type]


def test_bam_equation_is_additive() -> None:
    torch.manual_seed(0)
    m = create_attention("bam", 32, reduction=4).eval()
    randomise_bn(m)
    x = torch.randn(2, 32, 11, 9)
    m_c = m.channel_mlp(x.mean(dim=(2, 3)))[:, :, None, None]
    m_s = m.spatial(x)
    assert m_s.shape == (2, 1, 11, 9)
    expected = x + x * torch.sigmoid(m_c + m_s)
    with torch.no_grad():
        assert torch.allclose(m(x), expected, atol=1e-6)


def test_bam_with_zeroed_branches_scales_by_one_and_a_half() -> None:
    m = create_attention("bam", 16).eval()
    with torch.no_grad():
        for layer in (m.channel_mlp[2], m.spatial[9]):
            layer.weight.zero_()  # no bias: both feed a BatchNorm (default running stats: 0 and 1)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        # Exact: both logits are 0 (BN of 0 with zero mean and shift), sigmoid(0) = 0.5, and
        # x + x * 0.5 rounds once to the same float as 1.5 * x.
        assert torch.equal(m(x), 1.5 * x)  # F + F * sigmoid(0)


def test_bam_dilated_spatial_branch_works_beyond_7x7_and_at_1x1() -> None:
    m = create_attention("bam", 16).eval()
    dilated = [c for c in m.spatial if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]
    assert len(dilated) == 2 and all(c.dilation == (4, 4) for c in dilated)
    for size in [(1, 1), (7, 7), (56, 40)]:
        assert m.spatial(torch.randn(1, 16, *size)).shape == (1, 1, *size)


def test_cbam_equation() -> None:
    torch.manual_seed(0)
    m = create_attention("cbam", 16, reduction=4).eval()
    x = torch.randn(2, 16, 9, 10)
    logits = m.mlp(x.mean(dim=(2, 3))) + m.mlp(x.amax(dim=(2, 3)))
    x1 = x * torch.sigmoid(logits)[:, :, None, None]
    pooled = torch.cat([x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)], 1)
    expected = x1 * torch.sigmoid(F.conv2d(pooled, m.conv.weight, m.conv.bias, padding=3))
    assert m.conv.kernel_size == (7, 7)
    assert torch.allclose(m(x), expected, atol=1e-6)


@pytest.mark.parametrize(("channels", "k"), [(64, 3), (256, 5), (512, 5), (1, 1), (2048, 7)])
def test_eca_adaptive_kernel_size(channels: int, k: int) -> None:
    assert eca_kernel_size(channels) == k
    assert create_attention("eca", channels).conv.kernel_size == (k,)


def test_eca_equation_and_override() -> None:
    m = create_attention("eca", 64)
    x = torch.randn(2, 64, 4, 4)
    y = F.conv1d(x.mean(dim=(2, 3)).unsqueeze(1), m.conv.weight, padding=1).squeeze(1)
    assert torch.allclose(m(x), x * torch.sigmoid(y)[:, :, None, None], atol=1e-6)
    assert create_attention("eca", 64, kernel_size=9).conv.kernel_size == (9,)
    assert sum(p.numel() for p in m.parameters()) == 3  # no bottleneck: k weights in all


# ---------------------------------------------------------------------------------------- recorder
@pytest.mark.parametrize("name", NAMES)
def test_recorder_sees_each_type(name: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), small(name, 8)).eval()
    assert [n for n, _ in find_gate_blocks(net)] == ["1"]
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        plain = net(x)
        with ExcitationRecorder(net) as rec:
            recorded = net(x)
    assert torch.equal(plain, recorded)  # recording changes nothing
    if name in CHANNEL_GATED:
        g = rec.excitations["1"]
        assert g.shape == (2, 8) and g.dtype == torch.float32
        assert (g >= 0).all() and (g <= 1).all()
        assert torch.allclose(rec.squeezes["1"], net[0](x).mean(dim=(2, 3)), atol=1e-6)
    else:
        assert "1" not in rec.excitations and "1" not in rec.taps
    if name in SPATIAL:
        s = rec.spatial_maps["1"]
        assert s.shape == (2, 1, 9, 7) and (s >= 0).all() and (s <= 1).all()
    else:
        assert "1" not in rec.spatial_maps


def test_recorded_gates_are_the_applied_ones() -> None:
    torch.manual_seed(0)
    cbam = create_attention("cbam", 8, reduction=2).eval()
    net = nn.Sequential(cbam)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad(), ExcitationRecorder(net) as rec:
        y = net(x)
    logits = cbam.mlp(x.mean(dim=(2, 3))) + cbam.mlp(x.amax(dim=(2, 3)))
    g = torch.sigmoid(logits)
    assert torch.allclose(rec.excitations["0"], g, atol=1e-6)
    x1 = x * g[:, :, None, None]
    assert torch.allclose(y, x1 * rec.spatial_maps["0"], atol=1e-6)


@pytest.mark.parametrize("name", sorted(CHANNEL_GATED))
def test_channel_intervention_changes_the_output(name: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(small(name, 8)).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad(), ExcitationRecorder(net) as rec:
        rec.intervene("0", 3, value=0.0)
        y = net(x)
    assert torch.all(rec.excitations["0"][:, 3] == 0)
    if name == "bam":  # F + F * 0: the channel passes through unchanged
        assert torch.allclose(y[:, 3], x[:, 3])
    elif name == "scse":  # only the spatial path is left for that channel
        assert torch.allclose(y[:, 3], x[:, 3] * rec.spatial_maps["0"][:, 0])
    else:
        assert torch.all(y[:, 3] == 0)


def test_bam_intervention_sets_mean_attention_and_keeps_pattern() -> None:
    torch.manual_seed(0)
    bam = create_attention("bam", 8, reduction=2).eval()
    randomise_bn(bam)
    net = nn.Sequential(bam)
    x = torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        a = bam.attention_map(x)
        with ExcitationRecorder(net) as rec:
            y0 = net(x)
            g0 = rec.excitations["0"].clone()
            rec.intervene("0", [1], value=0.9)
            y1 = net(x)
    assert torch.allclose(g0, a.mean(dim=(2, 3)), atol=1e-6)
    a_applied = a.clone()
    a_applied[:, 1] *= (0.9 / a[:, 1].mean(dim=(1, 2)))[:, None, None]
    assert torch.allclose(rec.spatial_maps["0"], a_applied.mean(dim=1, keepdim=True), atol=1e-6)
    a1 = (y1[:, 1] - x[:, 1]) / x[:, 1]
    assert torch.allclose(a1.mean(dim=(1, 2)), torch.full((2,), 0.9), atol=1e-4)
    assert torch.allclose(a1 / a[:, 1], (0.9 / a[:, 1].mean(dim=(1, 2)))[:, None, None], atol=1e-4)
    assert torch.equal(y0[:, 2:], y1[:, 2:])


def test_spatial_only_block_rejects_channel_intervention() -> None:
    net = nn.Sequential(create_attention("sse", 4))
    rec = ExcitationRecorder(net)
    with pytest.raises(ValueError, match="spatial"):
        rec.intervene("0", 0, value=0.0)


def test_se_only_model_records_as_before() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 1), SEBlock(8, 2)).eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad(), ExcitationRecorder(net) as rec:
        net(x)
    assert list(rec.taps) == ["1"] and rec.spatial_taps == {}
    assert rec.excitations["1"].shape == (2, 8) and rec.spatial_maps == {}
    rec.reset()
    assert rec.excitations == {}


@pytest.mark.parametrize("name", NAMES)
def test_layer_macs_meta_pass_works(name: str) -> None:
    """The analysis module's shape-only pass runs every type on the meta device."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), create_attention(name, 8))
    shapes = layer_macs(net, (17, 13))
    assert shapes.total_macs > 0 and shapes.inputs["1"] == (8, 17, 13)
    assert shapes.macs["0"] == 8 * 17 * 13 * 3 * 9  # the conv, counted exactly
