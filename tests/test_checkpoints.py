"""load_checkpoint on real-world layouts, shape inference, refusal of bad and malicious files, atomic save.

A VGG16_SE state dict is ~540 MB whatever the number of classes (``classifier.0`` alone has 102M
weights), and every load builds a model, so files are written once per module where possible and
removed as soon as they are no longer needed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from sevgg_gui.checkpoints import (
    CheckpointError,
    infer_vgg16_se_hparams,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
    unwrap_state_dict,
)
from sevgg_gui.models.se import SEBlock
from sevgg_gui.models.vgg import VGG16_SE

SE_CHANNELS = {4: 64, 10: 128, 18: 256, 26: 512, 34: 512}


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "Traceback" not in text


def assert_same_weights(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert list(got) == list(sd)
    for k, v in sd.items():
        assert torch.equal(got[k], v), k


@pytest.fixture(scope="module")
def ckdir(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("checkpoints")
    yield d
    shutil.rmtree(d, ignore_errors=True)  # do not leave gigabytes behind in pytest's kept temp dirs


@pytest.fixture(scope="module")
def article_sd(article10: nn.Module) -> dict[str, torch.Tensor]:
    return article10.state_dict()


@pytest.fixture(scope="module")
def bare_file(ckdir: Path, article_sd) -> Path:
    """The article's way to save: ``torch.save(model.state_dict(), path)``."""
    path = ckdir / "article_vgg16_se.pth"
    torch.save(article_sd, path)
    return path


# ------------------------------------------------------------------------------------------ formats
def test_bare_article_state_dict(bare_file: Path, article10: nn.Module, article_sd, x32) -> None:
    model, info = load_checkpoint(bare_file)
    assert isinstance(model, VGG16_SE) and not model.training
    assert_same_weights(model, article_sd)
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in model.parameters())  # fine-tunable
    with torch.no_grad():
        assert torch.allclose(model(x32), article10(x32), rtol=1e-5, atol=1e-6)
    assert (info.num_classes, info.reduction, info.format) == (10, 16, "pytorch")
    assert info.sha256 == hashlib.sha256(bare_file.read_bytes()).hexdigest()
    assert info.class_names is None and info.notes == []
    assert bare_file.name in info.provenance and info.sha256[:12] in model.provenance


def test_half_precision_checkpoint_with_wrong_class_names(
    ckdir: Path, article10: nn.Module, article_sd, x32
) -> None:
    """Saved in float16 to halve the file: loads as a float32, trainable model; 2 names for 10 outputs
    are dropped with a note rather than mislabelling the predictions."""
    path = ckdir / "half.pth"
    torch.save(
        {"model_state_dict": {k: v.half() for k, v in article_sd.items()}, "class_names": ["cat", "dog"]},
        path,
    )
    try:
        model, info = load_checkpoint(path)
    finally:
        path.unlink()
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad and isinstance(p, nn.Parameter) for p in params)
    with torch.no_grad():
        assert torch.allclose(model.features(x32), article10.features(x32), rtol=1e-2, atol=1e-2)
    assert info.class_names is None and model.class_names is None
    assert any("ignored 2 class names" in n for n in info.notes), info.notes


@pytest.mark.parametrize(
    ("wrap", "note"),
    [
        pytest.param(lambda sd: {"state_dict": sd, "epoch": 7}, "'state_dict'", id="state_dict"),
        pytest.param(lambda sd: {"model": sd, "optimizer": {"lr": 0.1}}, "'model'", id="model"),
        pytest.param(
            lambda sd: {"model_state_dict": sd, "epoch": 3}, "'model_state_dict'", id="model_state_dict"
        ),
        pytest.param(lambda sd: {"ema": sd, "step": 100}, "'ema'", id="ema"),
        pytest.param(lambda sd: {f"module.{k}": v for k, v in sd.items()}, "'module.'", id="module-prefix"),
        pytest.param(
            lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, "'_orig_mod.'", id="compile-prefix"
        ),
    ],
)
def test_wrapped_and_prefixed_checkpoints(ckdir: Path, article_sd, wrap, note: str) -> None:
    path = ckdir / "wrapped.pth"
    torch.save(wrap(article_sd), path)
    try:
        model, info = load_checkpoint(path)
    finally:
        path.unlink()
    assert_same_weights(model, article_sd)
    assert info.num_classes == 10
    assert any(note in n for n in info.notes), info.notes


def test_unwrap_nested_wrapper_and_prefix(article_sd) -> None:
    """DataParallel inside a Lightning-style wrapper: {'state_dict': {'module.features.0.weight': ...}}."""
    obj = {"state_dict": {f"module.{k}": v for k, v in article_sd.items()}, "epoch": 2, "class_names": ["a"]}
    sd, meta, notes = unwrap_state_dict(obj)
    assert list(sd) == list(article_sd)
    assert meta["epoch"] == 2 and meta["class_names"] == ["a"]
    assert notes == ["state dict taken from 'state_dict'", "prefix 'module.' removed"]


