"""Inference backends (issue 14): onnxruntime and OpenVINO give torch's Result; the export cache.

All on the slim 32 px VGG16-SE checkpoint fixture (conftest.slim_ckpt), real exports, real runtimes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sevgg_gui.backends import open_predictor
from sevgg_gui.backends.export_cache import cache_path, open_backend
from sevgg_gui.cli import main

# fp32 everywhere; different kernels (oneDNN via torch, MLAS, OpenVINO's) reorder sums, which moves a
# gate (a sigmoid of a sum over <= 32 channels at this width) by ~1e-7. 1e-4 is the bound.
GATE_TOL = 1e-4


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SEVGG_CACHE", str(d))
    return d


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(rng.random((40 + 8 * i, 48, 3)) * 255).astype(np.uint8) for i in range(3)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_gives_torchs_top5_and_gates(backend, slim_ckpt, cache, images) -> None:
    torch_pred = open_predictor(str(slim_ckpt), device="cpu").predictor
    lines: list[str] = []
    opened = open_backend(str(slim_ckpt), backend, device="cpu", log=lines.append)
    assert lines == [], lines  # no fallback: the exported model really runs in `backend`
    assert opened.predictor.runtime == backend
    assert opened.provenance.startswith("slim.pth exported for " + backend)
    for img in images:
        want, got = torch_pred.predict(img), opened.predictor.predict(img)
        assert [p.index for p in got.topk] == [p.index for p in want.topk]
        # probabilities: same bound as the gates (softmax of logits that agree to ~1e-6 relative)
        assert np.allclose([p.prob for p in got.topk], [p.prob for p in want.topk], atol=GATE_TOL)
        assert list(got.excitations) == list(want.excitations) == torch_pred.block_names
        for name, gate in want.excitations.items():
            assert got.excitations[name].shape == gate.shape
            assert float(np.abs(got.excitations[name] - gate).max()) < GATE_TOL, name
    torch_pred.close()


def test_cache_is_keyed_and_reused(slim_ckpt, cache, tmp_path) -> None:
    first = open_backend(str(slim_ckpt), "onnxruntime", device="cpu")
    entry = cache_path(str(slim_ckpt))
    assert entry.is_file() and entry.parent == cache
    note = json.loads(entry.with_suffix(".json").read_text())
    assert note["sha256"] == first.sha256 and len(note["sha256"]) == 64
    stamp = entry.stat().st_mtime_ns
    # Same checkpoint, even under another name: the same entry, not exported again.
    copy = tmp_path / "copy.pth"
    shutil.copyfile(slim_ckpt, copy)
    open_backend(str(copy), "openvino", device="cpu")
    assert cache_path(str(copy)).name.split("-")[-1] == entry.name.split("-")[-1]
    open_backend(str(slim_ckpt), "openvino", device="cpu")
    assert entry.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in cache.glob("*.onnx")) == sorted({entry.name, cache_path(str(copy)).name})
    # A different checkpoint (one weight changed): a new entry beside the old one.
    from sevgg_gui.checkpoints import save_checkpoint
    from sevgg_gui.training.models import load_trained

    model, meta = load_trained(slim_ckpt)
    with torch.no_grad():
        model.classifier[6].bias[0] += 1.0
    other = tmp_path / "slim.pth"
    other.parent.mkdir(exist_ok=True)
    save_checkpoint(
        model, other, class_names=meta["class_names"], arch="vgg16_se", width=0.125, reduction=16,
        dropout=0.5, input_size=32,
    )  # fmt: skip
    assert cache_path(str(other)) != entry
    open_backend(str(other), "onnxruntime", device="cpu")
    assert cache_path(str(other)).is_file() and entry.stat().st_mtime_ns == stamp


def test_cache_key_has_the_exporter_version(slim_ckpt, cache, monkeypatch) -> None:
    """A new exporter (version 2: intervention inputs) gets new entries: older cached exports, which
    cannot intervene, are exported again instead of reused."""
    from sevgg_gui.backends import export_cache

    assert export_cache.EXPORTER_VERSION >= 2
    now = cache_path(str(slim_ckpt))
    monkeypatch.setattr(export_cache, "EXPORTER_VERSION", export_cache.EXPORTER_VERSION - 1)
    assert cache_path(str(slim_ckpt)) != now


@pytest.mark.usefixtures("one_thread")  # tiny model: threads only contend
def test_cached_export_intervenes(slim_ckpt, cache, images) -> None:
    """The cached export has the intervention inputs: muting a channel in the runtime mutes it."""
    torch_pred = open_predictor(str(slim_ckpt), device="cpu").predictor
    pred = open_backend(str(slim_ckpt), "onnxruntime", device="cpu").predictor
    for rec in (torch_pred.recorder, pred.recorder):
        rec.intervene("features.18", [3, 5], value=0.0)
    want, got = torch_pred.predict(images[0]), pred.predict(images[0])
    assert got.excitations["features.18"][[3, 5]].tolist() == [0.0, 0.0]
    for name, gate in want.excitations.items():
        assert float(np.abs(got.excitations[name] - gate).max()) < GATE_TOL, name
    assert [p.index for p in got.topk] == [p.index for p in want.topk]
    torch_pred.close()


def test_corrupt_cache_entry_is_rebuilt(slim_ckpt, cache, images) -> None:
    open_backend(str(slim_ckpt), "openvino", device="cpu").predictor.close()
    entry = cache_path(str(slim_ckpt))
    entry.write_bytes(entry.read_bytes()[:1000])  # truncated, as an interrupted copy leaves it
    lines: list[str] = []
    opened = open_backend(str(slim_ckpt), "openvino", device="cpu", log=lines.append)
    assert len(lines) == 1 and "did not open" in lines[0] and "exporting it again" in lines[0], lines
    assert opened.predictor.runtime == "openvino"
    assert entry.stat().st_size > 1000
    want = open_predictor(str(slim_ckpt), device="cpu").predictor.predict(images[0])
    got = opened.predictor.predict(images[0])
    assert [p.index for p in got.topk] == [p.index for p in want.topk]


def test_export_failure_falls_back_to_torch(slim_ckpt, tmp_path, monkeypatch, images) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SEVGG_CACHE", str(blocker))
    lines: list[str] = []
    opened = open_backend(str(slim_ckpt), "onnxruntime", device="cpu", log=lines.append)
    assert len(lines) == 1 and "onnxruntime backend unavailable" in lines[0] and "using torch" in lines[0]
    assert "\n" not in lines[0]
    assert opened.predictor.model is not None  # the torch Predictor
    assert len(opened.predictor.predict(images[0]).topk) == 5


def test_unknown_backend_is_one_line(slim_ckpt) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        open_backend(str(slim_ckpt), "tensorrt")


def test_cli_predict_openvino_matches_torch(slim_ckpt, cache, tmp_path, capsys, images) -> None:
    from PIL import Image

    paths = []
    for i, img in enumerate(images):
        paths.append(str(tmp_path / f"im{i}.png"))
        Image.fromarray(img).save(paths[-1])
    runs = {}
    for backend in ("torch", "openvino"):
        code = main(["predict", *paths, "-c", str(slim_ckpt), "--backend", backend, "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert "using torch" not in out.err
        runs[backend] = json.loads(out.out)
    for a, b in zip(runs["torch"], runs["openvino"], strict=True):
        assert [t["index"] for t in a["topk"]] == [t["index"] for t in b["topk"]]
        assert np.allclose([t["prob"] for t in a["topk"]], [t["prob"] for t in b["topk"]], atol=GATE_TOL)
    assert len(list(cache.glob("*.onnx"))) == 1


def test_cli_excite_onnxruntime_writes_torchs_gates(slim_ckpt, cache, tmp_path, capsys, images) -> None:
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray(images[1]).save(img)
    outs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.npz"
        assert main(["excite", str(img), "-c", str(slim_ckpt), "--backend", backend, "-o", str(out)]) == 0
        outs[backend] = np.load(out)
    capsys.readouterr()
    a, b = outs["torch"], outs["onnxruntime"]
    # The gates; squeezes (the pooled inputs) are no graph outputs, so only torch writes them.
    gate_keys = [k for k in a.files if k.endswith("/excitation")]
    assert len(gate_keys) == 5 and set(gate_keys) <= set(b.files)
    for k in gate_keys:
        assert a[k].shape == b[k].shape and float(np.abs(a[k] - b[k]).max()) < GATE_TOL, k
