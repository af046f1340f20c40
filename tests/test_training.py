"""Training, data and evaluation: real Fashion-MNIST where the shared data is present, else a generated
ImageFolder; every run uses a slim VGG16-SE (width 0.125) at 32x32 so the suite stays fast on 2 cores.

Reproducibility is tested bit for bit (``torch.equal``): resuming from an end-of-epoch checkpoint, and
from the mid-epoch checkpoint Ctrl-C writes, gives the weights of the uninterrupted run.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from sevgg_gui.cli import main
from sevgg_gui.training.data import (
    DataError,
    build_transform,
    load_datasets,
    mnist_root,
    parse_data_spec,
    split_indices,
)
from sevgg_gui.training.models import (
    apply_stage,
    build_model,
    conv_blocks,
    init_from_file,
    load_trained,
    param_groups,
)
from sevgg_gui.training.train import Callbacks, TrainConfig, Trainer, lr_factor, train

REPO_ROOT = Path(__file__).resolve().parents[1]
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
TINY_CLASSES = ("blue", "green", "red")


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 16 PNGs (40x36, one colour channel dominant, random boxes and noise)."""
    root = tmp_path_factory.mktemp("tiny-folder")
    rng = np.random.default_rng(0)
    for c, name in enumerate(TINY_CLASSES):
        (root / name).mkdir()
        for i in range(16):
            a = rng.integers(0, 90, size=(36, 40, 3), dtype=np.uint8)
            y, x = rng.integers(0, 20, size=2)
            a[y : y + 16, x : x + 20, c] = rng.integers(170, 256)
            a[..., c] = np.maximum(a[..., c], 110)
            Image.fromarray(a).save(root / name / f"{i:02d}.png")
    return root


