"""Where models come from: timm specs, Hugging Face model folders and the user's own code, through
`zoo.load_model` and the CLI. Real timm models with random weights (small ones), real files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

from sevgg_gui.bundled import SAMPLES  # noqa: E402
from sevgg_gui.checkpoints import CheckpointError  # noqa: E402
from sevgg_gui.cli import main  # noqa: E402
from sevgg_gui.origins.timm_models import parse_spec  # noqa: E402
from sevgg_gui.zoo import ModelSpecError, load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
USER_MODELS = REPO / "tests" / "data" / "user_models"
INLINE = f"{USER_MODELS / 'inline_se.py'}:build"
FAULTY = USER_MODELS / "faulty.py"
PHOTO = SAMPLES / "chelsea.png"
SMALL = "mobilenetv3_small_050"  # 1.6M parameters, SE blocks: the cheapest timm SE network


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache and a hub endpoint that refuses connections (port 9, discard)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return tmp_path / "hf" / "hub"


def _logits(model: torch.nn.Module, size: int = 64) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


# ----------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("timm:seresnet50", ("seresnet50", False)),
        ("timm:seresnet50.a1_in1k", ("seresnet50.a1_in1k", False)),
        ("timm:seresnet50.a1_in1k:random", ("seresnet50.a1_in1k", True)),
    ],
)
def test_timm_spec_parsing(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["timm:", "timm:a:b", "timm:org/name", "timm::random"])
def test_malformed_timm_spec_is_one_line(spec):
    with pytest.raises(ModelSpecError) as err:
        load_model(spec)
    assert "\n" not in str(err.value) and "timm:NAME" in str(err.value)


def test_random_timm_model_builds_with_imagenet_names_and_warns():
    loaded = load_model(f"timm:{SMALL}:random")
    assert type(loaded.model).__module__.startswith("timm.")
    assert loaded.warning and "meaningless" in loaded.warning
    assert len(loaded.class_names) == 1000 and loaded.class_names[0] == "tench"  # timm's ImageNetInfo
    assert not loaded.model.training


def test_preprocessing_comes_from_the_models_data_config():
    # TF-ported MobileNetV3: Inception mean/std (0.5) and bilinear, unlike timm's ImageNet defaults.
    pre = load_model("timm:tf_mobilenetv3_small_minimal_100:random").preprocess()
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5) and pre.interpolation == "bilinear"
    # ResNet10-T: trained at 176 px, bicubic, crop_pct 0.875 -> resize floor(176 / 0.875) = 201.
    pre = load_model("timm:resnet10t:random").preprocess()
    assert (pre.crop_size, pre.resize_size, pre.interpolation) == (176, 201, "bicubic")
    # A tag picks its own config: seresnet50.a1_in1k has crop_pct 0.95 -> floor(224 / 0.95) = 235.
    cfg = timm.models.get_pretrained_cfg("seresnet50.a1_in1k").to_dict()
    with torch.device("meta"):  # no 28M-parameter init for a config check
        model = timm.create_model("seresnet50.a1_in1k", pretrained=False)
    from sevgg_gui.origins.timm_models import preprocess_for

    pre, _notes = preprocess_for(model)
    assert pre.resize_size == int(224 / cfg["crop_pct"]) == 235


def test_unknown_timm_name_suggests_the_closest():
    with pytest.raises(ModelSpecError) as err:
        load_model("timm:seresnt50")
    text = str(err.value)
    assert "\n" not in text and "seresnet50" in text.split("closest:")[1]
    with pytest.raises(ModelSpecError, match="known: seresnet50.a1_in1k"):
        load_model("timm:seresnet50.bogus_tag")


def test_untrained_timm_name_says_use_random():
    with pytest.raises(ModelSpecError) as err:
        load_model("timm:seresnet18")  # timm has no weights for it (tag 'untrained')
    assert "timm:seresnet18:random" in str(err.value) and "\n" not in str(err.value)


def test_offline_and_not_cached_is_one_line_and_fast(offline_hub):
    t0 = time.perf_counter()
    with pytest.raises(ModelSpecError) as err:
        load_model("timm:resnet10t")
    elapsed = time.perf_counter() - t0
    text = str(err.value)
    assert "\n" not in text and "not cached" in text and "timm:resnet10t:random" in text
    # timm's own download retries for ~50 s offline; the reachability check answers at once.
    assert elapsed < 15, elapsed


def _seed_hub_cache(hub: Path, repo_id: str, data: bytes) -> str:
    """Lay ``data`` out as huggingface_hub's cache does: a blob named by its sha256, a snapshot symlink
    named model.safetensors, refs/main naming the snapshot. Returns the sha256."""
    sha = hashlib.sha256(data).hexdigest()
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(data)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(repo / "blobs" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return sha


def test_cached_hub_weights_load_through_timm_without_network(offline_hub):
    """`timm:resnet10t` finds its weights in the hub cache and loads them offline, through timm's own
    pretrained loading."""
    from safetensors.torch import save

    torch.manual_seed(3)
    ref = timm.create_model("resnet10t", pretrained=False).eval()
    sha = _seed_hub_cache(offline_hub, "timm/resnet10t.c3_in1k", save(ref.state_dict()))
    loaded = load_model("timm:resnet10t")
    assert "cached" in loaded.provenance and loaded.warning is None
    assert loaded.info is not None and loaded.info.sha256 == sha
    torch.testing.assert_close(_logits(loaded.model), _logits(ref))


def test_corrupt_cached_weights_are_one_line(offline_hub):
    _seed_hub_cache(offline_hub, "timm/resnet10t.c3_in1k", b"not a safetensors file at all")
    with pytest.raises(ModelSpecError) as err:
        load_model("timm:resnet10t")
    assert "\n" not in str(err.value) and "failed" in str(err.value)


# ----------------------------------------------------------------------------- Hugging Face folders
def _saved_folder(tmp_path: Path, *, safe: bool = True, **config) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(1)
    model = timm.create_model(SMALL, pretrained=False, num_classes=4).eval()
    folder = tmp_path / "hf_model"
    timm.models.save_for_hf(model, str(folder), safe_serialization=safe, model_config=config or None)
    return folder, model


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_save_for_hf_folder_round_trip(tmp_path, safe):
    folder, model = _saved_folder(tmp_path, safe=safe, label_names=["ant", "bee", "cat", "dog"])
    loaded = load_model(folder)
    assert loaded.class_names == ["ant", "bee", "cat", "dog"]
    assert loaded.info.path.endswith("model.safetensors" if safe else "pytorch_model.bin")
    assert len(loaded.info.sha256) == 64 and loaded.warning is None
    torch.testing.assert_close(_logits(loaded.model), _logits(model))
    assert loaded.preprocess().interpolation == "bicubic"  # the config's, carried through config.json


def test_hub_cache_repo_folder_opens_its_snapshot(tmp_path):
    folder, model = _saved_folder(tmp_path)
    repo = tmp_path / "models--someone--tiny"
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        (snap / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    torch.testing.assert_close(_logits(load_model(repo).model), _logits(model))


def test_folder_whose_weights_do_not_fit_its_config_is_one_line(tmp_path):
    folder, _model = _saved_folder(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_classes"] = cfg["model_args"]["num_classes"] = cfg["pretrained_cfg"]["num_classes"] = 7
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    text = str(err.value)
    assert "\n" not in text and "does not fit its config.json" in text
    assert "shape mismatch" in text and "classifier.weight (4, 1024) vs (7, 1024)" in text

    from safetensors.torch import load_file, save_file

    cfg["num_classes"] = cfg["model_args"]["num_classes"] = cfg["pretrained_cfg"]["num_classes"] = 4
    (folder / "config.json").write_text(json.dumps(cfg))
    sd = load_file(str(folder / "model.safetensors"))
    sd["extra.weight"] = sd.pop("conv_stem.weight")
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"missing 1 \(conv_stem.weight\); unexpected 1 \(extra.weight\)"
    ):
        load_model(folder)


def test_folder_that_is_not_a_timm_model_is_one_line(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["ViTForImageClassification"]}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelSpecError, match="transformers ViTForImageClassification"):
        load_model(folder)


# ----------------------------------------------------------------------------------- user's code
def test_model_code_from_a_file_builds_the_users_model():
    loaded = load_model(None, model_code=INLINE)
    assert type(loaded.model).__name__ == "TinySENet" and not loaded.model.training
    assert loaded.class_names == ["circle", "square", "triangle"]  # its class_names attribute
    assert loaded.preprocess().crop_size == 64  # its input_size attribute
    assert "inline_se.py:build" in loaded.provenance and loaded.warning is None


@pytest.mark.parametrize("prefix", ["module.", "model."])
def test_model_code_weights_load_with_wrappers_and_prefixes(tmp_path, prefix):
    torch.manual_seed(7)
    trained = load_model(None, model_code=INLINE).model
    for p in trained.parameters():
        p.data.normal_()  # differs from what build() makes (seed 0)
    sd = {prefix + k: v for k, v in trained.state_dict().items()}
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": sd, "epoch": 3, "class_names": ["a", "b", "c"]}, path)
    loaded = load_model(path, model_code=INLINE)
    torch.testing.assert_close(_logits(loaded.model), _logits(trained))
    assert loaded.class_names == ["a", "b", "c"]  # the checkpoint's names win over the attribute
    assert loaded.info is not None and loaded.info.path == str(path)


def test_model_code_by_module_path(monkeypatch):
    monkeypatch.syspath_prepend(str(USER_MODELS))
    loaded = load_model(None, model_code="inline_se:build_torchvision_se")
    assert type(loaded.model).__name__ == "TinySENet"
    from sevgg_gui.recorder import find_gate_blocks

    assert len(find_gate_blocks(loaded.model)) == 2  # torchvision's SqueezeExcitation, by type


def test_model_code_errors_are_one_line_with_file_and_line(tmp_path):
    lines = FAULTY.read_text().splitlines()
    explode_line = next(i for i, s in enumerate(lines, 1) if "explode-line" in s)
    helper_line = next(i for i, s in enumerate(lines, 1) if "helper-line" in s)
    cases = [
        (f"{FAULTY}:explode", f"faulty.py:{explode_line}: ValueError: cannot build with 1 layer"),
        (f"{FAULTY}:deeper", f"faulty.py:{helper_line}: ValueError: Invalid padding"),
        (f"{FAULTY}:not_a_model", "not_a_model() returned a dict, not a torch nn.Module"),
        (f"{FAULTY}:quits", "SystemExit: bye"),  # must not end the CLI, or the app's worker thread
        (f"{FAULTY}:nothing", "has no 'nothing' (it defines: deeper, explode, not_a_model, quits)"),
        (f"{tmp_path / 'nope.py'}:build", "no such file"),
        ("no_such_module_xyz:build", "no module named 'no_such_module_xyz'"),
        ("json:loads", "loads() needs arguments (s)"),
        ("just_a_name", "FILE.py:FUNCTION"),
    ]
    bad = tmp_path / "bad_syntax.py"
    bad.write_text("def build():\n    return (\n")
    cases.append((f"{bad}:build", "bad_syntax.py:2: SyntaxError"))
    for code, words in cases:
        with pytest.raises(ModelSpecError) as err:
            load_model(None, model_code=code)
        assert words in str(err.value) and "\n" not in str(err.value), (code, str(err.value))


def test_model_code_weights_that_do_not_fit_are_one_line(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, model_code=INLINE)
    assert "other.pth does not fit inline_se.py:build" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelSpecError, match="must name its weights file"):
        load_model("timm:resnet10t:random", model_code=INLINE)


# ---------------------------------------------------------------------------------------- CLI
def test_cli_predict_on_a_random_timm_model(capsys):
    code = main(["predict", str(PHOTO), "-c", f"timm:{SMALL}:random", "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = json.loads(captured.out)
    assert len(rows[0]["topk"]) == 5 and "meaningless" in captured.err  # the random-weights warning


def test_cli_predict_and_excite_with_model_code(tmp_path, capsys):
    spec = f"{USER_MODELS / 'inline_se.py'}:build_torchvision_se"  # SE blocks recorded by type
    assert main(["predict", str(PHOTO), "--model-code", spec, "--device", "cpu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {p["label"] for p in rows[0]["topk"]} == {"circle", "square", "triangle"}
    out = tmp_path / "gates.npz"
    assert main(["excite", str(PHOTO), "--model-code", spec, "--device", "cpu", "--out", str(out)]) == 0
    assert "x 2 blocks" in capsys.readouterr().out


def test_cli_model_code_error_is_one_line(capsys):
    assert main(["predict", str(PHOTO), "--model-code", f"{FAULTY}:explode"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "faulty.py:" in err and "ValueError" in err


def test_cli_export_of_a_timm_model_and_of_model_code(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    args = ["export", "-c", f"timm:{SMALL}:random", "--onnx", str(out), "--input-size", "64"]
    assert main(args) == 0, capsys.readouterr().err
    assert "onnxruntime vs PyTorch" in capsys.readouterr().out
    out2 = tmp_path / "u.onnx"
    assert main(["export", "--model-code", INLINE, "--onnx", str(out2), "--no-check"]) == 0
    assert out2.stat().st_size > 0
    assert main(["export", "--onnx", str(tmp_path / "x.onnx")]) == 2


def test_cli_info_on_timm_and_model_code_specs(capsys):
    assert main(["info", "-c", f"timm:{SMALL}:random", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "MobileNetV3" in out and "timm mobilenetv3_small_050, random" in out
    assert main(["info", "--model-code", f"{FAULTY}:not_a_model"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "returned a dict" in err


def test_timm_is_imported_only_for_timm_specs(slim_ckpt):
    """Startup, in a fresh interpreter: loading a VGG16-SE checkpoint or a user's model never imports timm."""
    code = (
        "import sys\nfrom sevgg_gui.zoo import load_model\n"
        f"load_model({str(slim_ckpt)!r})\nload_model(None, model_code={INLINE!r})\n"
        "print('timm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "False"


def test_prune_refuses_other_architectures_in_one_line_saying_why(tmp_path, capsys):
    """prune is structural VGG16-SE channel surgery; eval, analyze and distill take any model
    (tests/test_eval_any_model.py)."""
    for spec in ("timm:resnet10t:random", "pretrained:mobilenet_v3_small", "vgg16:cbam"):
        assert main(["prune", "-c", spec, "-o", str(tmp_path / "p.pth")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "prunes VGG16-SE structurally" in err


def test_menu_timm_choices_are_names_timm_knows_with_trained_weights():
    from sevgg_gui.model_specs import TIMM_CHOICES
    from sevgg_gui.origins.timm_models import check_name

    for _label, spec in TIMM_CHOICES:
        name, random = parse_spec(spec)
        assert not random and check_name(name, spec)[1]  # a tag timm has weights for


def test_python_file_given_as_checkpoint_points_to_model_code():
    with pytest.raises(ModelSpecError, match="--model-code FILE.py:FUNCTION"):
        load_model(str(USER_MODELS / "inline_se.py"))
