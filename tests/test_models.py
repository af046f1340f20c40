"""SEBlock and VGG16_SE against the article's code, parameter counts, in-place scaling, VGG16 transfer."""

from __future__ import annotations

import urllib.request

import article_reference as article
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sevgg_gui.analysis import count_params, model_cost
from sevgg_gui.models.se import SEBlock
from sevgg_gui.models.vgg import (
    TORCHVISION_VGG16_PARAMS,
    VGG16_SE,
    from_vgg16,
    transfer_vgg16_state_dict,
    vgg16_se,
)
from sevgg_gui.recorder import ExcitationRecorder

SE_CHANNELS = (64, 128, 256, 512, 512)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def recompute_gate(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """sigmoid(W2 relu(W1 mean(x))) written out, independent of the block's forward."""
    z = x.mean(dim=(2, 3))
    return torch.sigmoid(F.linear(F.relu(F.linear(z, block.fc[0].weight)), block.fc[2].weight))


# ------------------------------------------------------------------------------------------ layout
@pytest.mark.parametrize(("num_classes", "reduction"), [(1000, 16), (10, 16), (1000, 8)])
def test_state_dict_keys_and_shapes_equal_the_article(num_classes: int, reduction: int) -> None:
    with torch.device("meta"):
        ours = VGG16_SE(num_classes=num_classes, reduction=reduction)
        ref = article.VGG16_SE(num_classes=num_classes, reduction=reduction)
    assert list(ours.state_dict()) == list(ref.state_dict())  # same keys, same order
    assert shapes(ours) == shapes(ref)
    # The module sequence itself is the article's (layer for layer, same class names).
    assert [type(m).__name__ for m in ours.features] == [type(m).__name__ for m in ref.features]
    assert [type(m).__name__ for m in ours.classifier] == [type(m).__name__ for m in ref.classifier]


def test_se_blocks_sit_where_the_article_puts_them() -> None:
    with torch.device("meta"):
        model = VGG16_SE()
    sd = shapes(model)
    assert [n for n, _ in model.se_blocks()] == [f"features.{i}" for i in article.ARTICLE_SE_INDICES]
    for i, c in zip(article.ARTICLE_SE_INDICES, SE_CHANNELS, strict=True):
        assert isinstance(model.features[i], SEBlock)
        assert isinstance(model.features[i + 1], nn.MaxPool2d)  # right before each max-pool
        assert sd[f"features.{i}.fc.0.weight"] == (c // 16, c)
        assert sd[f"features.{i}.fc.2.weight"] == (c, c // 16)
        assert f"features.{i}.fc.0.bias" not in sd and f"features.{i}.fc.2.bias" not in sd
    assert sd["classifier.0.weight"] == (4096, 512 * 7 * 7)
    assert sd["classifier.3.weight"] == (4096, 4096)
    assert sd["classifier.6.weight"] == (1000, 4096)
    assert sd["classifier.6.bias"] == (1000,)
    assert len(sd) == 13 * 2 + 5 * 2 + 3 * 2


def test_article_checkpoint_loads_strict_and_computes_the_same(
    article10: nn.Module, fresh_se10: nn.Module, x32: torch.Tensor
) -> None:
    result = fresh_se10.load_state_dict(article10.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    fresh_se10.eval()
    with torch.no_grad():
        ref_features = article10.features(x32)
        ref = article10(x32)
        ours_features = fresh_se10.features(x32.clone())
        ours = fresh_se10(x32.clone())
    assert torch.allclose(ours_features, ref_features, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-6)
    # The comparison can fail: features differ between images, and so does a model whose gates differ.
    assert not torch.allclose(ref_features[0], ref_features[1], rtol=1e-3, atol=1e-4)
    for _, block in fresh_se10.se_blocks():
        block.fc[2].weight.data.zero_()  # every gate 0.5 instead of the article model's
    with torch.no_grad():
        assert not torch.allclose(fresh_se10.features(x32), ref_features, rtol=1e-3, atol=1e-4)


def test_seblock_equals_the_article_seblock() -> None:
    torch.manual_seed(4)
    ref = article.SEBlock(64, 16)
    ours = SEBlock(64, 16)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 64, 7, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y_ref, y = ref(x), ours(x2)
    assert torch.allclose(y, y_ref, rtol=1e-6, atol=1e-7)
    y_ref.square().sum().backward()
    y.square().sum().backward()
    assert torch.allclose(x2.grad, x.grad, rtol=1e-5, atol=1e-7)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------ parameters
def test_parameter_count_is_torchvision_vgg16_plus_76288() -> None:
    with torch.device("meta"):
        ours = VGG16_SE()
        tv = torchvision.models.vgg16()
        ref = article.VGG16_SE()
    assert count_params(tv) == TORCHVISION_VGG16_PARAMS == 138_357_544
    assert count_params(ours) - count_params(tv) == article.ARTICLE_SE_TOTAL == 76_288
    assert count_params(ours) == count_params(ref)
    per_block = [b.parameter_count() for _, b in ours.se_blocks()]
    assert per_block == list(article.ARTICLE_SE_PARAMS) == [512, 2_048, 8_192, 32_768, 32_768]
    assert per_block == [2 * c * c // 16 for c in SE_CHANNELS]  # the article's 2 * C^2 / r
    cost = model_cost(ours)
    assert cost.attention_params == 76_288
    assert [b.params for b in cost.blocks] == per_block
    assert f"{100 * cost.attention_share:.3f}%" == "0.055%"


@pytest.mark.parametrize("channels", [1, 3, 8, 15])
def test_seblock_with_fewer_channels_than_the_reduction(channels: int) -> None:
    torch.manual_seed(channels)
    block = SEBlock(channels, reduction=16)
    assert tuple(block.fc[0].weight.shape) == (1, channels)  # hidden width floors at 1, never 0
    assert block.parameter_count() == 2 * channels
    x = torch.randn(2, channels, 5, 7)
    y = block(x)
    assert y.shape == x.shape
    assert torch.allclose(y, x * recompute_gate(block, x)[:, :, None, None], rtol=1e-6, atol=1e-7)


def test_seblock_rejects_nonsense_sizes() -> None:
    with pytest.raises(ValueError):
        SEBlock(0, 16)
    with pytest.raises(ValueError):
        SEBlock(64, 0)


# ------------------------------------------------------------------------------------------ in-place
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_inplace_scaling_gives_the_out_of_place_numbers(mode) -> None:
    torch.manual_seed(5)
    inplace = SEBlock(64, 16, inplace=True)
    plain = SEBlock(64, 16)
    plain.load_state_dict(inplace.state_dict())
    x = torch.randn(2, 64, 9, 9)
    with mode():
        xi = x.clone()
        yi = inplace(xi)
        yp = plain(x)
    assert yi.data_ptr() == xi.data_ptr()  # the in-place path really ran
    assert yp.data_ptr() != x.data_ptr()
    assert torch.equal(yi, yp)
    assert torch.allclose(yp, x * recompute_gate(plain, x)[:, :, None, None], rtol=1e-6, atol=1e-7)


def test_whole_model_same_output_with_and_without_grad(se10: nn.Module, x32: torch.Tensor) -> None:
    with torch.no_grad():
        fast = se10(x32)  # SE blocks scale in place
    with torch.inference_mode():
        fastest = se10(x32)
    slow = se10(x32).detach()  # grad enabled, parameters require grad: out of place
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-7)
    assert torch.allclose(fastest, slow, rtol=1e-5, atol=1e-7)


def _grads(block: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in block.parameters()]


# The "> 0" / "== 0" gradient checks below hold by arithmetic, not by rounding: nothing on the SE path
# cancels (no mean subtraction as in a BatchNorm), so a weight's gradient is exactly 0.0 only when a
# factor is exactly zero (a ReLU unit off for every sample, a weight matrix set to 0: 0 * finite = 0),
# and otherwise it is a sum of non-cancelling terms many orders above float32 rounding (measured here:
# 2e-8 to 4e3 RMS, depending on the test's init).


def test_inplace_block_in_training_keeps_autograd_exact() -> None:
    torch.manual_seed(6)
    inplace = SEBlock(64, 16, inplace=True).train()
    plain = SEBlock(64, 16).train()
    plain.load_state_dict(inplace.state_dict())
    x = torch.randn(2, 64, 6, 6)
    xi = x.clone().requires_grad_(True)
    xp = x.clone().requires_grad_(True)
    inplace(xi).square().sum().backward()
    plain(xp).square().sum().backward()
    assert torch.allclose(xi.grad, xp.grad, rtol=1e-5, atol=1e-7)
    for gi, gp in zip(_grads(inplace), _grads(plain), strict=True):
        assert gi.abs().sum() > 0
        assert torch.allclose(gi, gp, rtol=1e-5, atol=1e-7)


def test_frozen_backbone_training_reaches_the_se_weights() -> None:
    """The article's stage 1 (frozen backbone, SE trained): the SE input needs no grad, its gate does."""
    torch.manual_seed(7)

    def net(inplace: bool) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True), SEBlock(32, 8, inplace=inplace)
        )

    a, b = net(True).train(), net(False).train()
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m[0].requires_grad_(False)
    x = torch.randn(2, 3, 8, 8)
    ya, yb = a(x), b(x)
    assert torch.allclose(ya, yb, rtol=1e-6, atol=1e-7)
    (ya * torch.arange(ya.numel()).view_as(ya)).sum().backward()
    (yb * torch.arange(yb.numel()).view_as(yb)).sum().backward()
    for ga, gb in zip(_grads(a[2]), _grads(b[2]), strict=True):
        assert ga.abs().sum() > 0
        assert torch.allclose(ga, gb, rtol=1e-5, atol=1e-6)


def test_vgg16_se_trains(fresh_se10: nn.Module, x32: torch.Tensor) -> None:
    model = fresh_se10.train()
    # classifier.0 (102M weights) is frozen only to keep the test fast; every other layer trains.
    model.classifier[0].requires_grad_(False)
    loss = F.cross_entropy(model(x32), torch.tensor([1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    for name, block in model.se_blocks():
        assert block.fc[0].weight.grad.abs().sum() > 0, name
        assert block.fc[2].weight.grad.abs().sum() > 0, name
    assert model.features[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ transfer
@pytest.fixture(scope="module")
def transferred(tv_vgg16: nn.Module) -> VGG16_SE:
    torch.manual_seed(8)
    return from_vgg16(tv_vgg16.state_dict()).eval()


def test_transfer_preserves_vgg16_outputs(
    transferred: VGG16_SE, tv_vgg16: nn.Module, x32: torch.Tensor
) -> None:
    with torch.no_grad():
        expected = tv_vgg16(x32)
        got = transferred(x32)
    assert not torch.allclose(expected[0], expected[1], rtol=1e-3, atol=1e-4)  # input-dependent
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert "transfer" in transferred.provenance


@pytest.mark.slow
def test_transfer_preserves_vgg16_outputs_at_224(transferred: VGG16_SE, tv_vgg16: nn.Module) -> None:
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = tv_vgg16(x)
        got = transferred(x)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_transferred_gates_are_exactly_one_half(transferred: VGG16_SE, x32: torch.Tensor) -> None:
    with ExcitationRecorder(transferred) as rec, torch.no_grad():
        transferred(x32)
    gates = rec.excitations
    assert list(gates) == [f"features.{i}" for i in article.ARTICLE_SE_INDICES]
    for name, g in gates.items():
        assert g.shape == (3, transferred.get_submodule(name).channels)
        assert bool((g == 0.5).all()), name
    # The squeeze differs per image: the SE blocks see real, input-dependent features.
    assert not torch.allclose(rec.squeezes["features.34"][0], rec.squeezes["features.34"][1])


def test_transfer_state_dict_is_reproducible(transferred: VGG16_SE, tv_vgg16: nn.Module) -> None:
    again = transfer_vgg16_state_dict(tv_vgg16.state_dict(), transferred)
    current = transferred.state_dict()
    assert list(again) == list(current)
    for k, v in current.items():
        assert torch.equal(again[k], v), k
    with pytest.raises(ValueError, match="not a torchvision VGG16"):
        transfer_vgg16_state_dict(transferred.state_dict(), transferred)


def test_transferred_se_blocks_are_trainable(transferred: VGG16_SE, x32: torch.Tensor) -> None:
    model = transferred  # shared: the SE weights and requires_grad flags are restored below
    se_params = [p for _, b in model.se_blocks() for p in b.parameters()]
    saved = [p.detach().clone() for p in se_params]
    assert se_params and all(p.requires_grad for p in model.parameters())
    # Train the SE blocks only (the article's stage 1: backbone frozen), which also keeps this fast.
    model.requires_grad_(False)
    for p in se_params:
        p.requires_grad_(True)
    try:
        opt = torch.optim.SGD(se_params, lr=1.0)
        target = torch.tensor([3, 1, 4])
        F.cross_entropy(model(x32), target).backward()
        for name, block in model.se_blocks():
            assert block.fc[2].weight.grad.abs().sum() > 0, name
            # fc.2 starts at zero, so no gradient reaches fc.0 before the first step (dL/dh = W2^T ... = 0).
            assert block.fc[0].weight.grad.abs().sum() == 0, name
        opt.step()
        opt.zero_grad()
        F.cross_entropy(model(x32), target).backward()
        for name, block in model.se_blocks():
            assert block.fc[0].weight.grad.abs().sum() > 0, name
            assert block.fc[2].weight.grad.abs().sum() > 0, name
        with ExcitationRecorder(model) as rec, torch.no_grad():
            model(x32)
        assert not bool((rec.excitations["features.34"] == 0.5).all())  # the gates have left 0.5
    finally:
        with torch.no_grad():
            for p, v in zip(se_params, saved, strict=True):
                p.copy_(v)
                p.grad = None
        model.requires_grad_(True)
    assert all(bool((b.fc[2].weight == 0).all()) for _, b in model.se_blocks())


def test_from_vgg16_reads_a_pth_file_and_takes_a_new_head(
    tv_vgg16: nn.Module, transferred: VGG16_SE, x32: torch.Tensor, tmp_path
) -> None:
    path = tmp_path / "vgg16_plain.pth"
    torch.save(tv_vgg16.state_dict(), path)
    torch.manual_seed(10)
    try:
        model = from_vgg16(str(path), num_classes=10).eval()
    finally:
        path.unlink()  # 528 MB
    assert "vgg16_plain.pth" in model.provenance
    assert model.num_classes == 10
    assert tuple(model.classifier[6].weight.shape) == (10, 4096)
    assert bool((model.classifier[6].bias == 0).all())  # a fresh head, torchvision's init
    expected = transferred.state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith("classifier.6") and ".fc.0." not in k:  # fc.0 keeps its own random init
            assert torch.equal(v, expected[k]), k
    with torch.no_grad():
        out = model(x32)
        # Everything up to the new head computes what VGG16 computes.
        penultimate = model.classifier[:-1](torch.flatten(model.avgpool(model.features(x32)), 1))
        vgg_penultimate = tv_vgg16.classifier[:-1](torch.flatten(tv_vgg16.avgpool(tv_vgg16.features(x32)), 1))
    assert out.shape == (3, 10)
    assert torch.allclose(penultimate, vgg_penultimate, rtol=1e-5, atol=1e-6)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network for this test: every URL goes to a proxy on a closed local port (fails at once)."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # rebuilt from the environment


def test_imagenet_weights_offline_and_uncached_give_one_line(
    offline: None, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.hub.set_dir(str(tmp_path / "torch_home" / "hub"))
    with pytest.raises(RuntimeError) as info:
        from_vgg16("IMAGENET1K_V1")
    msg = str(info.value)
    assert "not cached" in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert str(tmp_path / "torch_home") in msg  # says where the file is expected
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not any((tmp_path / "torch_home").rglob("*.pth"))


@pytest.mark.parametrize("name", ["IMAGENET9K_V7", "resnet18"])
def test_unknown_weights_name_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="unknown VGG16 weights"):
        from_vgg16(name)


@pytest.mark.parametrize("name", ["no_such_file.pth", "weights/vgg16"])
def test_missing_weights_file_says_so(name: str) -> None:
    with pytest.raises(ValueError, match="no such file"):
        from_vgg16(name)


def test_unsupported_source_type() -> None:
    with pytest.raises(TypeError):
        from_vgg16(42)


def test_factory_random_weights() -> None:
    with torch.device("meta"):
        model = vgg16_se(num_classes=5, reduction=8)
    assert model.num_classes == 5 and model.reduction == 8
    assert model.provenance == "random initialisation"
    with pytest.raises(ValueError):
        VGG16_SE(num_classes=0)


@pytest.mark.parametrize("width", [0.125, 1.0])
def test_neutral_se_init_is_a_pass_through(width: float, x32: torch.Tensor) -> None:
    """neutralise_se: every gate exactly 0.5 and the next layer doubled, so the model computes what it
    computes with its SE blocks removed and those weights halved back."""
    import copy

    from sevgg_gui.models.vgg import CFGS, VGGSE, neutralise_se

    torch.manual_seed(0)
    model = (
        VGG16_SE(num_classes=5) if width == 1.0 else VGGSE(CFGS["vgg16"], num_classes=5, width=width)
    ).eval()
    plain = copy.deepcopy(model)
    neutralise_se(model)
    with torch.no_grad(), ExcitationRecorder(model) as rec:
        out = model(x32)
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in rec.excitations.values())
    for i, m in enumerate(plain.features):
        if isinstance(m, SEBlock):
            plain.features[i] = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(out, plain(x32), rtol=1e-5, atol=1e-6)
    # Trainable: the zeroed second FCs get gradients (with the fan-in init training uses).
    from sevgg_gui.training.models import build_model

    torch.manual_seed(0)
    fresh = build_model("vgg16_se", 5, width=width, se_init="neutral", dropout=0.0)
    F.cross_entropy(fresh(x32), torch.tensor([0, 1, 2])).backward()
    alive = [float(b.fc[2].weight.grad.abs().sum()) > 0 for _n, b in fresh.se_blocks()]
    # (At width 0.125 the first block has 8 channels, so one hidden unit, which a random init can leave
    # dead for every input, with or without the neutral start.)
    assert sum(alive) >= 4 if width < 1 else all(alive)


def test_build_model_se_init_option() -> None:
    from sevgg_gui.training.models import build_model

    neutral = build_model("vgg16_se", 10, width=0.125, se_init="neutral")
    assert all(float(b.fc[2].weight.detach().abs().sum()) == 0 for _n, b in neutral.se_blocks())
    default = build_model("vgg16_se", 10, width=0.125)
    assert all(float(b.fc[2].weight.detach().abs().sum()) > 0 for _n, b in default.se_blocks())
    with pytest.raises(ValueError, match="SE init"):
        build_model("vgg16_se", 10, width=0.125, se_init="zero")