def quick(data: Path | str, out: Path, **kw) -> TrainConfig:
    """A slim, fast, randomness-exercising configuration (dropout and augmentation on)."""
    base = dict(
        data=str(data),
        out=str(out),
        arch="vgg16_se",
        width=0.125,
        init="random",
        input_size=32,
        epochs=3,
        batch_size=8,
        lr_backbone=1e-3,
        lr_head=2e-3,
        dropout=0.3,
        augment="light",
        val_fraction=0.25,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


def quiet(_: str) -> None:
    pass


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_payload(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------ data
def test_data_specs(tiny_folder: Path, tmp_path: Path) -> None:
    assert parse_data_spec(str(tiny_folder)).kind == "imagefolder"
    assert parse_data_spec(f"imagefolder:{tiny_folder}").path == tiny_folder
    assert parse_data_spec(f"FashionMNIST:{tmp_path}").kind == "fashionmnist"
    with pytest.raises(DataError, match="unknown dataset kind"):
        parse_data_spec(f"imagenet:{tmp_path}")
    with pytest.raises(DataError, match="no such file"):
        parse_data_spec(tmp_path / "missing")
    with pytest.raises(DataError, match="IDX files"):
        mnist_root(tmp_path, tmp_path / "cache")


def test_fashion_mnist_from_the_gz_files(fmnist: str, data_cache: Path) -> None:
    ds = load_datasets(fmnist, cache_dir=data_cache, splits=("train", "val", "test"))
    assert ds.class_names == FASHION
    assert ds.input_size == 32
    assert (len(ds.train), len(ds.val), len(ds.test)) == (54_000, 6_000, 10_000)
    assert np.bincount(ds.val.targets).tolist() == [600] * 10  # stratified
    assert not set(ds.train.indices) & set(ds.val.indices)
    assert ds.test.base[0][1] == FASHION.index("Ankle boot")  # the README's item 0
    # Unpacked once into the cache; the read-only source is untouched.
    raw = next(data_cache.glob("FashionMNIST-*/FashionMNIST/raw"))
    assert sorted(p.name for p in raw.iterdir()) == sorted(
        [
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
        ]
    )
    # Grayscale -> 3 identical channels once the normalisation is undone.
    x, _ = ds.test[0]
    assert x.shape == (3, 32, 32)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    rgb = x * std[:, None, None] + mean[:, None, None]
    assert torch.allclose(rgb[0], rgb[1], atol=1e-5) and torch.allclose(rgb[1], rgb[2], atol=1e-5)
    # --limit: class-balanced and seeded.
    small = load_datasets(fmnist, cache_dir=data_cache, limit=50, val_limit=20, seed=1)
    assert np.bincount(small.train.targets).tolist() == [5] * 10
    assert len(small.val) == 20
    again = load_datasets(fmnist, cache_dir=data_cache, limit=50, val_limit=20, seed=1)
    other = load_datasets(fmnist, cache_dir=data_cache, limit=50, val_limit=20, seed=2)
    assert again.train.indices == small.train.indices != other.train.indices


def test_cifar10_batches_are_read_without_running_pickles(tmp_path: Path, monkeypatch) -> None:
    """Synthetic batches in CIFAR-10's format (the real set is not in shared/); a pickle that would run
    code is refused with one line."""
    import pickle

    from sevgg_gui.training import data as data_mod

    monkeypatch.setattr(data_mod, "VERIFY_MD5", False)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [i % 10, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": labels}, protocol=2))
    ds = load_datasets(f"cifar10:{folder}", val_fraction=0.0, splits=("train", "test"))
    assert ds.class_names == labels and ds.input_size == 32
    assert (len(ds.train), len(ds.test)) == (20, 4)
    x, y = ds.test[0]
    assert x.shape == (3, 32, 32) and y == 5
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": os.system}, protocol=2))
    with pytest.raises(DataError, match="refused global"):
        load_datasets(f"cifar10:{tmp_path}", splits=("test",))
    monkeypatch.setattr(data_mod, "VERIFY_MD5", True)
    with pytest.raises(DataError, match="MD5"):
        load_datasets(f"cifar10:{tmp_path}", splits=("test",))


def test_split_is_stratified_and_seeded() -> None:
    targets = [0] * 10 + [1] * 30
    tr, va = split_indices(targets, 0.2, seed=0)
    assert sorted(tr + va) == list(range(40))
    assert sum(targets[i] == 0 for i in va) == 2 and sum(targets[i] == 1 for i in va) == 6
    assert split_indices(targets, 0.2, seed=0) == (tr, va) != split_indices(targets, 0.2, seed=1)


def test_image_folder_layouts(tiny_folder: Path, tmp_path: Path) -> None:
    flat = load_datasets(tiny_folder, input_size=32, val_fraction=0.25, splits=("train", "val", "test"))
    assert flat.class_names == list(TINY_CLASSES)
    assert (len(flat.train), len(flat.val)) == (36, 12)
    assert flat.test.indices == flat.val.indices  # no test folder: the held-out split
    # A train/val tree uses its own val folder, and class folders must agree.
    for split, names in (("train", TINY_CLASSES), ("val", TINY_CLASSES)):
        for name in names:
            (tmp_path / split / name).mkdir(parents=True)
            for src in sorted((tiny_folder / name).iterdir())[:3]:
                (tmp_path / split / name / src.name).write_bytes(src.read_bytes())
    tree = load_datasets(tmp_path, input_size=32, splits=("train", "val"))
    assert (len(tree.train), len(tree.val)) == (9, 9)
    (tmp_path / "test" / "other").mkdir(parents=True)
    (tmp_path / "test" / "other" / "x.png").write_bytes((tiny_folder / "red" / "00.png").read_bytes())
    with pytest.raises(DataError, match="differ"):
        load_datasets(tmp_path, input_size=32, splits=("test",))
    with pytest.raises(DataError, match="at least 32"):
        load_datasets(tiny_folder, input_size=16)


def test_augmentation_presets() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40), dtype=np.uint8))  # grayscale
    torch.manual_seed(0)
    for preset in ("none", "light", "strong"):
        tf = build_transform(32, preset)
        a, b = tf(img), tf(img)
        assert a.shape == (3, 32, 32), preset
        assert torch.equal(a, b) == (preset == "none"), preset
    with pytest.raises(DataError, match="unknown augmentation"):
        build_transform(32, "extreme")


