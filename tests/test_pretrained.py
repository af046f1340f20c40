"""torchvision SE networks: architecture detection, the weights API without a download, and the real
ImageNet MobileNetV3-Small from shared/ classifying a cat with image-dependent SE gates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import MobileNet_V3_Small_Weights, get_model

import sevgg_gui.models.vgg as vgg_module
from sevgg_gui.images import Preprocess
from sevgg_gui.inference import Predictor
from sevgg_gui.models.pretrained import ARCHS, detect_torchvision_arch, load_pretrained
from sevgg_gui.recorder import ExcitationRecorder

SE_BLOCKS = {"mobilenet_v3_small": 9, "mobilenet_v3_large": 8, "efficientnet_b0": 16, "regnet_y_400mf": 16}
CATS = {"Egyptian cat", "tabby", "tiger cat"}
WEIGHTS = "weights/mobilenet_v3_small-tfslim_uint8-distilled.pth"


@pytest.fixture(scope="module")
def small_weights(shared_dir: Path) -> Path:
    path = shared_dir / WEIGHTS
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="module")
def small(small_weights: Path):
    return load_pretrained("mobilenet_v3_small", small_weights)


# ---------------------------------------------------------------------------------------- detection
@pytest.mark.parametrize("arch", ARCHS)
def test_detect_each_architecture_any_class_count(arch: str) -> None:
    with torch.device("meta") if arch != "regnet_y_400mf" else torch.device("cpu"):
        sd = get_model(arch, num_classes=7).state_dict()
    assert detect_torchvision_arch(sd) == arch


def test_detect_rejects_other_and_altered_state_dicts() -> None:
    with torch.device("meta"):
        assert detect_torchvision_arch(get_model("resnet18").state_dict()) is None
        assert detect_torchvision_arch(get_model("mobilenet_v2").state_dict()) is None
        sd = get_model("mobilenet_v3_small").state_dict()
    assert detect_torchvision_arch({k: v for k, v in sd.items() if k != "features.0.0.weight"}) is None
    sd["features.1.block.1.fc1.weight"] = torch.empty(4, 16, 1, 1, device="meta")  # wrong SE width
    assert detect_torchvision_arch(sd) is None
    assert detect_torchvision_arch({}) is None


# ---------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("arch", ARCHS)
def test_random_weights_build_and_record_torchvision_se(arch: str) -> None:
    torch.manual_seed(0)
    model, names, prep = load_pretrained(arch, weights=None)
    assert not model.training and model.provenance.endswith("random initialisation")
    assert len(names) == 1000 and names[0] == "tench" and model.class_names is names
    assert isinstance(prep, Preprocess) and prep.crop_size == 224
    with torch.no_grad(), ExcitationRecorder(model) as rec:
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert len(rec.excitations) == SE_BLOCKS[arch]


def test_weights_api_goes_through_torchvision_enum(monkeypatch: pytest.MonkeyPatch) -> None:
    """ "DEFAULT" resolves to torchvision's enum and its (cached or downloaded) file; no network here."""
    asked = []
    fake = get_model("mobilenet_v3_small").state_dict()
    monkeypatch.setattr(vgg_module, "load_torchvision_weights", lambda w, **k: asked.append(w) or fake)
    model, names, prep = load_pretrained("mobilenet_v3_small", "DEFAULT")
    assert asked == [MobileNet_V3_Small_Weights.IMAGENET1K_V1]
    assert names == list(MobileNet_V3_Small_Weights.IMAGENET1K_V1.meta["categories"])
    assert "torchvision MobileNet_V3_Small_Weights.IMAGENET1K_V1" in model.provenance
    load_pretrained("mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1")
    assert asked[-1] is MobileNet_V3_Small_Weights.IMAGENET1K_V1


def test_enum_recipe_sets_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = get_model("regnet_y_400mf").state_dict()
    monkeypatch.setattr(vgg_module, "load_torchvision_weights", lambda w, **k: fake)
    _, _, prep = load_pretrained("regnet_y_400mf", "DEFAULT")  # IMAGENET1K_V2: resize 232
    assert (prep.resize_size, prep.crop_size) == (232, 224)


def test_no_download_when_not_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # an empty hub cache
    with pytest.raises(RuntimeError, match="not cached"):
        load_pretrained("efficientnet_b0", "DEFAULT", allow_download=False)


def test_bad_names() -> None:
    with pytest.raises(ValueError, match="available"):
        load_pretrained("resnet18", None)
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        load_pretrained("mobilenet_v3_small", "IMAGENET1K_V9")
    with pytest.raises(FileNotFoundError):
        load_pretrained("mobilenet_v3_small", "no/such/file.pth")
    with pytest.raises(ValueError, match="name"):
        load_pretrained(None, None)
    with pytest.raises(ValueError, match="need a network name"):
        load_pretrained(None, "DEFAULT")


def test_local_file_with_own_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_model("efficientnet_b0", num_classes=3)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict(), "class_names": ["a", "b", "c"]}, path)
    loaded, names, _ = load_pretrained(None, path)
    assert names == ["a", "b", "c"] and loaded.classifier[1].out_features == 3
    assert torch.equal(loaded.classifier[1].weight, model.classifier[1].weight)
    with pytest.raises(ValueError, match="holds efficientnet_b0"):
        load_pretrained("mobilenet_v3_small", path)
    loaded2, _, _ = load_pretrained(None, model.state_dict())  # a state dict works too
    assert loaded2.classifier[1].out_features == 3


# ---------------------------------------------------------------------------------------- real weights
def test_real_mobilenet_v3_small_sees_the_cat(small, photos: Path) -> None:
    model, names, prep = small
    assert "distilled" in model.provenance and len(names) == 1000
    with Predictor(model, device="cpu", class_names=names, preprocess=prep) as predictor:
        cat = predictor.predict(photos / "chelsea.png", topk=3)
        camera = predictor.predict(photos / "camera.png", topk=3)
    assert cat.top1.label in CATS and cat.top1.prob > 0.3
    assert {p.label for p in cat.topk} <= CATS
    assert camera.top1.label == "tripod"
    assert len(cat.excitations) == 9 and list(cat.excitations) == list(camera.excitations)
    diffs = [abs(cat.excitations[b] - camera.excitations[b]).max() for b in cat.excitations]
    # The attention depends on the image. The first block's hard-sigmoid gates saturate at exactly 1.0
    # on both photos (a property of Google's model, not of the recording), the other 8 all differ.
    assert sum(d > 1e-3 for d in diffs) >= 8 and max(diffs) > 0.5


def test_real_weights_detected_without_a_name(small_weights: Path) -> None:
    model, names, _ = load_pretrained(None, small_weights)
    assert detect_torchvision_arch(model.state_dict()) == "mobilenet_v3_small"
    assert names[285] == "Egyptian cat"
