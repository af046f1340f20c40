"""`sevgg diff`: the JSON keys the issue names, the table, the figure, labels from --data, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sevgg_gui.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
from sevgg_gui.bundled import SAMPLES  # noqa: E402


@pytest.fixture(scope="module")
def labelled_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree with a test split: the bundled photos as two classes."""
    root = tmp_path_factory.mktemp("tree")
    photos = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    for split in ("train", "test"):
        for i, p in enumerate(photos):
            d = root / split / ("animal" if p.stem in ("chelsea", "astronaut") else "thing")
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, d / f"{i}{p.suffix}")
    return root


def test_json_has_the_issue_keys(slim_ckpt: Path, capsys) -> None:
    assert main(["diff", str(slim_ckpt), str(slim_ckpt), str(SAMPLES), "--json", "--device", "cpu"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"top1_agreement", "top5_agreement", "images", "blocks", "unpaired"} <= set(d)
    assert d["images"] == 5 and d["top1_agreement"] == 1.0 and d["unpaired"] == []
    for b in d["blocks"]:
        assert {"a", "b", "channels", "cosine", "spearman", "mean_abs_diff", "top10_overlap"} <= set(b)
        assert b["cosine"] == pytest.approx(1.0, abs=1e-6)  # same weights, same kernels: float rounding


def test_table_png_and_labels_from_data(slim_ckpt: Path, labelled_tree: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "out" / "diff.png"
    code = main(
        [
            "diff",
            str(slim_ckpt),
            str(slim_ckpt),
            "--data",
            str(labelled_tree),
            "--limit",
            "4",
            "--png",
            str(png),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "4 images: top-1 agreement 100.0%" in out and "classes whose mean gates moved most" in out
    assert "animal" in out and "thing" in out  # the tree's class names, from --data
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_errors_are_one_line(slim_ckpt: Path, tmp_path: Path, capsys, is_one_line) -> None:
    assert main(["diff", str(slim_ckpt), str(tmp_path / "missing.pth"), str(SAMPLES)]) == 1
    assert is_one_line(capsys.readouterr().err.strip())
    assert main(["diff", str(slim_ckpt), str(slim_ckpt)]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["diff", str(slim_ckpt), str(slim_ckpt), str(tmp_path)]) == 2  # an empty folder
    assert "no images found" in capsys.readouterr().err
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    good = SAMPLES / "coffee.png"
    assert main(["diff", str(slim_ckpt), str(slim_ckpt), str(bad), str(good), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["images"] == 1  # went on past the bad file
    assert "broken.png" in captured.err and all(is_one_line(x) for x in captured.err.strip().splitlines())