# ------------------------------------------------------------------------------------------ models
def test_param_groups_and_progressive_unfreezing() -> None:
    torch.manual_seed(0)
    model = build_model("vgg16_se", 10, width=0.125)
    groups = {g["name"]: g for g in param_groups(model, 1e-5, 1e-4, 0.01)}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert groups["backbone"]["lr"] == 1e-5 and groups["head"]["lr"] == 1e-4
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0
    se_ids = {id(p) for n, p in model.named_parameters() if ".fc." in n}
    assert se_ids <= {id(p) for p in groups["head"]["params"]}  # SE blocks learn at the head rate
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(model.parameters()))
    blocks = conv_blocks(model)
    assert [len(b) for b in blocks] == [2, 2, 3, 3, 3]

    def trainable(block: int) -> bool:
        return all(p.requires_grad for c in blocks[block] for p in c.parameters())

    apply_stage(model, 1)
    assert not any(trainable(i) for i in range(5))
    assert all(p.requires_grad for n, p in model.named_parameters() if ".fc." in n or "classifier" in n)
    apply_stage(model, 2, unfreeze_blocks=2)
    assert [trainable(i) for i in range(5)] == [False, False, False, True, True]
    apply_stage(model, 3)
    assert all(p.requires_grad for p in model.parameters())


def test_architectures_and_init_from_a_file(tmp_path: Path) -> None:
    from torchvision.models import VGG

    from sevgg_gui.checkpoints import save_checkpoint
    from sevgg_gui.models.se import SEBlock

    plain = build_model("vgg16", 10, width=0.125)
    assert not any(isinstance(m, SEBlock) for m in plain.modules())
    assert [len(b) for b in conv_blocks(plain)] == [2, 2, 3, 3, 3]
    assert len(conv_blocks(build_model("vgg11_se", 10, width=0.25))) == 5
    assert isinstance(build_model("vgg16", 10, init="none"), VGG)  # torchvision's, at full width
    with pytest.raises(ValueError, match="full-width"):
        build_model("vgg16_se", 10, width=0.5, init="imagenet")
    # A 3-class checkpoint initialises a 5-class model: all but the last layer are copied.
    torch.manual_seed(1)
    src = build_model("vgg16_se", 3, width=0.125)
    save_checkpoint(src, tmp_path / "src.pth")
    dst = build_model("vgg16_se", 5, width=0.125)
    fresh = init_from_file(dst, tmp_path / "src.pth")
    assert fresh == ["classifier.6.weight", "classifier.6.bias"]
    for k, v in src.state_dict().items():
        if k not in fresh:
            assert torch.equal(dst.state_dict()[k], v), k
    with pytest.raises(ValueError, match="does not fit"):
        init_from_file(build_model("vgg16_se", 3, width=0.25), tmp_path / "src.pth")


def test_imagenet_init_offline_is_one_line(tiny_folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached there

    def offline(*a, **k):
        raise URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    rc = main(["train", "--data", str(tiny_folder), "--init", "imagenet", "--out", str(tmp_path / "x.pth")])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert "\n" not in err and "not cached" in err and "--init random" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "lrs", "why"),
    [
        (["--init", "random"], (1e-3, 1e-3), "random init: from-scratch rates"),
        (["--width", "0.125"], (1e-3, 1e-3), "random init"),  # a slim model defaults to random init
        (["--init", "imagenet"], (1e-5, 1e-4), "ImageNet init: the article's fine-tuning rates"),
        (["--init", "run.pth"], (1e-5, 1e-4), "checkpoint init"),
        (["--init", "random", "--lr-head", "5e-4"], (1e-3, 5e-4), "head as given, the other by random"),
        (["--init", "imagenet", "--lr-backbone", "2e-5", "--lr-head", "3e-4"], (2e-5, 3e-4), "as given"),
        (["--init", "random", "--lr-backbone", "1e-5", "--lr-head", "1e-4"], (1e-5, 1e-4), "as given"),
    ],
)
def test_learning_rate_defaults_follow_the_init_and_flags_win(argv: list[str], lrs, why: str) -> None:
    """The article's fine-tuning rates (1e-5/1e-4) only where a backbone already learned something; the
    resolution from the command line to the run's config, no training needed."""
    from sevgg_gui.cli import build_parser
    from sevgg_gui.training.cli_args import explicit_train_options
    from sevgg_gui.training.train import learning_rate_note, resolve_config

    args = build_parser().parse_args(["train", "--data", "somewhere", *argv])
    given = TrainConfig(**explicit_train_options(args))
    resolved = resolve_config(given)
    assert (resolved.lr_backbone, resolved.lr_head) == lrs
    note = learning_rate_note(given, resolved)
    assert note.startswith(f"lr {lrs[0]:g}/{lrs[1]:g} (backbone/head") and why in note


