"""timm's attention modules through the tap registry: every type recorded exactly, intervened on, listed.

Each test builds the real timm module (random weights, a handful of channels, tiny maps) and checks
the recorded gate against the block's own gate computation redone here from its submodules, that a
mute changes only the muted channel of the block output (to 0), and that no hook is left behind.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

timm = pytest.importorskip("timm")
from timm.layers import cbam, eca, gather_excite, global_context, squeeze_excite  # noqa: E402
from timm.models import _efficientnet_blocks, hgnet, senet  # noqa: E402

from sevgg_gui.recorder import ExcitationRecorder, find_gate_blocks  # noqa: E402
from sevgg_gui.taps import attention_blocks  # noqa: E402

C = 16


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# Gates recomputed here run the same kernels on the same tensors, but through a different call path
# (e.g. F.conv2d vs the module): allow float32 rounding of a few ulps on values of size ~1.
TOL = dict(rtol=1e-5, atol=1e-6)


def _x(seed: int = 0, shape: tuple[int, ...] = (2, C, 6, 5)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3), keepdim=True)


def _se_ref(m: nn.Module, fc1: str, act: str, fc2: str, gate) -> callable:
    return lambda x: gate(getattr(m, fc2)(getattr(m, act)(getattr(m, fc1)(_mean(x))))).flatten(1)


def _cases() -> list[tuple[str, nn.Module, str, callable]]:
    torch.manual_seed(0)
    se = squeeze_excite.SEModule(C, rd_ratio=0.25)
    ese = squeeze_excite.EffectiveSEModule(C)
    eff = _efficientnet_blocks.SqueezeExcite(C, rd_ratio=0.25)
    mnv3 = _efficientnet_blocks.SqueezeExcite(C, rd_ratio=0.25, gate_layer="hard_sigmoid")
    legacy = senet.SEModule(C, reduction=4)
    hg = hgnet.EseModule(C)
    ecam = eca.EcaModule(C)
    ceca = eca.CecaModule(C)
    ch = cbam.ChannelAttn(C, rd_ratio=0.25)
    light = cbam.LightChannelAttn(C, rd_ratio=0.25)
    # use_mlp=False: timm 1.0.31's ConvMlp call in GatherExcite passes device/dtype twice (a timm bug).
    ge = gather_excite.GatherExcite(C, use_mlp=False)
    gc = global_context.GlobalContext(C)  # timm's default: scale fusion only
    with torch.no_grad():  # timm zero-inits GC's last layer: random weights so the gate varies
        for p in gc.parameters():
            p.normal_(0, 0.5)

    def eca_ref(m):
        def ref(x):
            y = x.mean((2, 3)).view(x.shape[0], 1, -1)
            if isinstance(m, eca.CecaModule):
                y = F.pad(y, (m.padding, m.padding), mode="circular")
            return m.gate(m.conv(y)).flatten(1)

        return ref

    def cbam_ref(m):
        def ref(x):
            a = m.fc2(m.act(m.fc1(_mean(x))))
            b = m.fc2(m.act(m.fc1(x.amax((2, 3), keepdim=True))))
            return m.gate(a + b).flatten(1)

        return ref

    def light_ref(m):
        return lambda x: torch.sigmoid(
            m.fc2(m.act(m.fc1(0.5 * _mean(x) + 0.5 * x.amax((2, 3), keepdim=True))))
        ).flatten(1)

    def gc_ref(m):
        def ref(x):
            B, c, H, W = x.shape
            attn = F.softmax(m.conv_attn(x).reshape(B, 1, H * W), dim=-1).unsqueeze(3)
            ctx = (x.reshape(B, c, H * W).unsqueeze(1) @ attn).view(B, c, 1, 1)
            return m.gate(m.mlp_scale(ctx)).flatten(1)

        return ref

    return [
        ("se", se, "se", _se_ref(se, "fc1", "act", "fc2", se.gate)),
        ("effective-se", ese, "effective-se", lambda x: ese.gate(ese.fc(_mean(x))).flatten(1)),
        ("efficientnet-se", eff, "se", _se_ref(eff, "conv_reduce", "act1", "conv_expand", eff.gate)),
        ("mobilenetv3-se", mnv3, "se", _se_ref(mnv3, "conv_reduce", "act1", "conv_expand", F.hardsigmoid)),
        ("legacy-senet", legacy, "se", _se_ref(legacy, "fc1", "relu", "fc2", torch.sigmoid)),
        ("hgnet-ese", hg, "ese", lambda x: torch.sigmoid(hg.conv(_mean(x))).flatten(1)),
        ("eca", ecam, "eca", eca_ref(ecam)),
        ("ceca", ceca, "ceca", eca_ref(ceca)),
        ("cbam-channel", ch, "cbam-channel", cbam_ref(ch)),
        ("light-cbam-channel", light, "cbam-channel", light_ref(light)),
        ("gather-excite", ge, "gather-excite", lambda x: ge.gate(ge.mlp(_mean(x))).flatten(1)),
        ("global-context", gc, "global-context", gc_ref(gc)),
    ]


CASES = {c[0]: c for c in _cases()}


@pytest.mark.parametrize("case", list(CASES))
def test_channel_gate_is_what_the_block_multiplied_by(case: str) -> None:
    _, block, kind, ref = CASES[case]
    net = nn.Sequential(block).eval()
    x = _x()
    # The example input sizes the meta pass that finds ECA's channel count (timm does not store it).
    infos, _ = attention_blocks(net, x)
    assert [(b.name, b.kind, b.channels, b.found_by) for b in infos] == [("0", kind, C, "type")]
    with torch.no_grad():
        plain = net(x)
        with ExcitationRecorder(net, example_input=x) as rec:
            y = net(x)
        expected = ref(x)
    assert torch.equal(y, plain)  # recording changes nothing
    g = rec.excitations["0"]
    assert g.shape == (2, C)
    assert torch.allclose(g, expected, **TOL)
    # The block's output is exactly its input times that gate, channel by channel.
    assert torch.allclose(y, x * g[:, :, None, None], **TOL)
    assert rec.squeezes["0"].shape[0] == 2
    assert hook_count(net) == 0


@pytest.mark.parametrize("case", list(CASES))
def test_mute_and_boost_change_only_that_channel(case: str) -> None:
    _, block, _, _ = CASES[case]
    net = nn.Sequential(block).eval()
    x = _x(1)
    k = 5
    with torch.no_grad(), ExcitationRecorder(net, example_input=x) as rec:
        y0 = net(x)
        g0 = rec.excitations["0"].clone()
        rec.intervene("0", k, value=0.0)
        y1 = net(x)
        g1 = rec.excitations["0"].clone()
        rec.clear_interventions()
        rec.intervene("0", k, scale=2.0)
        y2 = net(x)
        g2 = rec.excitations["0"].clone()
    others = [c for c in range(C) if c != k]
    assert torch.all(y1[:, k] == 0) and torch.all(g1[:, k] == 0)
    assert torch.equal(y1[:, others], y0[:, others]) and torch.equal(y2[:, others], y0[:, others])
    assert torch.allclose(g2[:, k], 2 * g0[:, k], **TOL)
    assert torch.allclose(y2[:, k], 2 * y0[:, k], **TOL)
    assert hook_count(net) == 0


def test_channels_last_se() -> None:
    torch.manual_seed(0)
    block = squeeze_excite.SqueezeExciteCl(C, rd_ratio=0.25)
    net = nn.Sequential(block).eval()
    x = _x(2, (2, 6, 5, C))  # (B, H, W, C)
    with torch.no_grad(), ExcitationRecorder(net, feature_maps=["0"]) as rec:
        y = net(x)
        g = rec.excitations["0"]
        expected = block.gate(block.fc2(block.act(block.fc1(x.mean((1, 2), keepdim=True))))).flatten(1)
        rec.intervene("0", 3, value=0.0)
        y1 = net(x)
    assert torch.allclose(g, expected, **TOL)
    assert torch.all(y1[..., 3] == 0) and torch.equal(y1[..., :3], y[..., :3])
    before, after = rec.feature_maps["0"]
    assert before.shape == (2, C, 6, 5)  # maps come out channels first like every other block


def test_cbam_spatial_maps_and_the_channel_gate_before_them() -> None:
    torch.manual_seed(0)
    for light in (False, True):
        block = (cbam.LightCbamModule if light else cbam.CbamModule)(C, rd_ratio=0.25).eval()
        net = nn.Sequential(block)
        infos, _ = attention_blocks(net)
        assert [(b.name, b.kind) for b in infos] == [
            ("0.channel", "cbam-channel"),
            ("0.spatial", "cbam-spatial"),
        ]
        x = _x(3)
        with torch.no_grad(), ExcitationRecorder(net) as rec:
            y = net(x)
            x1 = block.channel(x)
            sp = block.spatial
            if light:
                pooled = 0.5 * x1.mean(1, keepdim=True) + 0.5 * x1.amax(1, keepdim=True)
            else:
                pooled = torch.cat([x1.mean(1, keepdim=True), x1.amax(1, keepdim=True)], dim=1)
            expected = sp.gate(sp.conv(pooled))
        assert torch.allclose(rec.spatial_maps["0.spatial"], expected, **TOL)
        assert torch.allclose(y, x1 * expected, **TOL)
        with pytest.raises(ValueError, match="spatial"):
            rec.intervene("0.spatial", 0, value=0.0)
        assert hook_count(net) == 0


def test_attention_that_is_not_a_channel_gate_is_listed_not_recorded() -> None:
    from timm.layers import SelectiveKernel, SplitAttn

    net = nn.Sequential(
        SplitAttn(C, C, radix=2),
        SelectiveKernel(C, C),
        global_context.GlobalContext(C, fuse_add=True, fuse_scale=False),
        gather_excite.GatherExcite(C, extent=2, use_mlp=False),
        squeeze_excite.SEModule(C),
    ).eval()
    infos, _ = attention_blocks(net)
    kinds = [(b.name, b.kind, b.recorded) for b in infos]
    assert kinds == [
        ("0", "split-attention", False),
        ("1", "selective-kernel", False),
        ("2", "global-context", False),
        ("3", "gather-excite", False),
        ("4", "se", True),
    ]
    assert all("not" in b.note for b in infos[:4])
    assert [n for n, _ in find_gate_blocks(net)] == ["4"]
    with torch.no_grad(), ExcitationRecorder(net) as rec:
        net(_x())
    assert list(rec.excitations) == ["4"]
    assert len(rec.block_infos) == 5


@pytest.mark.parametrize(
    ("arch", "blocks", "kind"),
    [
        ("legacy_seresnet18", 8, "se"),
        ("seresnet18", 8, "se"),
        ("ecaresnet26t", 8, "eca"),
        ("mobilenetv3_small_050", 9, "se"),
    ],
)
def test_timm_models_record_every_block(arch: str, blocks: int, kind: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=10).eval()
    with torch.no_grad():  # timm zero-inits each residual branch's last BN: then SE sees only zeros
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    infos, _ = attention_blocks(model)
    assert len(infos) == blocks and {b.kind for b in infos} == {kind}
    assert all(b.channels and b.channels > 0 for b in infos)  # ECA's resolved by the meta pass
    x = _x(4, (2, 3, 32, 32))
    with torch.no_grad():
        plain = model(x)
        with ExcitationRecorder(model) as rec:
            y = model(x)
            first = infos[0].name
            rec.intervene(first, 0, value=0.0)
            y_muted = model(x)
    assert torch.equal(y, plain)
    assert len(rec.excitations) == blocks
    assert all(rec.excitations[b.name].shape == (2, b.channels) for b in infos)
    assert not torch.equal(y_muted, y)  # a muted channel early on reaches the logits
    assert rec.excitations[first][:, 0].eq(0).all()
    assert hook_count(model) == 0


def test_untrained_gate_check_accepts_timm_blocks() -> None:
    """zoo.gates_untrained looks for the article's fc Sequential; timm's ESE has a single conv ``fc``."""
    from sevgg_gui.zoo import gates_untrained

    assert gates_untrained(nn.Sequential(squeeze_excite.EffectiveSEModule(C))) is False
