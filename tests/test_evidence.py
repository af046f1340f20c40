"""Class evidence (sevgg_gui.evidence): exact against an analytic model, every model type the app opens,
interventions, image coordinates, and nothing left behind (hooks, gradients, grad mode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sevgg_gui.evidence import (
    EvidenceError,
    cam_in_image,
    class_index_of,
    default_layer,
    explain,
    explain_image,
    pearson,
    spearman,
)
from sevgg_gui.models.se import SEBlock
from sevgg_gui.recorder import ExcitationRecorder


def all_hooks(model: nn.Module) -> int:
    """Every kind of module hook, on every module."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


class LinearHead(nn.Module):
    """conv -> ReLU -> SE block -> global average pool -> Linear: the class score is linear in the SE
    block's pooled output, so a channel's contribution is exactly w_ck * mean(A_k)."""

    def __init__(self, channels: int = 12, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        self.relu = nn.ReLU()
        self.se = SEBlock(channels, reduction=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.se(self.relu(self.conv(x)))).flatten(1))


@pytest.fixture
def linear_head() -> LinearHead:
    torch.manual_seed(3)
    model = LinearHead().eval()
    with torch.no_grad():
        model.se.fc[0].weight.abs_()  # positive hidden units: gates that vary (a dead MLP gives all 0.5)
    return model


