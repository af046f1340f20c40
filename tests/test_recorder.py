"""ExcitationRecorder: recorded gates against an independent recomputation, maps, hook hygiene, interventions."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops.misc import SqueezeExcitation

from sevgg_gui.models.se import SEBlock
from sevgg_gui.recorder import ExcitationRecorder, find_gate_blocks


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


BLOCKS = ["features.4", "features.10", "features.18", "features.26", "features.34"]
CHANNELS = [64, 128, 256, 512, 512]


class InputCatcher:
    """Our own pre-hooks: a copy of each block's input before the block (which may scale it in place)."""

    def __init__(self, model: nn.Module, types: tuple[type, ...]) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, types):
                self.handles.append(m.register_forward_pre_hook(self._pre(name)))
                self.handles.append(m.register_forward_hook(self._post(name)))

    def _pre(self, name: str):
        def hook(module, inputs):
            self.inputs[name] = inputs[0].detach().clone()

        return hook

    def _post(self, name: str):
        def hook(module, inputs, output):
            self.outputs[name] = output.detach().clone()

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def se_gate(block: SEBlock, x: torch.Tensor) -> torch.Tensor:
    z = x.mean(dim=(2, 3))
    return torch.sigmoid(F.linear(F.relu(F.linear(z, block.fc[0].weight)), block.fc[2].weight))


MODES = {
    "no_grad": torch.no_grad,  # in-place scaling inside the SE blocks
    "inference_mode": torch.inference_mode,
    "grad": contextlib.nullcontext,  # out-of-place, autograd graph kept
}


