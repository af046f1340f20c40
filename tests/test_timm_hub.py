"""`timm:hf-hub:ORG/NAME` specs: a timm model on the Hugging Face hub, loaded through timm's own hub path
from a hub cache laid out in tmp_path exactly as huggingface_hub lays it out (blobs, snapshot symlinks,
refs), written by timm's own `save_for_hf` from a real tiny model. No network: HF_HUB_OFFLINE=1 and an
endpoint that refuses connections (port 9)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

from sevgg_gui.cli import main  # noqa: E402
from sevgg_gui.origins.timm_hub import parse_spec  # noqa: E402
from sevgg_gui.zoo import ModelSpecError, load_model  # noqa: E402

SMALL = "mobilenetv3_small_050"  # 1.6M parameters, 9 SE blocks
SPEC = "timm:hf-hub:someone/tiny-se"
LABELS = ["ant", "bee", "cat", "dog"]
# Preprocessing unlike timm's defaults for this architecture (224 px, bicubic, ImageNet mean/std).
DATA = {
    "input_size": (3, 96, 96),
    "interpolation": "bilinear",
    "mean": (0.5,) * 3,
    "std": (0.25,) * 3,
    "crop_pct": 0.8,
}


@pytest.fixture
def hub(monkeypatch, tmp_path) -> Path:
    """An empty hub cache (HF_HUB_CACHE), offline mode on, and an endpoint that refuses connections."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return cache


def _model(seed: int, num_classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(SMALL, pretrained=False, num_classes=num_classes).eval()


def publish(
    cache: Path,
    model: torch.nn.Module,
    repo_id: str = "someone/tiny-se",
    *,
    commit: str = "a" * 40,
    refs: tuple[str, ...] = ("main",),
    safe: bool = True,
    labels: list[str] | None = LABELS,
    skip: tuple[str, ...] = (),
) -> Path:
    """Lay out what `timm.models.save_for_hf` writes as one commit of a hub repo in huggingface_hub's
    cache: blobs/<sha256>, snapshots/<commit>/<file> -> blob symlinks, refs/<branch> = commit.
    Returns the snapshot folder."""
    out = cache.parent / f"saved-{commit[:6]}"
    timm.models.save_for_hf(
        model,
        str(out),
        safe_serialization=safe,
        model_config={"label_names": labels} if labels else None,
        data_config=DATA,
    )
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True)
    for f in out.iterdir():
        if f.name in skip:
            continue
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(blob)
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snap


def _logits(model: torch.nn.Module, size: int = 64) -> torch.Tensor:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("timm:hf-hub:timm/seresnet50.a1_in1k", ("timm/seresnet50.a1_in1k", None, False)),
        ("timm:hf-hub:org/name@v1.0", ("org/name", "v1.0", False)),
        ("timm:hf-hub:org/name@refs/pr/3:random", ("org/name", "refs/pr/3", True)),
    ],
)
def test_hub_spec_parsing(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    "spec", ["timm:hf-hub:", "timm:hf-hub:name", "timm:hf-hub:a/b/c", "timm:hf-hub:o/n@"]
)
def test_malformed_hub_spec_is_one_line(spec):
    with pytest.raises(ModelSpecError) as err:
        load_model(spec)
    assert "\n" not in str(err.value) and "timm:hf-hub:ORG/NAME" in str(err.value)


def test_cached_hub_model_loads_offline_through_timm(hub):
    from huggingface_hub import constants

    # huggingface_hub was imported (by timm) before the fixture set HF_HUB_CACHE: its constant still
    # names the default cache, so the loader must read the environment itself, as it does.
    assert str(hub) != constants.HF_HUB_CACHE
    ref = _model(1)
    snap = publish(hub, ref)
    offline_before = constants.HF_HUB_OFFLINE
    loaded = load_model(SPEC)
    assert offline_before == constants.HF_HUB_OFFLINE  # offline mode is only lent for the load
    assert loaded.model.pretrained_cfg["source"] == "hf-hub"  # timm's own hub path, not a folder load
    torch.testing.assert_close(_logits(loaded.model), _logits(ref))
    assert loaded.class_names == LABELS and loaded.warning is None
    assert (
        "someone/tiny-se" in loaded.provenance
        and "cached" in loaded.provenance
        and "aaaaaaaaaaaa" in loaded.provenance
    )
    blob = (snap / "model.safetensors").resolve()
    assert loaded.info.path == str(snap / "model.safetensors") and loaded.info.sha256 == blob.name
    pre = loaded.preprocess()  # from the repo's config.json: 96 px, crop_pct 0.8 -> resize floor(96 / 0.8)
    assert (pre.crop_size, pre.resize_size, pre.interpolation) == (96, 120, "bilinear")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.25, 0.25, 0.25)