def test_lr_schedule() -> None:
    f = [lr_factor(s, 10, 2, 0.1) for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0  # warm-up, then the cosine starts at 1
    assert all(a >= b for a, b in zip(f[2:], f[3:], strict=False))
    assert f[-1] > 0.1 and lr_factor(10, 10, 2, 0.1) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------ training
def test_training_learns_fashion_mnist(fmnist: str, data_cache: Path, tmp_path: Path) -> None:
    """512 real images, 3 epochs from scratch: the loss falls and validation beats chance (10%)."""
    out = tmp_path / "fmnist.pth"
    cfg = TrainConfig(
        data=fmnist, out=str(out), cache_dir=str(data_cache), width=0.125, init="random", epochs=3,
        limit=512, val_limit=200, batch_size=32, lr_backbone=1e-3, lr_head=1e-3, augment="none",
        dropout=0.0, seed=0,
    )  # fmt: skip
    lines: list[str] = []
    result = train(cfg, log=lines.append)
    losses = [r["train_loss"] for r in result.history]
    assert losses[0] > losses[1] > losses[2], losses
    assert result.history[-1]["val_acc"] > 0.2, result.history
    assert result.history[-1]["images_per_s"] > 0
    assert any("epoch 3/3" in line and "img/s" in line for line in lines)
    # The CSV log, one row per epoch.
    rows = read_csv(out.with_suffix(".csv"))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["val_acc"]) == pytest.approx(result.history[-1]["val_acc"])
    # The checkpoint: weights_only, metadata for the app, everything needed to resume.
    payload = load_payload(out)
    assert payload["meta"]["class_names"] == FASHION and payload["meta"]["input_size"] == 32
    assert {"optimizer", "scheduler", "rng", "epoch", "config"} <= set(payload)
    assert payload["epoch"] == 3
    model, meta = load_trained(out)
    assert meta["class_names"] == FASHION and meta["width"] == 0.125
    assert_same_state(model.state_dict(), result.model.state_dict())
    # The same numbers through `sevgg eval` on the official test split.
    from sevgg_gui.training.evaluate import evaluate_checkpoint

    rep = evaluate_checkpoint(out, fmnist, split="test", limit=200, cache_dir=str(data_cache)).to_dict()
    assert rep["n"] == 200 and rep["top1"] > 0.2 and rep["top5"] >= rep["top1"]
    assert sum(r["n"] for r in rep["per_class"]) == 200


