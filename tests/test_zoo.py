"""`zoo.load_model`: every kind of model spec the CLI and the app accept."""

from __future__ import annotations

import pytest
import torch
import torchvision

from sevgg_gui.checkpoints import CheckpointError, save_checkpoint
from sevgg_gui.inference import Predictor
from sevgg_gui.zoo import MODEL_CHOICES, gates_untrained, load_model


def test_slim_training_checkpoint_loads_with_its_input_size(tmp_path):
    from sevgg_gui.training.models import build_model

    model = build_model("vgg16_se", 4, width=0.125, reduction=16, dropout=0.5, init="random")
    path = save_checkpoint(
        model, tmp_path / "slim.pth", class_names=list("abcd"), arch="vgg16_se", width=0.125, input_size=32
    )
    loaded = load_model(path)
    assert loaded.input_size == 32 and loaded.class_names == list("abcd")
    assert loaded.preprocess().crop_size == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model.eval()(x))
    assert loaded.info is not None and len(loaded.info.sha256) == 64


def test_torchvision_se_state_dict_is_recognised(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=5).eval()
    path = tmp_path / "mnv3.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path)
    assert loaded.info.architecture == "mobilenet_v3_small"
    with Predictor(
        loaded.model, device="cpu", class_names=loaded.class_names, preprocess=loaded.preprocess()
    ) as p:
        assert len(p.block_names) == 9


def test_vgg16_with_another_attention_is_random_and_says_so():
    loaded = load_model("vgg16:eca")
    assert loaded.warning and "meaningless" in loaded.warning
    assert type(loaded.model).__name__ == "VGGAttention"


def test_offline_pretrained_name_fails_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # restored after the test
    with pytest.raises(RuntimeError) as err:
        load_model("pretrained:mobilenet_v3_small")
    assert "\n" not in str(err.value) and "not cached" in str(err.value)


def test_other_architecture_is_refused_in_one_line(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert "\n" not in str(err.value) and "ResNet" in str(err.value)


def test_model_choices_cover_the_pretrained_and_variant_specs():
    specs = [s for _label, s in MODEL_CHOICES]
    assert None in specs and "pretrained:mobilenet_v3_small" in specs and "vgg16:cbam" in specs


def test_gates_untrained_after_transfer():
    from sevgg_gui.models.vgg import VGG16_SE, transfer_vgg16_state_dict

    vgg = torchvision.models.vgg16()
    model = VGG16_SE()
    model.load_state_dict(transfer_vgg16_state_dict(vgg.state_dict(), model))
    assert gates_untrained(model)
    assert not gates_untrained(VGG16_SE(num_classes=2))
