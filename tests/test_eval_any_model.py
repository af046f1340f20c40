"""`sevgg eval`, `analyze` and `distill --teacher` on any model spec (issue #11): timm specs, a Hugging
Face model folder, a user's --model-code, a torchvision SE state dict; each through its own
preprocessing, its outputs paired with the data's classes (by name, ImageNet name / WordNet id, or index
to index), and one line with exit 2 when they cannot be paired. Real small models, real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sevgg_gui.analysis_classwise import load_class_profiles
from sevgg_gui.cli import main
from sevgg_gui.images import Preprocess
from sevgg_gui.training.class_match import ClassMismatch, match_classes
from sevgg_gui.training.model_data import TeacherInput, open_model, split_for_model

timm = pytest.importorskip("timm")

SMALL = "timm:mobilenetv3_small_050:random"  # 1.6M parameters, 9 SE blocks: timm's cheapest SE network
FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# A user's model with 10 outputs, no class names and an inline SE of its own class (found by behaviour).
USER_CODE = """
import torch
from torch import nn

class Gate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.down, self.up = nn.Linear(c, c // 2), nn.Linear(c // 2, c)

    def forward(self, x):
        s = x.mean((2, 3))
        return x * torch.sigmoid(self.up(torch.relu(self.down(s))))[:, :, None, None]

class Net(nn.Module):
    input_size = 32

    def __init__(self, attention=True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), Gate(8) if attention else nn.Identity(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(), Gate(12) if attention else nn.Identity(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10),
        )

    def forward(self, x):
        return self.body(x)

def build():
    torch.manual_seed(0)
    return Net()

def plain():
    torch.manual_seed(0)
    return Net(attention=False)
"""


@pytest.fixture(scope="module")
def user_code(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("code") / "net.py"
    path.write_text(USER_CODE)
    return str(path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("any-model-cache"))


def _folder(root: Path, classes: dict[str, list[np.ndarray]]) -> Path:
    for name, images in classes.items():
        (root / name).mkdir(parents=True)
        for i, rgb in enumerate(images):
            Image.fromarray(rgb).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def imagenet_folder(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos in folders named as ImageNet names them: a short name, a WordNet id, a synonym with
    an underscore; two images each (the photo and its mirror, shrunk to 160 px: decoding stays cheap)."""

    def two(name: str) -> list[np.ndarray]:
        with Image.open(photos / name) as im:
            im = im.convert("RGB")
            im.thumbnail((160, 160))
            rgb = np.asarray(im)
        return [rgb, np.ascontiguousarray(rgb[:, ::-1])]

    root = tmp_path_factory.mktemp("imagenet-named")
    return _folder(root, {"Egyptian cat": two("chelsea.png"), "n04485082": two("camera.png"), "coffee_mug": two("coffee.png")})  # fmt: skip


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ant / bee / cat / dog, 6 random 40x40 images each."""
    g = np.random.default_rng(0)
    classes = {c: [g.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(6)] for c in ("ant", "bee", "cat", "dog")}  # fmt: skip
    return _folder(tmp_path_factory.mktemp("noise"), classes)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A timm model folder (save_for_hf) of 4 classes named ant..dog, random weights, 64 px input."""
    torch.manual_seed(1)
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=4).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 64, 64)}  # its own crop: 64 px
    folder = tmp_path_factory.mktemp("hf") / "tiny4"
    timm.models.save_for_hf(model, str(folder), model_config={"label_names": ["ant", "bee", "cat", "dog"]})
    return folder