def test_foreign_safetensors_with_other_hyperparameters(ckdir: Path, article_sd, x32) -> None:
    """A safetensors file from elsewhere (no sevgg metadata) of VGG16_SE(num_classes=10, reduction=8)."""
    g = torch.Generator().manual_seed(11)
    sd = dict(article_sd)
    for i, c in SE_CHANNELS.items():
        sd[f"features.{i}.fc.0.weight"] = torch.randn(c // 8, c, generator=g) * 0.1
        sd[f"features.{i}.fc.2.weight"] = torch.randn(c, c // 8, generator=g) * 0.1
    path = ckdir / "foreign.safetensors"
    save_file(sd, str(path))
    try:
        model, info = load_checkpoint(path)
    finally:
        path.unlink()
    assert (info.num_classes, info.reduction, info.format) == (10, 8, "safetensors")
    assert model.num_classes == 10 and model.reduction == 8
    assert isinstance(model.features[4], SEBlock) and model.features[4].reduction == 8
    assert_same_weights(model, sd)


@pytest.mark.parametrize("reduction", [1, 2, 4, 8, 16, 32, 64])
def test_reduction_is_inferred_from_shapes(reduction: int) -> None:
    with torch.device("meta"):
        sd = VGG16_SE(num_classes=7, reduction=reduction).state_dict()
    assert infer_vgg16_se_hparams(sd) == (7, reduction)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_checkpoint_round_trip(ckdir: Path, article_sd, suffix: str) -> None:
    with torch.device("meta"):  # a VGG16_SE holding the article weights, without a 2 s random init
        src = VGG16_SE(num_classes=10)
    src.load_state_dict(article_sd, assign=True)
    src.provenance = "unit test"
    names = [f"kind {i}" for i in range(10)]
    path = ckdir / f"ours{suffix}"
    save_checkpoint(src, path, class_names=names, epoch=12, dataset="toy", lr=0.001, best=True)
    try:
        assert [p.name for p in ckdir.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"] == []
        model, info = load_checkpoint(path)
    finally:
        path.unlink()
    assert_same_weights(model, article_sd)
    assert info.format == ("safetensors" if suffix == ".safetensors" else "pytorch")
    assert info.class_names == names and model.class_names == names
    assert info.metadata["epoch"] == 12 and info.metadata["dataset"] == "toy"
    assert info.metadata["lr"] == 0.001 and info.metadata["best"] is True
    assert info.metadata["format"] == "sevgg_gui/1"
    assert info.provenance == "unit test"
    assert (info.num_classes, info.reduction) == (10, 16)


def test_saved_checkpoint_honours_the_umask(tmp_path: Path) -> None:
    """Like torch.save or open(), not readable by the owner only (mkstemp's 0600)."""
    block = nn.Sequential(SEBlock(8, 4))
    path = save_checkpoint(block, tmp_path / "small.pth")
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_plain_torchvision_vgg16_is_transferred(ckdir: Path, tv_vgg16: nn.Module, x32) -> None:
    path = ckdir / "vgg16.pth"
    torch.save(tv_vgg16.state_dict(), path)
    try:
        model, info = load_checkpoint(path)
    finally:
        path.unlink()
    with torch.no_grad():
        assert torch.allclose(model(x32), tv_vgg16(x32), rtol=1e-5, atol=1e-6)
    assert info.num_classes == 1000 and info.reduction == 16
    assert any("torchvision VGG16" in n and "function-preserving" in n for n in info.notes), info.notes
    assert "VGG16" in info.provenance


# ------------------------------------------------------------------------------------------ refusals
def test_resnet18_gives_one_clear_line(ckdir: Path) -> None:
    torch.manual_seed(12)
    sd = torchvision.models.resnet18().state_dict()
    path = ckdir / "resnet18.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert one_line(msg) and len(msg) < 300, msg
    assert msg.startswith("resnet18.pth:") and "ResNet" in msg
    with torch.device("meta"):
        expected = VGG16_SE().state_dict()
    missing = re.search(r"missing (\d+)", msg)
    unexpected = re.search(r"unexpected (\d+)", msg)
    assert missing and int(missing.group(1)) == len([k for k in expected if k not in sd])
    assert unexpected and int(unexpected.group(1)) == len([k for k in sd if k not in expected])


def _small_torch_file(path: Path) -> bytes:
    torch.save({"features.0.weight": torch.randn(64, 3, 3, 3), "x": torch.arange(50_000)}, path)
    return path.read_bytes()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p.write_bytes(_small_torch_file(p)[:-5000]), id="truncated-pth"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p: p.write_bytes(os.urandom(4096)), id="random-bytes"),
        pytest.param(lambda p: p.write_text("this is a README, not weights\n"), id="text"),
        pytest.param(lambda p: p.write_bytes(pickle.dumps([1, 2, 3], protocol=2)), id="pickled-list"),
    ],
)
def test_unreadable_files_give_one_line(tmp_path: Path, make) -> None:
    path = tmp_path / "model.pth"
    make(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert one_line(str(info.value)) and str(info.value).startswith("model.pth")


def test_random_bytes_are_not_called_malicious(tmp_path: Path) -> None:
    path = tmp_path / "download.pth"
    path.write_bytes(bytes(range(256)) * 64)  # contains pickle opcodes the weights-only loader lacks
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert one_line(msg) and "could run code" not in msg and "not a readable" in msg


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_safetensors(tmp_path: Path, suffix: str) -> None:
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(1000)}, str(good))
    path = tmp_path / f"cut{suffix}"  # sniffed by content, whatever the suffix
    path.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert one_line(str(info.value)) and "safetensors" in str(info.value)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    for path, words in ((tmp_path / "nope.pth", "no such file"), (tmp_path, "folder")):
        with pytest.raises(CheckpointError, match=words) as info:
            load_checkpoint(path)
        assert one_line(str(info.value))


