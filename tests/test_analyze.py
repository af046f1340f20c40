"""``sevgg analyze``: class-wise excitation statistics on real Fashion-MNIST images, checked against a
direct numpy computation over what the recorder saw, and the NPZ format the app will read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sevgg_gui.analysis_classwise import (
    ClassProfiles,
    _RunningClassStats,
    analyze_checkpoint,
    checkpoint_dataset,
    class_profile,
    class_profile_panels,
    load_class_profiles,
    plot_class_profiles,
)
from sevgg_gui.checkpoints import save_checkpoint
from sevgg_gui.cli import main
from sevgg_gui.recorder import ExcitationRecorder
from sevgg_gui.training.models import build_model, load_trained, model_metadata

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

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("analyze-cache"))


def _save(model: torch.nn.Module, path: Path, arch: str) -> Path:
    return save_checkpoint(
        model, path, class_names=FASHION, **model_metadata(arch, 0.125, 16, 0.5), input_size=32, split_seed=0
    )


@pytest.fixture(scope="module")
def slim_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slim VGG16-SE whose SE weights are spread out, so gates differ clearly between images."""
    torch.manual_seed(0)
    model = build_model("vgg16_se", 10, width=0.125)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".fc." in name:
                p.mul_(6.0)
    return _save(model, tmp_path_factory.mktemp("analyze") / "slim.pth", "vgg16_se")


def test_running_stats_match_numpy_with_an_absent_class() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((50, 7)) * 1e-3 + 0.5  # nearly constant: the naive E[x^2] - E[x]^2 would lose digits
    y = rng.choice([0, 1, 3], size=50)  # class 2 never appears
    acc = _RunningClassStats(4, 7)
    for lo in range(0, 50, 8):  # uneven batches, classes split across them
        acc.update(x[lo : lo + 8], y[lo : lo + 8])
    for k in (0, 1, 3):
        # Two float64 summation orders of <= 50 values near 0.5: each mean is within n * eps * max|x|
        # (50 * 1.1e-16 * 0.501 = 2.8e-15) of the exact one, so they differ by at most ~5.6e-15.
        np.testing.assert_allclose(acc.mean[k], x[y == k].mean(0), rtol=0, atol=1e-14)
        np.testing.assert_allclose(acc.std()[k], x[y == k].std(0), rtol=1e-9)
    assert acc.n.tolist() == [int((y == k).sum()) for k in range(4)] and acc.n[2] == 0


def test_class_stats_equal_a_direct_computation(
    slim_ckpt: Path, fmnist: str, cache: str, tmp_path: Path
) -> None:
    prof = analyze_checkpoint(
        slim_ckpt, fmnist, split="test", limit=60, batch_size=16, cache_dir=cache, device="cpu"
    )
    assert prof.classes == FASHION and prof.blocks == [
        "features.4",
        "features.10",
        "features.18",
        "features.26",
        "features.34",
    ]

    # Direct: the same 60 test images in one forward, gates straight from the recorder, numpy statistics.
    model, meta = load_trained(slim_ckpt)
    dataset, _ = checkpoint_dataset(meta, fmnist, split="test", limit=60, cache_dir=cache)
    xs = torch.stack([dataset[i][0] for i in range(len(dataset))])
    ys = np.array([dataset[i][1] for i in range(len(dataset))])
    with ExcitationRecorder(model) as rec, torch.inference_mode():
        logits = model(xs)
        gates = {k: v.double().numpy() for k, v in rec.excitations.items()}
    assert np.bincount(ys, minlength=10).tolist() == [6] * 10
    spread = []
    for block, g in gates.items():
        mean = np.stack([g[ys == k].mean(0) for k in range(10)])
        std = np.stack([g[ys == k].std(0) for k in range(10)])
        # Batches of 16 against one of 60 may take other conv kernels: float32 gates in [0, 1] then
        # differ by a few ulps (6e-8 each); 2e-6 is ~30 ulps of 1.0, far below any real difference.
        np.testing.assert_allclose(prof.mean[block], mean, atol=2e-6)
        np.testing.assert_allclose(prof.std[block], std, atol=2e-6)
        assert prof.count[block].tolist() == [6] * 10
        spread.append(std.max())
    assert max(spread) > 1e-3  # gates really vary, so the comparison means something
    acc = [(logits.argmax(1).numpy()[ys == k] == k).mean() for k in range(10)]
    np.testing.assert_allclose(prof.accuracy, acc)

    # The NPZ: exactly the documented keys, numpy-only loading, and the loader the app will use.
    path = prof.save(tmp_path / "stats.npz")
    with np.load(path, allow_pickle=False) as z:
        assert z["classes"].tolist() == FASHION
        assert z["features.34/mean"].shape == (10, 64) and z["features.34/std"].shape == (10, 64)
        assert z["features.4/count"].tolist() == [6] * 10
    loaded = load_class_profiles(path)
    assert loaded["classes"] == FASHION and list(loaded["blocks"]) == prof.blocks
    mean, std = class_profile(loaded, "features.26", "Bag")
    np.testing.assert_allclose(mean, prof.mean["features.26"][8], atol=1e-6)  # float32 in the NPZ
    np.testing.assert_allclose(std, class_profile(loaded, "features.26", 8)[1])
    assert loaded["meta"]["split"] == "test"