def _eval_json(argv: list[str], capsys) -> dict:
    assert main(["eval", *argv, "--json", "--device", "cpu"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


# ----------------------------------------------------------------------------------- class matching
def test_class_matching_rules() -> None:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    names = list(_IMAGENET_CATEGORIES)
    m = match_classes(
        names, 1000, ["tabby", "n04485082", "Egyptian_cat", "coffee-mug"], model_label="m", data_label="d"
    )
    assert m.columns == (281, 872, 285, 504) and "WordNet" in (m.note or "")  # fmt: skip
    assert match_classes(list("ABC"), 3, ["a", "b", "c"], model_label="m", data_label="d").columns is None
    unnamed = match_classes(None, 1000, ["tabby"], model_label="m", data_label="d")  # vgg16:cbam: no names
    assert unnamed.columns == (281,) and "ImageNet-1k order assumed" in (unnamed.note or "")
    assert match_classes(list("abcd"), 4, ["d", "b"], model_label="m", data_label="d").columns == (3, 1)
    same = match_classes(None, 10, FASHION, model_label="m", data_label="d")
    assert same.columns is None and "index to index" in (same.note or "")
    other = match_classes(list("abcdefghij"), 10, FASHION, model_label="m", data_label="d")
    assert other.columns is None and "class names differ" in (other.note or "")
    for args, kwargs, words in [
        ((names, 1000, FASHION), {}, "m: 1000 classes, data has 10 (fashionmnist); not the model's: T-shirt/top"),
        ((names, 1000, ["crane"]), {}, "crane (ambiguous)"),  # two ImageNet classes are called crane
        ((names, 1000, ["tabby", "n02123045"]), {}, "same class as tabby"),
        ((list("abc"), 3, list("xyz")), {"strict": True}, "not the classes it was trained on"),
    ]:  # fmt: skip
        with pytest.raises(ClassMismatch) as exc:
            match_classes(*args, model_label="m", data_label="fashionmnist", **kwargs)
        assert words in str(exc.value) and "\n" not in str(exc.value)


def test_teacher_input_gives_the_teacher_its_own_pixels() -> None:
    """The student's normalised batch -> pixels -> the teacher's size and mean/std, logits of the data's
    classes only; compared with preprocessing the same pixels the teacher's way directly."""
    seen: list[torch.Tensor] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return torch.arange(6.0).repeat(len(x), 1)

    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 32, 32, generator=g)
    s_mean, s_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    t = Preprocess(crop_size=32, resize_size=36, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    student = (pixels - torch.tensor(s_mean).view(1, 3, 1, 1)) / torch.tensor(s_std).view(1, 3, 1, 1)
    out = TeacherInput(Probe(), s_mean, s_std, t, columns=(4, 1))(student)
    assert out.tolist() == [[4.0, 1.0], [4.0, 1.0]]
    # float32 round trip through two normalisations: ~1e-7 of values within [-1, 1]
    torch.testing.assert_close(seen[0], pixels * 2 - 1, atol=1e-5, rtol=0)
    big = Preprocess(crop_size=64, resize_size=73, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    TeacherInput(Probe(), s_mean, s_std, big)(student)
    assert seen[1].shape == (2, 3, 64, 64)
    # Upsampling a constant image keeps it constant: the resize is an interpolation of the pixels.
    flat = (torch.full((1, 3, 32, 32), 0.25) - torch.tensor(s_mean).view(1, 3, 1, 1)) / torch.tensor(
        s_std
    ).view(1, 3, 1, 1)
    TeacherInput(Probe(), s_mean, s_std, big)(flat)
    torch.testing.assert_close(seen[2], torch.full((1, 3, 64, 64), -0.5), atol=1e-5, rtol=0)  # fmt: skip


# ----------------------------------------------------------------------------------- eval
def test_eval_timm_spec_on_imagenet_named_folders(imagenet_folder: Path, capsys) -> None:
    rep = _eval_json(["--data", str(imagenet_folder), "-c", SMALL, "--input-size", "64"], capsys)
    assert rep["n"] == 6 == sum(map(sum, rep["confusion"]))  # a flat folder: every image, not a 10% split
    assert [r["n"] for r in rep["per_class"]] == [2, 2, 2]
    assert rep["class_names"] == ["Egyptian cat", "coffee_mug", "n04485082"]
    assert rep["model_classes"] == 1000 and "ImageNet" in rep["class_map"]
    assert rep["top1_all_outputs"] is not None and rep["top1_all_outputs"] <= rep["top1"]
    assert "every image of the folder" in rep["data_note"]

    # The pixels are the model's own preprocessing (timm's data config: bicubic), at the size asked for.
    opened = open_model(SMALL)
    ms = split_for_model(opened, str(imagenet_folder), input_size=64)
    pre = ms.dataset.transform.pre
    assert (pre.crop_size, pre.interpolation) == (64, "bicubic") and pre.mean == opened.preprocess.mean
    assert ms.classes.columns == (285, 504, 872)


def test_eval_torchvision_weights_file_classifies_the_photos(
    imagenet_folder: Path, shared_dir: Path, capsys
) -> None:
    """Google's trained MobileNetV3-Small as a torchvision state dict: its 224 px ImageNet
    preprocessing, the three folders read from outputs 285 / 504 / 872: the photos are recognised."""
    weights = shared_dir / "weights" / "mobilenet_v3_small-tfslim_uint8-distilled.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} not found")
    rep = _eval_json(["--data", str(imagenet_folder), "-c", str(weights)], capsys)
    assert rep["n"] == 6 and rep["top1"] == 1.0, rep["confusion"]
    assert rep["top1_all_outputs"] < 1.0  # among 1000 classes the coffee is "consomme" (data README)


def test_eval_model_folder_by_name_and_subset(
    hf_folder: Path, noise_folder: Path, tmp_path: Path, capsys
) -> None:
    rep = _eval_json(["--data", str(noise_folder), "-c", str(hf_folder), "--input-size", "48"], capsys)
    assert rep["n"] == 24 and rep["class_map"] is None and rep["model_classes"] == 4
    subset = tmp_path / "two"
    subset.mkdir()
    for name in ("dog", "bee"):
        (subset / name).symlink_to(noise_folder / name, target_is_directory=True)
    rep = _eval_json(["--data", str(subset), "-c", str(hf_folder), "--input-size", "48"], capsys)
    assert rep["n"] == 12 and rep["class_names"] == ["bee", "dog"] and rep["topk"] == 2
    assert "2 of the model's 4 outputs" in rep["class_map"]


def test_eval_model_code_on_fashion_mnist_index_to_index(user_code: str, fmnist: str, cache: str, tmp_path: Path, capsys) -> None:  # fmt: skip
    common = ["--data", fmnist, "--limit", "20", "--cache-dir", cache]
    rep = _eval_json([*common, "--model-code", f"{user_code}:build"], capsys)
    assert rep["n"] == 20 and rep["class_names"] == FASHION and "index to index" in rep["class_map"]
    assert rep["checkpoint"].endswith("net.py:build")
    # With a weights file for the user's architecture: the same model, the same numbers.
    torch.save(open_model(None, f"{user_code}:build").model.state_dict(), tmp_path / "w.pth")
    again = _eval_json([*common, "--model-code", f"{user_code}:build", "-c", str(tmp_path / "w.pth")], capsys)
    assert again["confusion"] == rep["confusion"] and again["checkpoint"].endswith("with w.pth")


def test_eval_classes_that_cannot_be_paired_are_one_line_exit_2(fmnist: str, cache: str, capsys) -> None:
    assert main(["eval", "--data", fmnist, "-c", SMALL, "--limit", "10", "--cache-dir", cache]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sevgg: {SMALL}: 1000 classes, data has 10 (fashionmnist)") and "\n" not in err
    assert main(["eval", "--data", fmnist]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- analyze
def test_analyze_timm_spec_profiles_every_se_block(imagenet_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.npz"
    argv = ["analyze", "--data", str(imagenet_folder), "-c", SMALL, "--input-size", "64", "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    prof = load_class_profiles(out)
    model = open_model(SMALL).model
    se = {n: m for n, m in model.named_modules() if type(m).__name__ == "SqueezeExcite"}
    assert list(prof["blocks"]) == list(se) and len(se) == 9
    for name, block in se.items():  # one row per class, one column per gated channel
        assert prof["blocks"][name]["mean"].shape == (3, block.conv_reduce.in_channels)
        assert prof["blocks"][name]["count"].tolist() == [2, 2, 2]
    assert prof["classes"] == ["Egyptian cat", "coffee_mug", "n04485082"]
    assert "9 blocks x 3 classes over 6 test images" in text and "classes: the data's 3 classes" in text


def test_analyze_model_code_finds_its_inline_gates(user_code: str, fmnist: str, cache: str, tmp_path: Path, capsys) -> None:  # fmt: skip
    out = tmp_path / "p.npz"
    common = ["analyze", "--data", fmnist, "--limit", "20", "--cache-dir", cache, "--device", "cpu"]
    assert main([*common, "--model-code", f"{user_code}:build", "--out", str(out)]) == 0
    prof = load_class_profiles(out)
    assert {k: v["mean"].shape for k, v in prof["blocks"].items()} == {"body.2": (10, 8), "body.5": (10, 12)}
    assert sum(v["count"].sum() for v in prof["blocks"].values()) == 40
    capsys.readouterr()
    assert main([*common, "--model-code", f"{user_code}:plain", "--out", str(tmp_path / "x.npz")]) == 1
    err = capsys.readouterr().err.strip()
    assert "no recordable attention blocks" in err and "\n" not in err


# ----------------------------------------------------------------------------------- prune / distill
def test_distill_from_a_model_folder_teacher(
    hf_folder: Path, noise_folder: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "student.pth"
    argv = ["distill", "--teacher", str(hf_folder), "--data", str(noise_folder), "--out", str(out),
            "--epochs", "1", "--student-width", "0.0625", "--input-size", "32", "--batch-size", "12",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "teacher input: the student's 32px batches resized to 64px (bicubic)" in text and "wrote" in text
    rep = _eval_json(["--data", str(noise_folder), "-c", str(out), "--split", "val"], capsys)
    assert rep["class_names"] == ["ant", "bee", "cat", "dog"] and rep["n"] > 0


def test_prune_and_distill_refusals_are_one_line(tmp_path: Path, noise_folder: Path, capsys) -> None:
    assert main(["prune", "-c", SMALL, "-o", str(tmp_path / "p.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert "prunes VGG16-SE structurally" in err and "\n" not in err
    argv = ["distill", "--teacher", SMALL, "--data", str(noise_folder), "--out", str(tmp_path / "s.pth"), "--input-size", "32"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "teacher timm:mobilenetv3_small_050:random: 1000 classes, data has 4" in err and "\n" not in err
