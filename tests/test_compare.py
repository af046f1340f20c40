"""``sevgg compare``: a tiny plain-vs-SE run on real Fashion-MNIST (width 0.0625, 256 images, 2 epochs,
2 seeds) runs end to end and its JSON summary carries every reported field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from sevgg_gui.cli import main
from sevgg_gui.training.compare import _mean_std, epochs_to_reach

pytestmark = pytest.mark.usefixtures("one_thread")


def test_statistics_helpers() -> None:
    s = _mean_std([0.5, 0.7, None])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.141421, abs=1e-6) and s["n"] == 2
    assert _mean_std([None])["mean"] is None and _mean_std([0.3])["std"] == 0.0
    hist = [{"epoch": 1, "val_acc": 0.2}, {"epoch": 2, "val_acc": 0.55}, {"epoch": 3, "val_acc": 0.5}]
    assert epochs_to_reach(hist, 0.5) == 2 and epochs_to_reach(hist, 0.6) is None


def test_tiny_compare_writes_summary_and_curves(fmnist: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    cache = tmp_path / "cache"
    args = ["compare", "--data", fmnist, "--out", str(out), "--epochs", "2", "--seeds", "0,1", "--width", "0.0625",
            "--limit", "256", "--val-limit", "100", "--batch-size", "32", "--cache-dir", str(cache),
            "--device", "cpu", "--dropout", "0"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "mean ± std over 2 seed(s)" in text and "paired vgg16_se - vgg16" in text
    d = json.loads((out / "summary.json").read_text())
    assert set(d["summary"]) == {"vgg16", "vgg16_se"}
    for arch, s in d["summary"].items():
        for key in ("val_top1", "val_top5", "test_top1", "test_top5", "sec_per_epoch", "epochs_to_target"):
            assert s[key]["n"] >= (0 if key == "epochs_to_target" else 2), (arch, key)
            assert len(s[key]["values"]) == 2
        assert 0.0 <= s["test_top1"]["mean"] <= s["test_top5"]["mean"] <= 1.0
        assert s["sec_per_epoch"]["mean"] > 0 and s["params"] > 0 and s["macs"] > 0
        assert len(s["curve_val_top1"]["mean"]) == 2 and len(s["curve_train_loss"]["std"]) == 2
    assert d["summary"]["vgg16_se"]["params"] > d["summary"]["vgg16"]["params"]  # the SE blocks
    assert 0.0 < d["target_acc"] <= 1.0 and d["target_rule"].startswith("0.9")
    assert len(d["runs"]) == 4 and [r["seed"] for r in d["runs"]] == [0, 0, 1, 1]
    assert all(r["test_images"] == 100 and len(r["history"]) == 2 for r in d["runs"])
    # Same seed, same data: both architectures saw the identical subset and split.
    a, b = (
        torch.load(out / "runs" / f"{x}-seed1.pth", weights_only=True)["config"]
        for x in ("vgg16", "vgg16_se")
    )
    assert {k: v for k, v in a.items() if k not in ("arch", "out", "log_csv")} == {
        k: v for k, v in b.items() if k not in ("arch", "out", "log_csv")
    }
    with Image.open(out / "curves.png") as im:
        assert im.size[0] > 800 and im.size[1] > 300

    # --resume reuses the finished runs instead of training again (same numbers).
    assert main([*args, "--resume"]) == 0
    assert capsys.readouterr().out.count("already trained 2 of 2 epochs") == 4
    again = json.loads((out / "summary.json").read_text())
    assert [r["val_top1"] for r in again["runs"]] == [r["val_top1"] for r in d["runs"]]
    assert main(["compare", "--data", fmnist, "--out", str(out), "--seeds", "a,b"]) == 2