def test_cli_analyze_writes_npz_and_png(
    slim_ckpt: Path, fmnist: str, cache: str, tmp_path: Path, capsys
) -> None:
    out, png = tmp_path / "stats.npz", tmp_path / "profiles.png"
    rc = main(["analyze", "--data", fmnist, "-c", str(slim_ckpt), "--out", str(out), "--png", str(png),
               "--limit", "40", "--cache-dir", cache, "--device", "cpu"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "5 blocks x 10 classes over 40 test images" in text and "between-class spread" in text
    assert "plot (delta view)" in text  # the default: differences from the all-class mean
    assert load_class_profiles(out)["blocks"]["features.4"]["count"].sum() == 40
    with Image.open(png) as im:
        assert im.size[0] > 600 and im.size[1] > 500
        assert len(im.convert("RGB").getcolors(1 << 16) or []) > 8  # coloured lines, not a blank canvas

    # A model without SE blocks: one line, no traceback.
    plain = _save(build_model("vgg16", 10, width=0.125), tmp_path / "plain.pth", "vgg16")
    assert main(["analyze", "--data", fmnist, "-c", str(plain), "--out", str(tmp_path / "x.npz"),
                 "--limit", "10", "--cache-dir", cache]) == 1  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no recordable attention blocks" in err
    with pytest.raises(ValueError, match="not a class-profile NPZ"):
        np.savez(tmp_path / "other.npz", a=np.zeros(2))
        load_class_profiles(tmp_path / "other.npz")


def test_meta_copy_shares_no_storage_and_gives_the_same_cost() -> None:
    """The app computes the cost table on a meta copy on a helper thread while the worker runs the
    real model: the copy must hold no real tensors and analyse identically."""
    import torch

    from sevgg_gui.analysis import meta_copy, model_cost
    from sevgg_gui.models.vgg import VGG16_SE

    model = VGG16_SE(num_classes=3).eval()
    shadow = meta_copy(model)
    assert all(p.is_meta for p in shadow.parameters()) and all(not p.is_meta for p in model.parameters())
    assert model_cost(shadow, (32, 32)) == model_cost(model, (32, 32))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)  # the original is untouched


def _small_spread_profiles() -> ClassProfiles:
    """Gates 0.5 +- 0.01 by class (what a briefly trained model shows), class 3 never seen (NaN)."""
    from collections import OrderedDict

    rng = np.random.default_rng(0)
    mean = 0.5 + 0.01 * rng.standard_normal((4, 12))
    mean[3] = np.nan
    od = OrderedDict(b=mean)
    return ClassProfiles(
        ["a", "b", "c", "d"], od, OrderedDict(b=np.zeros_like(mean)), OrderedDict(b=np.ones(4))
    )


def test_default_profile_view_shows_small_differences() -> None:
    prof = _small_spread_profiles()
    panels, title = class_profile_panels(prof)  # default: delta
    (panel,) = panels
    assert "minus the mean over all classes" in title and "all-class mean" in panel.ylabel
    ys = np.stack([np.asarray(s.y) for s in panel.series])
    seen = prof.mean["b"][:3]
    np.testing.assert_allclose(ys[:3], seen - seen.mean(axis=0), atol=1e-12)  # float64 throughout
    assert np.isnan(ys[3]).all()  # an unseen class draws nothing and does not shift the others
    lo, hi = panel.ylim
    spread = float(np.nanmax(np.abs(ys)))
    assert lo == -hi and spread < hi <= 1.2 * spread  # fitted: the lines fill the panel's height
    assert panel.hline == 0.0
    # The 0..1 view stays available, and the fitted one; an unknown view is one clear error.
    (absolute,), abs_title = class_profile_panels(prof, view="absolute")
    assert absolute.ylim == (0.0, 1.0) and "0..1" in abs_title
    (fitted,), _ = class_profile_panels(prof, view="fitted")
    assert fitted.ylim is None and "fitted" in fitted.ylabel
    with pytest.raises(ValueError, match="unknown view"):
        class_profile_panels(prof, view="log")


@pytest.mark.parametrize("view", ["delta", "absolute"])
def test_profile_png_is_drawn_for_each_view(view: str, tmp_path: Path) -> None:
    path = plot_class_profiles(_small_spread_profiles(), tmp_path / f"{view}.png", view=view)
    with Image.open(path) as im:
        assert im.size[0] > 300 and len(im.convert("RGB").getcolors(1 << 16) or []) > 8