def test_revisions_pick_their_snapshot(hub):
    main_model, v1_model = _model(1), _model(2)
    publish(hub, main_model, commit="a" * 40)
    publish(hub, v1_model, commit="b" * 40, refs=("v1",))
    torch.testing.assert_close(_logits(load_model(SPEC).model), _logits(main_model))
    for rev in ("v1", "b" * 40):  # a tag (refs/v1) and a commit
        loaded = load_model(f"{SPEC}@{rev}")
        torch.testing.assert_close(_logits(loaded.model), _logits(v1_model))
        assert f"someone/tiny-se@{rev}" in loaded.provenance
    with pytest.raises(ModelSpecError, match="not cached"):
        load_model(f"{SPEC}@v2")


def test_torch_weights_load_as_data_only(hub, tmp_path):
    """A repo with only pytorch_model.bin loads (timm's torch.load with weights_only=True); one whose
    pickle would run code is refused in one line and the code does not run."""
    ref = _model(1)
    publish(hub, ref, safe=False)
    loaded = load_model(SPEC)
    assert loaded.info.path.endswith("pytorch_model.bin") and loaded.info.format == "pytorch"
    torch.testing.assert_close(_logits(loaded.model), _logits(ref))

    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = hub / "models--evil--tiny-se"
    snap = publish(hub, ref, "evil/tiny-se", safe=False)
    blob = (snap / "pytorch_model.bin").resolve()
    sd = dict(ref.state_dict())
    sd["conv_stem.weight"] = Payload()
    torch.save(sd, blob)
    with pytest.raises(ModelSpecError) as err:
        load_model("timm:hf-hub:evil/tiny-se")
    assert "\n" not in str(err.value) and "failed" in str(err.value) and evil.is_dir()
    assert not marker.exists()
    torch.load(blob, weights_only=False)  # the payload is real: an unrestricted unpickler runs it
    assert marker.exists()


def test_not_cached_offline_is_one_line_and_fast(hub):
    t0 = time.perf_counter()
    with pytest.raises(ModelSpecError) as err:
        load_model("timm:hf-hub:nobody/nothing")
    text = str(err.value)
    assert "\n" not in text and "config.json and weights are not cached" in text and "HF_HUB_OFFLINE" in text
    assert time.perf_counter() - t0 < 5  # no download attempts, no retries
    publish(hub, _model(1), skip=("model.safetensors",))  # config cached, weights not
    with pytest.raises(ModelSpecError, match="weights are not cached and HF_HUB_OFFLINE is set"):
        load_model(SPEC)


def test_random_builds_from_the_config_alone(hub):
    publish(hub, _model(1, num_classes=1000), labels=None, skip=("model.safetensors",))
    loaded = load_model(f"{SPEC}:random")
    assert loaded.warning and "Random weights" in loaded.warning and SPEC in loaded.warning
    assert loaded.model.num_classes == 1000 and loaded.preprocess().crop_size == 96
    assert loaded.class_names[0] == "tench"  # no label names in the config: timm's ImageNet info
    with pytest.raises(ModelSpecError, match="config.json is not cached"):
        load_model("timm:hf-hub:nobody/nothing:random")


def test_config_that_is_not_timm_is_one_line(hub):
    snap = publish(hub, _model(1))
    config = snap / "config.json"
    data = b'{"architectures": ["ViTForImageClassification"]}'
    blob = config.resolve()
    config.unlink()
    blob.write_bytes(data)
    config.symlink_to(blob)
    with pytest.raises(ModelSpecError, match="transformers ViTForImageClassification"):
        load_model(SPEC)


def test_cli_info_on_a_hub_spec(hub, capsys):
    publish(hub, _model(1))
    assert main(["info", "-c", SPEC, "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "MobileNetV3: 4 classes" in out and "someone/tiny-se" in out and "se x9" in out
    assert main(["info", "-c", "timm:hf-hub:nobody/nothing"]) == 1  # a model that cannot be opened
    err = capsys.readouterr().err
    assert err.startswith("sevgg: ") and err.count("\n") == 1 and "not cached" in err
