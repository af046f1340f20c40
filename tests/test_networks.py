"""Attention in VGG16, ResNet, Inception and MobileNet: placement, recording, torchvision key
compatibility and parameter overhead."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from sevgg_gui.models.attention import available_attention
from sevgg_gui.models.networks import (
    SEInception,
    SEInvertedResidual,
    attention_blocks,
    attention_overhead,
    se_inception,
    se_mobilenet,
    se_resnet18,
    se_resnet50,
    vgg16_attention,
)
from sevgg_gui.models.se import SEBlock
from sevgg_gui.models.vgg import SE_INDICES_VGG16
from sevgg_gui.recorder import ExcitationRecorder

VGG_BLOCKS = [f"features.{i}" for i in SE_INDICES_VGG16]
VGG_CHANNELS = [64, 128, 256, 512, 512]
VGG_SIDES = [32, 16, 8, 4, 2]  # at a 32x32 input
HAS_GATE = {"se", "scse", "bam", "cbam", "eca"}
HAS_MAP = {"sse", "scse", "bam", "cbam"}


def input64(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(7))


def two_different_images(size: int = 32) -> torch.Tensor:
    """Noise and a smooth colour ramp: iid noise images share channel means, so gates would match."""
    noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(3))
    ramp = torch.linspace(-2, 2, size)
    smooth = torch.stack(
        [
            ramp[None, :].expand(size, size),
            ramp[:, None].expand(size, size),
            -ramp[None, :].expand(size, size),
        ]
    )
    return torch.stack([noise, smooth])


def load_report(model: nn.Module, torchvision_model: nn.Module) -> tuple[list[str], list[str]]:
    result = model.load_state_dict(torchvision_model.state_dict(), strict=False)
    return list(result.missing_keys), list(result.unexpected_keys)


# ---------------------------------------------------------------------------------------- all networks
@pytest.mark.parametrize(
    "build",
    [
        lambda: vgg16_attention("bam", num_classes=10, width=0.0625),
        lambda: se_resnet18(num_classes=10, attention="bam"),
        lambda: se_inception(num_classes=10, attention="bam"),
        lambda: se_mobilenet(num_classes=10, attention="bam"),
    ],
    ids=["vgg16", "resnet18", "inception", "mobilenet"],
)
def test_no_conv_or_linear_before_a_batchnorm_has_a_bias(build) -> None:
    """BatchNorm cancels a bias added right before it (zero gradient in exact arithmetic): no network,
    trunk or attention, carries one."""
    from test_attention import layers_feeding_batchnorm

    torch.manual_seed(0)
    model = build().eval()
    fed = layers_feeding_batchnorm(model, torch.randn(2, 3, 32, 32))
    assert fed  # BAM's BatchNorms at least: the check is not vacuous
    assert [n for n, layer in fed if layer.bias is not None] == []


# ---------------------------------------------------------------------------------------- VGG16
def test_vgg16_attention_se_is_vgg16_se_key_for_key(se10: nn.Module, x32: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = vgg16_attention("se", num_classes=10).eval()
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in se10.state_dict().items()
    }
    assert list(model.state_dict()) == list(se10.state_dict())
    model.load_state_dict(se10.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x32), se10(x32))
    assert all(isinstance(model.features[i], SEBlock) for i in SE_INDICES_VGG16)
    assert all(model.features[i].inplace for i in SE_INDICES_VGG16)


@pytest.mark.parametrize("name", available_attention())
def test_recorder_in_vgg16_attention(name: str) -> None:
    torch.manual_seed(0)
    x32 = two_different_images()
    model = vgg16_attention(name, num_classes=10).eval()
    assert [n for n, _ in attention_blocks(model)] == VGG_BLOCKS
    with torch.no_grad(), ExcitationRecorder(model) as rec:
        out = model(x32)
    assert out.shape == (x32.shape[0], 10) and torch.isfinite(out).all()
    assert list(rec.blocks) == VGG_BLOCKS
    b = x32.shape[0]
    if name in HAS_GATE:
        assert [tuple(g.shape) for g in rec.excitations.values()] == [(b, c) for c in VGG_CHANNELS]
        assert all(((g >= 0) & (g <= 1)).all() for g in rec.excitations.values())
        assert [tuple(s.shape) for s in rec.squeezes.values()] == [(b, c) for c in VGG_CHANNELS]
        first = rec.excitations[VGG_BLOCKS[0]]
        assert not torch.allclose(first[0], first[1])  # image-dependent
    else:
        assert rec.excitations == {}
    if name in HAS_MAP:
        assert [tuple(s.shape) for s in rec.spatial_maps.values()] == [(b, 1, s, s) for s in VGG_SIDES]
        first = rec.spatial_maps[VGG_BLOCKS[0]]
        assert not torch.allclose(first[0], first[1])
    else:
        assert rec.spatial_maps == {}


def test_vgg16_attention_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="available"):
        vgg16_attention("squeeze", num_classes=10, width=0.0625)


def test_vgg16_attention_options_and_width() -> None:
    model = vgg16_attention("cbam", num_classes=10, reduction=8, width=0.25, kernel_size=3)
    cbam = model.features[4]
    assert cbam.channels == 16 and cbam.mlp[0].out_features == 2 and cbam.conv.kernel_size == (3, 3)
    assert model.features[34].channels == 128
    eca = vgg16_attention("eca", num_classes=10, width=0.25)  # no reduction: not passed on
    assert eca.features[4].kernel_size == 3


# ---------------------------------------------------------------------------------------- ResNet
@pytest.mark.parametrize(
    ("builder", "tv_builder", "blocks", "last_channels"),
    [
        (se_resnet18, torchvision.models.resnet18, 8, 512),
        (se_resnet50, torchvision.models.resnet50, 16, 2048),
    ],
)
def test_se_resnet(builder, tv_builder, blocks: int, last_channels: int) -> None:
    torch.manual_seed(0)
    model = builder(num_classes=10).eval()
    with torch.no_grad(), ExcitationRecorder(model) as rec:
        out = model(input64())
    assert out.shape == (2, 10)
    assert len(rec.blocks) == blocks and all(n.endswith(".se") for n in rec.blocks)
    assert len(rec.excitations) == blocks
    assert rec.excitations["layer4.1.se"].shape[1] == last_channels
    missing, unexpected = load_report(model, tv_builder(num_classes=10))
    assert unexpected == [] and missing and all(".se." in k for k in missing)
    plain = builder(num_classes=10, attention=None)
    assert type(plain) is type(model) and not attention_blocks(plain)
    overhead = attention_overhead(model, plain)
    assert overhead.extra > 0 and overhead.extra == sum(
        p.numel() for _, m in attention_blocks(model) for p in m.parameters()
    )
    assert overhead.params_without == sum(p.numel() for p in tv_builder(num_classes=10).parameters())


def test_se_resnet50_overhead_matches_hu_et_al() -> None:
    """Hu et al. report ~2.5 M extra parameters for SE-ResNet-50 (r=16), ~10% of ResNet-50."""
    overhead = attention_overhead(se_resnet50(), se_resnet50(attention=None))
    assert overhead.extra == 2_514_944
    assert 0.09 < overhead.ratio < 0.11


def test_se_resnet_se_sits_on_the_residual_branch_before_the_addition() -> None:
    torch.manual_seed(0)
    model = se_resnet18(num_classes=10).eval()
    block = model.layer1[0]  # no downsample: identity shortcut
    seen: dict[str, torch.Tensor] = {}
    block.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    block.bn2.register_forward_hook(lambda m, i, o: seen.update(bn2=o.clone()))
    block.se.register_forward_pre_hook(lambda m, i: seen.update(se_in=i[0].clone()))
    with torch.no_grad(), ExcitationRecorder(model) as rec:
        model(input64())
        assert torch.equal(seen["se_in"], seen["bn2"])
        rec.intervene("layer1.0.se", range(64), value=0.0)  # mute the residual branch entirely
        model(input64())
    assert torch.equal(seen["y"], torch.relu(seen["x"]))  # only the shortcut is left


@pytest.mark.parametrize("name", available_attention())
def test_se_resnet18_takes_every_attention_type(name: str) -> None:
    model = se_resnet18(num_classes=10, attention=name).eval()
    with torch.no_grad(), ExcitationRecorder(model) as rec:
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(rec.blocks) == 8
    assert len(rec.excitations) == (8 if name in HAS_GATE else 0)
    assert len(rec.spatial_maps) == (8 if name in HAS_MAP else 0)


# ---------------------------------------------------------------------------------------- Inception
def test_se_inception_every_se_runs_once_per_forward() -> None:
    torch.manual_seed(0)
    model = se_inception(num_classes=10)
    inceptions = [m for m in model.modules() if isinstance(m, SEInception)]
    assert len(inceptions) == 9
    calls = {id(m.se): 0 for m in inceptions}

    def count(m: nn.Module, i: tuple, o: torch.Tensor) -> None:
        calls[id(m)] += 1

    for m in inceptions:
        m.se.register_forward_hook(count)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        for v in calls:
            calls[v] = 0
        with torch.no_grad():
            out = model(input64())
        assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
        assert sorted(calls.values()) == [1] * 9, mode


def test_se_inception_records_and_loads_torchvision_keys() -> None:
    torch.manual_seed(0)
    model = se_inception(num_classes=10).eval()
    with torch.no_grad(), ExcitationRecorder(model) as rec:
        model(torch.randn(1, 3, 32, 32))
    assert list(rec.blocks)[0] == "inception3a.se" and len(rec.excitations) == 9
    assert rec.excitations["inception5b.se"].shape == (1, 1024)
    plain = se_inception(num_classes=10, attention=None)  # torchvision's GoogLeNet, its own init
    assert type(plain) is torchvision.models.GoogLeNet and not attention_blocks(plain)
    missing, unexpected = load_report(model, plain)
    assert unexpected == [] and missing and all(".se." in k for k in missing)
    assert attention_overhead(model, plain).extra > 0


# ---------------------------------------------------------------------------------------- MobileNet
def test_se_mobilenet() -> None:
    torch.manual_seed(0)
    model = se_mobilenet(num_classes=10).eval()
    blocks = [m for m in model.modules() if isinstance(m, SEInvertedResidual)]
    assert len(blocks) == 17
    with torch.no_grad(), ExcitationRecorder(model) as rec:
        assert model(input64()).shape == (2, 10)
    assert len(rec.excitations) == 17 and all(n.endswith(".se") for n in rec.blocks)
    # SE on the expanded (depthwise) width: 16*6 = 96 channels in the second block.
    assert rec.excitations["features.2.se"].shape == (2, 96)
    missing, unexpected = load_report(model, torchvision.models.mobilenet_v2(num_classes=10))
    assert unexpected == [] and missing and all(".se." in k for k in missing)
    overhead = attention_overhead(model, se_mobilenet(num_classes=10, attention=None))
    assert overhead.extra > 0 and 0.1 < overhead.ratio < 0.5


def test_se_mobilenet_se_follows_the_depthwise_conv() -> None:
    model = se_mobilenet(num_classes=10).eval()
    for block in (model.features[1], model.features[2]):  # expand_ratio 1 and 6
        depthwise = block.conv[block._se_at - 1]
        assert depthwise[0].groups == depthwise[0].in_channels == depthwise[0].out_channels
        seen: dict[str, torch.Tensor] = {}
        h1 = depthwise.register_forward_hook(lambda m, i, o, s=seen: s.update(dw=o.clone()))
        h2 = block.se.register_forward_pre_hook(lambda m, i, s=seen: s.update(se=i[0].clone()))
        h3 = block.conv[block._se_at].register_forward_pre_hook(
            lambda m, i, s=seen: s.update(proj=i[0].clone())
        )
        se_out: dict[str, torch.Tensor] = {}
        h4 = block.se.register_forward_hook(lambda m, i, o, s=se_out: s.update(o=o.clone()))
        with torch.no_grad():
            model(torch.randn(1, 3, 32, 32))
        for h in (h1, h2, h3, h4):
            h.remove()
        assert torch.equal(seen["dw"], seen["se"]) and torch.equal(seen["proj"], se_out["o"])


def test_se_mobilenet_hard_sigmoid_and_other_types() -> None:
    model = se_mobilenet(num_classes=10, reduction=4, gate="hard_sigmoid").eval()
    assert isinstance(model.features[3].se.fc[3], nn.Hardsigmoid)
    assert model.features[3].se.fc[0].out_features == 144 // 4
    eca = se_mobilenet(num_classes=10, attention="eca").eval()
    with torch.no_grad(), ExcitationRecorder(eca) as rec:
        eca(torch.randn(1, 3, 32, 32))
    assert len(rec.excitations) == 17