class _RunsShell:
    """Unpickling this runs a shell command: the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _OpensFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _payload(kind: str, marker: Path, sd: dict) -> object:
    evil = _RunsShell(marker) if kind == "system" else _OpensFile(marker)
    return {"state_dict": sd, "epoch": 1, "extra": evil}


@pytest.mark.parametrize("kind", ["system", "open"])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, kind: str, writer: str) -> None:
    sd = {"features.0.weight": torch.zeros(64, 3, 3, 3)}
    proof = tmp_path / "proof_marker"
    marker = tmp_path / "pwned_marker"
    path = tmp_path / "evil.pth"

    def write(obj: object, to: Path) -> None:
        if writer == "torch.save":
            torch.save(obj, to)
        else:
            with open(to, "wb") as f:
                pickle.dump(obj, f, protocol=2)

    # The payload is live: an unsafe load of the same kind of file does create its marker.
    write(_payload(kind, proof, sd), tmp_path / "proof.pth")
    if writer == "torch.save":
        torch.load(tmp_path / "proof.pth", weights_only=False)
    else:
        with open(tmp_path / "proof.pth", "rb") as f:
            pickle.load(f)
    assert proof.exists()

    write(_payload(kind, marker, sd), path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert one_line(msg) and msg.startswith("evil.pth") and "refused" in msg
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(SEBlock(64), path)  # torch.save(model) instead of model.state_dict()
    with pytest.raises(CheckpointError, match="refused") as info:
        load_checkpoint(path)
    assert one_line(str(info.value)) and "state_dict" in str(info.value)


def test_read_state_dict_refuses_before_building_anything(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save(_RunsShell(marker), path)
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ atomic save
def _small_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(SEBlock(64, 16), SEBlock(32, 8))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_leaves_no_temp_files(tmp_path: Path, suffix: str) -> None:
    path = save_checkpoint(_small_model(1), tmp_path / f"m{suffix}")
    save_checkpoint(_small_model(2), path)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}"]
    sd, _, _ = read_state_dict(path)
    assert torch.equal(sd["0.fc.0.weight"], _small_model(2).state_dict()["0.fc.0.weight"])


@pytest.mark.parametrize("exc", [OSError("No space left on device"), KeyboardInterrupt()])
def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc) -> None:
    path = save_checkpoint(_small_model(1), tmp_path / "m.pth")
    before = path.read_bytes()
    real_save = torch.save

    def save_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:  # half-written, then the disk fills up / the user presses Ctrl+C
            fh.truncate(len(before) // 2)
        raise exc

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(type(exc)):
        save_checkpoint(_small_model(2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]
    sd, _, _ = read_state_dict(path)
    assert torch.equal(sd["0.fc.0.weight"], _small_model(1).state_dict()["0.fc.0.weight"])


def test_failed_safetensors_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    path = save_checkpoint(_small_model(1), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", fail)
    with pytest.raises(OSError):
        save_checkpoint(_small_model(2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_failed_first_save_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError):
        save_checkpoint(_small_model(1), tmp_path / "sub" / "new.pth")
    assert list((tmp_path / "sub").iterdir()) == []


def test_text_file_is_named_for_what_it_is(tmp_path):
    from sevgg_gui.checkpoints import CheckpointError, load_checkpoint

    path = tmp_path / "notes.pth"
    path.write_text("these are my training notes, not weights\n")
    with pytest.raises(CheckpointError, match="neither a torch zip archive nor a readable pickle"):
        load_checkpoint(path)


def test_torchscript_archive_gives_only_our_line(tmp_path: Path) -> None:
    """A torch.jit.save file: refused with one line of ours, without torch's own warning line first."""
    import subprocess
    import sys
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    path = tmp_path / "scripted.pt"
    scripted.save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning on the way fails the test
        with pytest.raises(CheckpointError, match="TorchScript") as info:
            read_state_dict(path)
    assert one_line(str(info.value)) and "scripted.pt" in str(info.value)

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    env.pop("SEVGG_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sevgg_gui.cli", "info", "--checkpoint", str(path)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "TorchScript" in lines[0] and "state_dict" in lines[0]