@pytest.fixture(scope="module")
def reference_run(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted 3-epoch run that resumed runs must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference") / "ref.pth"
    result = train(quick(tiny_folder, out), log=quiet)
    return result, load_payload(out)


def test_resume_reproduces_the_uninterrupted_run(reference_run, tiny_folder: Path, tmp_path: Path) -> None:
    ref, ref_payload = reference_run
    out = tmp_path / "part.pth"
    first = train(quick(tiny_folder, out, stop_after=2), log=quiet)
    assert first.epochs_done == 2 and not first.interrupted
    assert load_payload(out)["epoch"] == 2
    resumed = train(quick(tiny_folder, out, resume=str(out)), log=quiet)
    assert resumed.epochs_done == 3
    assert_same_state(resumed.model.state_dict(), ref.model.state_dict())
    payload = load_payload(out)
    assert_same_state(payload["state_dict"], ref_payload["state_dict"])
    for a, b in zip(
        payload["optimizer"]["state"].values(), ref_payload["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in resumed.history]
    assert strip == [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in ref.history
    ]


def test_ctrl_c_saves_mid_epoch_and_resumes_exactly(reference_run, tiny_folder: Path, tmp_path: Path) -> None:
    ref, _ = reference_run
    out = tmp_path / "stopped.pth"

    def ctrl_c(trainer: Trainer) -> None:
        if trainer.epoch == 1 and trainer.step_in_epoch == 2:
            signal.raise_signal(signal.SIGINT)  # what a terminal's Ctrl-C does

    before = signal.getsignal(signal.SIGINT)
    stopped = train(quick(tiny_folder, out), callbacks=Callbacks(on_step=ctrl_c), log=quiet)
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    assert stopped.interrupted and stopped.epochs_done == 1
    payload = load_payload(out)
    assert (payload["epoch"], payload["step_in_epoch"], payload["interrupted"]) == (1, 2, True)
    resumed = train(quick(tiny_folder, out, resume=str(out)), log=quiet)
    assert not resumed.interrupted
    assert_same_state(resumed.model.state_dict(), ref.model.state_dict())
    assert resumed.history[1]["train_loss"] == ref.history[1]["train_loss"]  # the split epoch's metrics


def test_hard_interrupt_still_saves(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "hard.pth"

    def boom(trainer: Trainer) -> None:
        if trainer.global_step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(quick(tiny_folder, out, epochs=1), callbacks=Callbacks(on_step=boom), log=quiet)
    payload = load_payload(out)
    assert payload["interrupted"] and payload["epoch"] == 0 and payload["global_step"] == 3


def test_stages_freeze_what_they_should(tiny_folder: Path, tmp_path: Path) -> None:
    cfg = quick(
        tiny_folder, tmp_path / "stages.pth", epochs=None, stages=[1, 1, 1], lr_backbone=1e-4, lr_head=1e-3
    )
    trainer = Trainer(cfg, log=quiet)
    snaps = [copy.deepcopy(trainer.model.state_dict())]
    trainer.callbacks.on_epoch_end = lambda t, row: snaps.append(copy.deepcopy(t.model.state_dict()))
    result = trainer.run()
    assert [r["stage"] for r in result.history] == [1, 2, 3]
    first_conv, last_conv, head = "features.0.weight", "features.28.weight", "classifier.6.weight"

    def moved(key: str, epoch: int) -> bool:
        return not torch.equal(snaps[epoch][key], snaps[epoch - 1][key])

    se_keys = [k for k in snaps[0] if ".fc." in k]
    assert any(moved(k, 1) for k in se_keys) and moved(head, 1)
    assert not moved(first_conv, 1) and not moved(last_conv, 1)
    assert moved(last_conv, 2) and not moved(first_conv, 2)
    assert moved(first_conv, 3)
    for row in result.history:  # backbone : head learning rates stay 1 : 10 along the schedule
        assert row["lr_head"] == pytest.approx(10 * row["lr_backbone"])


def test_gradient_accumulation_equals_the_bigger_batch(tiny_folder: Path, tmp_path: Path) -> None:
    # SGD: Adam's g / sqrt(g^2) would blow float rounding on near-zero gradients up to whole steps.
    kw = dict(epochs=1, dropout=0.0, augment="none", val_fraction=1 / 3, optimizer="sgd", lr_head=0.01)
    big = train(quick(tiny_folder, tmp_path / "big.pth", batch_size=16, **kw), log=quiet)
    acc = train(quick(tiny_folder, tmp_path / "acc.pth", batch_size=8, accum_steps=2, **kw), log=quiet)
    # Summing two half-batch gradients instead of one batch changes only the rounding of each step's
    # gradient (~1e-7 relative); after 3 SGD steps of lr 0.01 the weights differ by ~4e-9 (measured),
    # so 1e-6 (+1e-5 relative) leaves over two orders of margin for another CPU's rounding.
    for (k, a), b in zip(big.model.state_dict().items(), acc.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k


# ------------------------------------------------------------------------------------------ CLI
def test_cli_train_resume_and_eval(tiny_folder: Path, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "cli.pth"
    args = ["train", "--data", str(tiny_folder), "--out", str(ckpt), "--width", "0.125", "--init", "random",
            "--input-size", "32", "--epochs", "1", "--batch-size", "12", "--lr-head", "1e-3", "--seed", "5"]  # fmt: skip
    assert main(args) == 0
    assert "epoch 1/1" in capsys.readouterr().out
    # --resume with nothing else inherits the saved configuration (width, data, sizes...).
    assert main(["train", "--resume", str(ckpt), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "continuing at epoch 2 of 2" in out and "epoch 2/2" in out
    assert len(read_csv(ckpt.with_suffix(".csv"))) == 2

    png = tmp_path / "confusion.png"
    assert main(["eval", "--data", str(tiny_folder), "-c", str(ckpt), "--json", "--confusion", str(png)]) == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out)
    assert {"n", "top1", "top5", "loss", "per_class", "confusion", "class_names", "split"} <= set(rep)
    assert rep["class_names"] == list(TINY_CLASSES) and rep["topk"] == 3 and rep["top5"] == 1.0
    assert rep["n"] == 6 == sum(map(sum, rep["confusion"]))  # the held-out 10% (2 per class, seed 5)
    assert [r["class"] for r in rep["per_class"]] == list(TINY_CLASSES)
    with Image.open(png) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    assert main(["eval", "--data", str(tiny_folder), "-c", str(ckpt), "--split", "train"]) == 0
    assert "top-1" in capsys.readouterr().out
    assert (
        main(["eval", "--data", f"fashionmnist:{tmp_path}", "-c", str(ckpt)]) == 1
    )  # one line, no traceback
    assert "\n" not in capsys.readouterr().err.strip()


def test_confusion_title_keeps_the_value_apart_from_top_1() -> None:
    """ "top-1 35.9%" read as "top-135.9%" in the plot's title font: a word now stands between them."""
    from types import SimpleNamespace

    from sevgg_gui.training.evaluate import confusion_title

    report = SimpleNamespace(split="test", sums=SimpleNamespace(top1=0.359, n=300))
    assert confusion_title(report) == "test split: top-1 accuracy 35.9% on 300 images"


def test_full_size_vgg16_se_checkpoint_opens_in_the_app(tiny_folder: Path, tmp_path: Path) -> None:
    """The real VGG16_SE: what `sevgg train` writes is a plain load_checkpoint file with class names and
    input size (the app preprocesses at the trained size)."""
    from sevgg_gui.checkpoints import load_checkpoint
    from sevgg_gui.models.vgg import VGG16_SE

    trainer = Trainer(quick(tiny_folder, tmp_path / "full.pth", width=1.0), log=quiet)
    assert type(trainer.model) is VGG16_SE
    path = trainer.save()
    del trainer
    model, info = load_checkpoint(path)
    assert type(model) is VGG16_SE
    assert info.class_names == list(TINY_CLASSES) and info.metadata["input_size"] == 32  # what zoo reads
    path.unlink()


# ------------------------------------------------------------------------------------------ DDP
def test_ddp_two_cpu_ranks_match_one_process(tiny_folder: Path, tmp_path: Path) -> None:
    """torchrun --nproc_per_node=2 (gloo) vs one process with the same global batch; the stage change
    in epoch 2 re-wraps DDP around the newly trainable convs."""
    common = ["--data", str(tiny_folder), "--width", "0.125", "--init", "random", "--input-size", "32",
              "--stages", "1,1,0", "--batch-size", "12", "--dropout", "0", "--augment", "none",
              "--optimizer", "sgd", "--lr-backbone", "0.01", "--lr-head", "0.01", "--val-fraction", "0.25", "--seed", "2"]  # fmt: skip
    one = tmp_path / "one.pth"
    assert main(["train", *common, "--out", str(one)]) == 0
    two = tmp_path / "two.pth"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sevgg_gui.cli", "train", *common, "--out", str(two)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2/2") == 1  # rank 0 logs alone
    a, b = load_payload(one), load_payload(two)
    assert b["world_size"] == 2 and len(b["rng"]) == 2
    # Two ranks all-reduce (sum) their half-batch gradients: same maths, other rounding (~1e-7 per
    # step). Measured difference after 2 epochs of SGD: ~4e-9, under 0.1% of these bounds, which
    # leave room for the rounding to grow differently on another CPU.
    for k, v in a["state_dict"].items():
        assert torch.allclose(v, b["state_dict"][k], atol=1e-5, rtol=1e-4), k
    for ra, rb in zip(a["history"], b["history"], strict=True):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
        assert ra["val_acc"] == pytest.approx(rb["val_acc"], abs=0.09)  # at most one of 12 images flips