@pytest.mark.parametrize("mode", list(MODES))
def test_gates_and_squeezes_equal_an_independent_recomputation(
    se10: nn.Module, x32: torch.Tensor, mode: str
) -> None:
    catcher = InputCatcher(se10, (SEBlock,))
    try:
        with ExcitationRecorder(se10) as rec, MODES[mode]():
            out = se10(x32)
    finally:
        catcher.remove()
    assert out.shape == (3, 10)
    assert list(rec.excitations) == BLOCKS and list(rec.squeezes) == BLOCKS
    spread = []
    for name, c in zip(BLOCKS, CHANNELS, strict=True):
        block = se10.get_submodule(name)
        x = catcher.inputs[name]
        gate, squeeze = rec.excitations[name], rec.squeezes[name]
        assert gate.shape == squeeze.shape == (3, c)
        assert gate.dtype == torch.float32 and not gate.requires_grad
        with torch.no_grad():
            assert torch.allclose(squeeze, x.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
            assert torch.allclose(gate, se_gate(block, x), rtol=1e-5, atol=1e-6)
            # ...and the block's output is its input times exactly this gate.
            assert torch.allclose(catcher.outputs[name], x * gate[:, :, None, None], rtol=1e-5, atol=1e-6)
        spread.append(float(gate.std()))
    assert max(spread) > 1e-3  # gates are not constant: the comparison is not trivially true
    assert not torch.allclose(rec.excitations["features.4"][0], rec.excitations["features.4"][1])


def test_recording_does_not_change_the_output(se10: nn.Module, x32: torch.Tensor) -> None:
    with torch.no_grad():
        plain = se10(x32)
        with ExcitationRecorder(se10, feature_maps=["features.10"]) as rec:
            recorded = se10(x32)
    assert torch.equal(plain, recorded)
    assert rec.forwards == 1


@pytest.mark.parametrize("map_size", [64, 32])
def test_feature_maps_before_and_after_the_gate_full_size(
    se10: nn.Module, x32: torch.Tensor, map_size: int
) -> None:
    """features.4 sees 32x32 maps at a 32x32 input: not downsampled, after == before * gate."""
    catcher = InputCatcher(se10, (SEBlock,))
    try:
        with ExcitationRecorder(se10, feature_maps=["features.4"], map_size=map_size) as rec, torch.no_grad():
            se10(x32)
    finally:
        catcher.remove()
    assert list(rec.feature_maps) == ["features.4"]
    before, after = rec.feature_maps["features.4"]
    assert before.shape == after.shape == (3, 64, 32, 32)
    gate = rec.excitations["features.4"][:, :, None, None]
    assert torch.allclose(after, before * gate, rtol=1e-5, atol=1e-6)
    assert torch.equal(before, catcher.inputs["features.4"])  # taken before the in-place scaling
    assert not torch.allclose(after, before)  # the gate did something


def test_feature_maps_are_downsampled_to_map_size(se10: nn.Module) -> None:
    x = torch.randn(3, 3, 32, 48, generator=torch.Generator().manual_seed(5))
    catcher = InputCatcher(se10, (SEBlock,))
    try:
        with (
            ExcitationRecorder(se10, feature_maps=["features.4", "features.10"], map_size=12) as rec,
            torch.no_grad(),
        ):
            se10(x)
    finally:
        catcher.remove()
    for name, c, (h, w) in (("features.4", 64, (8, 12)), ("features.10", 128, (8, 12))):
        before, after = rec.feature_maps[name]
        assert before.shape == after.shape == (3, c, h, w)  # longest side <= map_size, aspect kept
        # Average pooling commutes with a per-channel scale, so the relation survives downsampling.
        gate = rec.excitations[name][:, :, None, None]
        assert torch.allclose(after, before * gate, rtol=1e-4, atol=1e-6)
        assert torch.allclose(
            before, F.adaptive_avg_pool2d(catcher.inputs[name], (h, w)), rtol=1e-5, atol=1e-6
        )
    assert "features.18" not in rec.feature_maps  # maps only where asked


def test_no_maps_unless_asked(se10: nn.Module, x32: torch.Tensor) -> None:
    with ExcitationRecorder(se10) as rec, torch.no_grad():
        se10(x32)
    assert rec.feature_maps == {}
    rec.set_feature_maps(["features.34"])
    with rec, torch.no_grad():
        se10(x32)
    assert list(rec.feature_maps) == ["features.34"]
    assert rec.feature_maps["features.34"][0].shape == (3, 512, 2, 2)


# ------------------------------------------------------------------------------------------ hooks
def test_hooks_removed_on_exit_and_on_exception(se10: nn.Module, x32: torch.Tensor) -> None:
    base = hook_count(se10)
    assert base == 0
    rec = ExcitationRecorder(se10, feature_maps=["features.4"])
    with rec:
        assert hook_count(se10) > 0 and rec.attached
        rec.attach()  # attaching twice adds nothing
        n = hook_count(se10)
        rec.attach()
        assert hook_count(se10) == n
    assert hook_count(se10) == base and not rec.attached
    with pytest.raises(RuntimeError), ExcitationRecorder(se10):
        se10(torch.randn(1, 5, 32, 32))  # wrong channel count: fails inside the forward
    assert hook_count(se10) == base
    with pytest.raises(KeyboardInterrupt), ExcitationRecorder(se10):
        raise KeyboardInterrupt
    assert hook_count(se10) == base


def test_a_thousand_cycles_leave_no_hooks(se10: nn.Module) -> None:
    rec = ExcitationRecorder(se10, feature_maps=["features.26"])
    for _ in range(1000):
        with rec:
            pass
    for _ in range(100):
        with ExcitationRecorder(se10):
            pass
    assert hook_count(se10) == 0
    assert not torch.nn.modules.module._global_forward_hooks
    assert not torch.nn.modules.module._global_forward_pre_hooks


# ------------------------------------------------------------------------------------------ interventions
def test_intervention_value_zero_changes_output_and_undo_restores_it(
    se10: nn.Module, x32: torch.Tensor
) -> None:
    with ExcitationRecorder(se10) as rec, torch.no_grad():
        base = se10(x32)
        base_gates = rec.excitations
        rec.intervene("features.10", [0, 5, 7], value=0.0)
        muted = se10(x32)
        muted_gates = rec.excitations
        assert rec.interventions == {"features.10": [([0, 5, 7], 0.0, None)]}
        rec.undo()
        restored = se10(x32)
        restored_gates = rec.excitations
    assert not torch.allclose(muted, base)
    g = muted_gates["features.10"]
    assert bool((g[:, [0, 5, 7]] == 0).all())  # the recorder reports the gate actually applied
    keep = [c for c in range(128) if c not in (0, 5, 7)]
    assert torch.equal(g[:, keep], base_gates["features.10"][:, keep])
    assert torch.equal(muted_gates["features.4"], base_gates["features.4"])  # upstream untouched
    assert torch.equal(restored, base)  # exactly
    for name in BLOCKS:
        assert torch.equal(restored_gates[name], base_gates[name])
    assert rec.interventions == {}


def test_muting_every_channel_of_the_last_block_zeroes_the_features(
    se10: nn.Module, x32: torch.Tensor
) -> None:
    with ExcitationRecorder(se10) as rec, torch.no_grad():
        rec.intervene("features.34", range(512), value=0.0)
        out = se10(x32)
        expected = se10.classifier(torch.zeros(3, 512 * 7 * 7))
    assert torch.allclose(out, expected, rtol=1e-6, atol=1e-7)


def test_intervention_scale_multiplies_the_gate(se10: nn.Module, x32: torch.Tensor) -> None:
    with ExcitationRecorder(se10, feature_maps=["features.18"]) as rec, torch.no_grad():
        se10(x32)
        base = rec.excitations["features.18"]
        rec.intervene("features.18", 3, scale=2.0)
        rec.intervene("features.18", [3, 4], scale=0.5)  # interventions stack
        se10(x32)
        scaled = rec.excitations["features.18"]
        before, after = rec.feature_maps["features.18"]
    assert torch.allclose(scaled[:, 3], base[:, 3], rtol=1e-6)  # x2 then x0.5
    assert torch.allclose(scaled[:, 4], base[:, 4] * 0.5, rtol=1e-6)
    assert torch.equal(scaled[:, 5:], base[:, 5:])
    assert torch.allclose(after, before * scaled[:, :, None, None], rtol=1e-5, atol=1e-6)
    rec.undo("features.18")
    assert rec.interventions == {"features.18": [([3], None, 2.0)]}
    rec.clear_interventions()
    assert rec.interventions == {}


def test_intervention_errors(se10: nn.Module) -> None:
    rec = ExcitationRecorder(se10)
    with pytest.raises(IndexError):
        rec.intervene("features.4", 64, value=0.0)
    with pytest.raises(IndexError):
        rec.intervene("features.4", [3, -1], value=0.0)
    with pytest.raises(KeyError):
        rec.intervene("features.5", 0, value=0.0)
    with pytest.raises(KeyError):
        rec.set_feature_maps(["features.99"])
    with pytest.raises(KeyError):
        ExcitationRecorder(se10, feature_maps=["classifier.0"])
    with pytest.raises(ValueError):
        rec.intervene("features.4", 0)
    with pytest.raises(ValueError):
        rec.intervene("features.4", 0, value=0.0, scale=2.0)
    assert rec.interventions == {}
    rec.undo()  # nothing to undo: no error
    with pytest.raises(ValueError, match="no recordable"):
        ExcitationRecorder(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))