def test_evidence_equals_the_analytic_contribution(linear_head: LinearHead) -> None:
    x = torch.randn(1, 3, 9, 11, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a = linear_head.se(linear_head.relu(linear_head.conv(x)))  # the block output A (1, C, 9, 11)
        logits = linear_head(x)
    for c in range(5):
        ev = explain(linear_head, x, c, layer="se")
        expected = (linear_head.fc.weight[c].detach().double() * a[0].double().mean((1, 2))).numpy()
        # float32 forward and gradient (dS/dA = w/99 per position), summed over 99 positions in float64:
        # a few float32 roundings of values ~1e-1, so 1e-6 relative plus 1e-7 absolute is ample.
        np.testing.assert_allclose(ev.evidence["se"], expected, rtol=1e-5, atol=1e-7)
        # The channels' evidence adds up to the score minus the bias (first order is exact here).
        total = float(ev.evidence["se"].astype(np.float64).sum())
        assert total == pytest.approx(
            float(logits[0, c] - linear_head.fc.bias[c].detach()), rel=1e-5, abs=1e-6
        )
        assert ev.score == pytest.approx(float(logits[0, c]), rel=1e-6, abs=1e-6)
        # Grad-CAM at the block: uniform gradient w/HW -> map = ReLU(sum_k w_ck A_k) / HW.
        gc = torch.relu((linear_head.fc.weight[c].detach()[:, None, None] * a[0]).sum(0) / 99).numpy()
        np.testing.assert_allclose(ev.cam, gc, rtol=1e-4, atol=1e-6)


def test_top1_by_default_and_gates_from_the_forward(linear_head: LinearHead) -> None:
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        logits = linear_head(x)
    ev = explain(linear_head, x, layer="se")
    assert ev.class_index == int(logits.argmax())
    with ExcitationRecorder(linear_head) as rec:
        with torch.no_grad():
            linear_head(x)
        np.testing.assert_allclose(ev.gates["se"], rec.excitations["se"][0].numpy(), rtol=1e-6, atol=1e-7)
    assert np.ptp(ev.gates["se"]) > 1e-4  # gates that vary, so the correlation is defined
    p, s = ev.correlation("se")
    assert -1.0 <= p <= 1.0 and -1.0 <= s <= 1.0
    assert p == pytest.approx(pearson(ev.gates["se"], ev.evidence["se"]))


@pytest.fixture
def one_thread():
    """A tiny model on one thread: on a shared 2-core box, two threads' synchronisation costs ~40x the
    arithmetic of an 8x8 convolution."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_nothing_is_left_behind_over_1000_calls(linear_head: LinearHead, one_thread: None) -> None:
    """No hook growth, no .grad, requires_grad flags and the grad mode unchanged, inference still works."""
    rec = ExcitationRecorder(linear_head).attach()
    flags = [p.requires_grad for p in linear_head.parameters()]
    before = all_hooks(linear_head)
    x = torch.randn(1, 3, 6, 6)
    for i in range(1000):
        explain(linear_head, x, i % 5, layer="se" if i % 2 else None, recorder=rec)
    assert all_hooks(linear_head) == before
    assert all(p.grad is None for p in linear_head.parameters())
    assert [p.requires_grad for p in linear_head.parameters()] == flags
    assert torch.is_grad_enabled()
    with torch.inference_mode():
        y = linear_head(x)
    assert y.is_inference() and not y.requires_grad
    rec.detach()
    assert all_hooks(linear_head) == 0


def test_frozen_parameters_still_explain(linear_head: LinearHead) -> None:
    for p in linear_head.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 7, 7)
    ev = explain(linear_head, x, 1, layer="se")
    assert np.isfinite(ev.evidence["se"]).all() and np.abs(ev.evidence["se"]).max() > 0
    assert not any(p.requires_grad for p in linear_head.parameters())


def test_methods_all_give_a_map(linear_head: LinearHead) -> None:
    x = torch.randn(1, 3, 8, 8)
    for method in ("gradcam", "gradcam++", "layercam", "eigencam", "scorecam"):
        ev = explain(linear_head, x, 0, method=method, layer="se")
        assert ev.cam.shape == (8, 8) and ev.cam.dtype == np.float32
        assert np.isfinite(ev.cam).all() and (ev.cam >= 0).all()
    with pytest.raises(EvidenceError, match="unknown method"):
        explain(linear_head, x, method="nope")
    with pytest.raises(EvidenceError, match="no layer named"):
        explain(linear_head, x, layer="nope")
    with pytest.raises(EvidenceError, match="out of range"):
        explain(linear_head, x, 99)


def test_default_layer_is_the_last_conv_block() -> None:
    from sevgg_gui.training.models import build_model

    slim = build_model("vgg16_se", 10, width=0.125).eval()
    assert default_layer(slim, torch.zeros(1, 3, 64, 64)) == "features"  # 2x2 maps at the end
    assert default_layer(slim, torch.zeros(1, 3, 32, 32)) == "features.33"  # 1x1 after the pool: conv+ReLU
    flat = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    assert default_layer(flat, torch.zeros(1, 3, 16, 16)) == "1"
    with pytest.raises(EvidenceError, match="no Conv2d"):
        default_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.zeros(1, 3, 2, 2))


def _check(model: nn.Module, x: torch.Tensor, block_count: int) -> None:
    rec = ExcitationRecorder(model).attach()
    before = all_hooks(model)
    ev = explain(model, x, 2, recorder=rec)
    assert all_hooks(model) == before
    assert len(ev.evidence) == block_count == len(ev.gates)
    for b, e in ev.evidence.items():
        assert e.shape == ev.gates[b].shape and np.isfinite(e).all()
    assert ev.cam.ndim == 2 and ev.cam.size > 1 and np.isfinite(ev.cam).all()
    # Muting a channel: its gate is 0, so its output and its evidence are 0 (0 x finite gradient).
    last = list(ev.evidence)[-1]
    ch = int(np.argmax(np.abs(ev.evidence[last])))
    rec.intervene(last, ch, value=0.0)
    muted = explain(model, x, 2, recorder=rec)
    assert muted.gates[last][ch] == 0.0
    assert abs(float(muted.evidence[last][ch])) < 1e-12
    rec.detach()


def test_vgg16_se_slim() -> None:
    from sevgg_gui.training.models import build_model

    torch.manual_seed(0)
    _check(build_model("vgg16_se", 10, width=0.125).eval(), torch.randn(1, 3, 32, 32), 5)


def test_vgg16_cbam_slim() -> None:
    from sevgg_gui.models.networks import vgg16_attention

    torch.manual_seed(0)
    _check(vgg16_attention("cbam", 10, width=0.125).eval(), torch.randn(1, 3, 32, 32), 5)


def test_torchvision_mobilenet_v3_small() -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    x = torch.randn(1, 3, 96, 96)
    assert default_layer(model, x) == "features"
    _check(model, x, 9)


def test_cam_in_image_coordinates() -> None:
    from sevgg_gui.images import Preprocess

    pre = Preprocess(crop_size=32, resize_size=40)
    cam = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = cam_in_image(cam, (50, 80), pre)
    top, left, ch, cw = pre.crop_box(50, 80)
    assert out.shape == (50, 80)
    inside = out[top : top + ch, left : left + cw]
    assert np.isfinite(inside).all()
    assert np.isnan(out[:, :left]).all() and np.isnan(out[:, left + cw :]).all()
    # Bilinear resize keeps the map's orientation: top-left small, bottom-right large.
    assert inside[0, 0] < inside[-1, -1] and inside[0, -1] < inside[-1, 0]
    assert inside.min() >= cam.min() - 1e-5 and inside.max() <= cam.max() + 1e-5


def test_explain_image_through_a_predictor_uses_its_interventions() -> None:
    from sevgg_gui.images import Preprocess
    from sevgg_gui.inference import Predictor
    from sevgg_gui.training.models import build_model

    torch.manual_seed(0)
    model = build_model("vgg16_se", 10, width=0.125).eval()
    pred = Predictor(
        model, device="cpu", preprocess=Preprocess(32, 36), class_names=[f"c{i}" for i in range(10)]
    )
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    before = all_hooks(model)
    ev = explain_image(pred, rgb, 3, blocks=["features.34"])
    assert list(ev.evidence) == ["features.34"] and ev.class_index == 3
    # Through the predictor the part before the block runs on its CPU fast path (oneDNN, channels_last);
    # plain eager NCHW gives the same up to float rounding of different convolution kernels.
    eager = explain(model, pred.preprocess(rgb)[None], 3, blocks=["features.34"], recorder=pred.recorder)
    scale = float(np.abs(eager.evidence["features.34"]).max())
    np.testing.assert_allclose(
        ev.evidence["features.34"], eager.evidence["features.34"], rtol=1e-3, atol=1e-4 * scale
    )
    np.testing.assert_allclose(ev.cam, eager.cam, rtol=1e-3, atol=1e-4 * float(eager.cam.max()))
    pred.recorder.intervene("features.34", [0, 1, 2], value=0.0)
    muted = explain_image(pred, rgb, 3, blocks=["features.34"])
    assert (muted.gates["features.34"][:3] == 0).all()
    assert all_hooks(model) == before
    result = pred.predict(rgb)  # the normal path afterwards: inference mode, same hooks
    assert result.excitations["features.34"][0] == 0.0
    assert all(p.grad is None for p in model.parameters())
    pred.close()
    assert all_hooks(model) == 0


def test_statistics() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(pearson(a, np.ones(4)))  # a constant has no correlation
    # ties get their average rank: ranks of [1, 1, 2] are [1.5, 1.5, 3]
    assert spearman(np.array([1.0, 1.0, 2.0]), np.array([1.5, 1.5, 3.0])) == pytest.approx(1.0)


def test_class_index_of() -> None:
    names = ["tabby", "tiger cat", "tiger", "Egyptian cat"]
    assert class_index_of("2", names) == 2
    assert class_index_of("Tabby", names) == 0
    assert class_index_of("egy", names) == 3
    assert class_index_of("tiger", names) == 2  # exact name beats the prefix
    with pytest.raises(EvidenceError, match="ambiguous"):
        class_index_of("ti", names)
    with pytest.raises(EvidenceError, match="no class"):
        class_index_of("dog", names)
    with pytest.raises(EvidenceError, match="out of range"):
        class_index_of("7", names)
