"""SE block + max-pool run as ``maxpool(x) * gate`` in inference: same numbers, less memory traffic.

A gate s >= 0 commutes with max pooling per channel, exactly (rounding is monotonic). These tests
check the pairing really runs, gives the unpaired numbers bit for bit, and steps aside whenever it
would not be the same computation: training, hooks on the block, a negative gate set by an
intervention.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sevgg_gui.models.se import SEBlock, run_sequential, se_then_max_pool
from sevgg_gui.models.vgg import VGG16_SE
from sevgg_gui.recorder import ExcitationRecorder


def _unpaired(model: VGG16_SE, x: torch.Tensor) -> torch.Tensor:
    """The reference: every module called in turn, SE scaling the full-size map."""
    with torch.no_grad():
        h = x
        for m in model.features:
            h = m(h)
        h = torch.flatten(model.avgpool(h), 1)
        return model.classifier(h)


@pytest.fixture()
def block_calls(monkeypatch) -> list[int]:
    """Count SEBlock.forward calls (a spy around the real method; the numbers are unchanged)."""
    calls: list[int] = []
    real = SEBlock.forward

    def forward(self, x):
        calls.append(1)
        return real(self, x)

    monkeypatch.setattr(SEBlock, "forward", forward)
    return calls


def test_inference_pairs_every_block_and_matches_bit_for_bit(se10, x32, block_calls) -> None:
    expected = _unpaired(se10, x32)
    n = len(block_calls)
    with torch.inference_mode():
        got = se10(x32)
    assert len(block_calls) == n  # no SEBlock.forward: all five blocks ran paired with their pool
    assert torch.equal(got, expected)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_pair_equals_pool_of_scaled_map(layout: str) -> None:
    torch.manual_seed(3)
    se, pool = SEBlock(32, 4).eval(), nn.MaxPool2d(2, 2)
    x = torch.randn(2, 32, 15, 14)  # odd size: the pool drops a row, as VGG's would
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = pool(x * se.gate(x)[:, :, None, None])
        got = se_then_max_pool(se, pool, x)
    assert got is not None and torch.equal(got, expected)


def test_training_and_hooks_run_the_block_itself(se10, x32, block_calls) -> None:
    se10(x32)  # grad enabled: unpaired
    assert len(block_calls) == 5
    block = se10.features[4]
    handle = block.register_forward_hook(lambda m, i, o: None)
    try:
        with torch.no_grad():
            se10(x32)
    finally:
        handle.remove()
    assert len(block_calls) == 6  # the hooked block ran as a module; the other four paired


def test_negative_gate_from_an_intervention_falls_back(se10, x32) -> None:
    """max(x * s) != max(x) * s for s < 0: a gate set negative must take the ordinary path."""
    with ExcitationRecorder(se10) as rec:
        rec.intervene("features.26", list(range(0, 512, 3)), value=-0.7)
        expected = _unpaired(se10, x32)
        with torch.inference_mode():
            got = se10(x32)
        gate = rec.excitations["features.26"]
    assert float(gate[0, 0]) == pytest.approx(-0.7)
    assert torch.equal(got, expected)


def test_recorder_hooks_a_block_only_while_its_maps_are_wanted(se10, x32, block_calls) -> None:
    rec = ExcitationRecorder(se10).attach()
    try:
        with torch.inference_mode():
            se10(x32)
        assert len(block_calls) == 0 and rec.forwards == 1
        assert set(rec.excitations) == {
            "features.4",
            "features.10",
            "features.18",
            "features.26",
            "features.34",
        }
        rec.set_feature_maps(["features.10"])
        with torch.inference_mode():
            se10(x32)
        assert len(block_calls) == 1 and list(rec.feature_maps) == ["features.10"]
        rec.set_feature_maps([])
        assert not se10.features[10]._forward_hooks and not se10.features[10]._forward_pre_hooks
    finally:
        rec.detach()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in se10.modules())


def test_run_sequential_leaves_other_sequentials_alone() -> None:
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2))
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(run_sequential(seq, x), seq(x))