# ------------------------------------------------------------------------------------------ torchvision SE
def test_records_torchvision_squeeze_excitation_in_mobilenet_v3() -> None:
    torch.manual_seed(13)
    model = torchvision.models.mobilenet_v3_small().eval()
    blocks = find_gate_blocks(model)
    assert len(blocks) == 9 and all(isinstance(m, SqueezeExcitation) for _, m in blocks)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(14))
    catcher = InputCatcher(model, (SqueezeExcitation,))
    try:
        with ExcitationRecorder(model) as rec, torch.no_grad():
            model(x)
    finally:
        catcher.remove()
    assert list(rec.excitations) == [n for n, _ in blocks]
    for name, block in blocks:
        inp = catcher.inputs[name]
        c = block.fc2.out_channels
        squeeze = inp.mean(dim=(2, 3))
        with torch.no_grad():
            h = F.relu(F.conv2d(squeeze[:, :, None, None], block.fc1.weight, block.fc1.bias))
            gate = F.hardsigmoid(F.conv2d(h, block.fc2.weight, block.fc2.bias)).flatten(1)
        assert rec.excitations[name].shape == (3, c)
        assert torch.allclose(rec.squeezes[name], squeeze, rtol=1e-5, atol=1e-6)
        assert torch.allclose(rec.excitations[name], gate, rtol=1e-5, atol=1e-6)
        assert torch.allclose(catcher.outputs[name], inp * gate[:, :, None, None], rtol=1e-5, atol=1e-6)
    assert hook_count(model) == 0


def test_intervene_accepts_numpy_integers() -> None:
    import numpy as np

    from sevgg_gui.models.vgg import VGG16_SE
    from sevgg_gui.recorder import ExcitationRecorder

    rec = ExcitationRecorder(VGG16_SE(num_classes=2))
    rec.intervene("features.4", np.int64(3), value=0.0)
    rec.intervene("features.4", np.array([1, 2]), scale=2.0)
    assert rec.interventions["features.4"] == [([3], 0.0, None), ([1, 2], None, 2.0)]


@pytest.mark.parametrize("kind", ["se", "torchvision", "eca"])
def test_after_gate_maps_equal_the_pooled_real_output(kind: str) -> None:
    """For blocks whose output is input * gate the after-gate map is derived from the before-gate map
    (one downsampling instead of two); it must equal downsampling the block's real output."""
    import torch.nn.functional as F

    from sevgg_gui.models.networks import vgg16_attention
    from sevgg_gui.models.vgg import VGG16_SE

    torch.manual_seed(0)
    if kind == "torchvision":
        model = torchvision.models.mobilenet_v3_small(num_classes=4).eval()
        x, block = torch.rand(2, 3, 96, 96), "features.1.block.1"
    else:
        model = (VGG16_SE(num_classes=4) if kind == "se" else vgg16_attention("eca", num_classes=4)).eval()
        x, block = torch.randn(2, 3, 48, 48), "features.4"
    real: dict[str, torch.Tensor] = {}
    handle = dict(model.named_modules())[block].register_forward_hook(
        lambda m, i, o: real.__setitem__("out", o.detach().clone())
    )
    try:
        with ExcitationRecorder(model, feature_maps=[block], map_size=8) as rec, torch.no_grad():
            model(x)
    finally:
        handle.remove()
    before, after = rec.feature_maps[block]
    assert after.shape[-2:] == before.shape[-2:] and max(after.shape[-2:]) <= 8
    expected = F.adaptive_avg_pool2d(real["out"], after.shape[-2:])
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after, before)
