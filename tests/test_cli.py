"""The real ``sevgg`` entry point in subprocesses: output, exit codes, one-line errors, exports.

Each invocation imports torch (seconds), so there are exactly eight, started together once per module
(three at a time, one thread each, on a small machine) and inspected by the tests below.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sevgg_gui.checkpoints import save_checkpoint
from sevgg_gui.models.vgg import VGG16_SE

SEVGG = Path(sys.executable).parent / ("sevgg.exe" if os.name == "nt" else "sevgg")
CLASSES = ["alpha", "beta", "gamma"]
CHANNELS = {"features.4": 64, "features.10": 128, "features.18": 256, "features.26": 512, "features.34": 512}
SE_PER_IMAGE = sum(CHANNELS.values())  # 1,472 gates per image


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    save_checkpoint(VGG16_SE(num_classes=3), d / "tiny.pth", class_names=CLASSES)
    imgs = d / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(imgs / "good1.png")
    Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)).save(imgs / "good2.jpg")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (imgs / "readme.txt").write_text("not an image, and not named like one: skipped\n")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _RunsShell(d / "pwned")}, d / "evil.pth")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SEVGG_DEBUG", None)  # it turns the one-line errors back into tracebacks
    return subprocess.run(
        [str(SEVGG), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def runs(work: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    imgs = work / "imgs"
    ck = ["--checkpoint", str(work / "tiny.pth"), "--device", "cpu"]
    jobs = {
        "info": ["info"],
        "info_json": ["info", "--json"],
        "predict": ["predict", str(imgs), *ck],
        "predict_json": ["predict", str(imgs / "good1.png"), str(work / "missing.png"), "--json", *ck],
        "excite_csv": ["excite", str(imgs), *ck, "--out", str(work / "x.csv")],
        "excite_npz": [
            "excite",
            str(imgs / "good1.png"),
            str(imgs / "good2.jpg"),
            *ck,
            "--out",
            str(work / "x.npz"),
        ],
        "evil": ["predict", str(imgs / "good1.png"), "--checkpoint", str(work / "evil.pth")],
    }
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(_run, args, work) for name, args in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def _no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stdout and "Traceback" not in p.stderr, p.stderr


def test_help_is_fast(work: Path) -> None:
    assert SEVGG.exists(), SEVGG
    t0 = time.perf_counter()
    p = _run(["--help"], work)
    elapsed = time.perf_counter() - t0
    assert p.returncode == 0 and "predict" in p.stdout and "excite" in p.stdout and "info" in p.stdout
    assert elapsed < 2.0, elapsed  # no torch import for --help (~0.05 s here; torch alone takes seconds)


def test_info(runs) -> None:
    p = runs["info"]
    assert p.returncode == 0, p.stderr
    _no_traceback(p)
    out = p.stdout
    assert "76,288" in out and "0.055%" in out
    for i, (name, params) in enumerate(
        zip(CHANNELS, ["512", "2,048", "8,192", "32,768", "32,768"], strict=True), 1
    ):
        assert re.search(rf"SE{i} {re.escape(name)}\s+\d+\s+\d+\s+{params}\s", out), name
    assert "138,433,832" in out


def test_info_json(runs) -> None:
    p = runs["info_json"]
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["se_params"] == 76_288
    assert data["total_params"] == 138_357_544 + 76_288
    assert [b["params"] for b in data["blocks"]] == [512, 2_048, 8_192, 32_768, 32_768]
    assert [b["name"] for b in data["blocks"]] == list(CHANNELS)
    assert f"{100 * data['se_share']:.3f}" == "0.055"
    assert (data["num_classes"], data["reduction"]) == (1000, 16)


def test_predict_folder_with_a_corrupt_image(runs, work: Path) -> None:
    p = runs["predict"]
    _no_traceback(p)
    assert p.returncode == 1
    imgs = work / "imgs"
    assert str(imgs / "good1.png") in p.stdout and str(imgs / "good2.jpg") in p.stdout
    assert "broken.jpg" not in p.stdout and "readme.txt" not in p.stdout + p.stderr
    assert sum(p.stdout.count(name) for name in CLASSES) == 2 * 3  # top-k capped at the 3 classes
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2, p.stderr  # one line for the bad file, one summary
    assert "broken.jpg" in lines[0] and "sevgg:" in lines[0]
    assert "1 of 3 inputs failed" in lines[1] and "broken.jpg" in lines[1]


def test_predict_json_with_a_missing_image(runs, work: Path) -> None:
    p = runs["predict_json"]
    _no_traceback(p)
    assert p.returncode == 1
    rows = json.loads(p.stdout)
    assert [r["image"] for r in rows] == [str(work / "imgs" / "good1.png")]
    topk = rows[0]["topk"]
    assert [t["label"] for t in topk] and {t["label"] for t in topk} == set(CLASSES)
    assert sum(t["prob"] for t in topk) == pytest.approx(1.0, abs=1e-4)
    assert set(rows[0]["ms"]) == {"preprocess", "model", "postprocess"}
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2, p.stderr
    assert "missing.png" in lines[0] and "no such file" in lines[0]
    assert "1 of 2 inputs failed" in lines[1]


def test_excite_csv(runs, work: Path) -> None:
    p = runs["excite_csv"]
    _no_traceback(p)
    assert p.returncode == 1  # broken.jpg; the good images are still written
    assert "wrote 2 image(s) x 5 blocks" in p.stdout
    with open(work / "x.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * SE_PER_IMAGE == 2 * 1472
    assert list(rows[0]) == ["image", "block", "channel", "excitation", "squeeze"]
    per_image = Counter(r["image"] for r in rows)
    assert sorted(Path(k).name for k in per_image) == ["good1.png", "good2.jpg"]
    assert set(per_image.values()) == {1472}
    assert Counter(r["block"] for r in rows) == {b: 2 * c for b, c in CHANNELS.items()}
    gates = np.array([float(r["excitation"]) for r in rows])
    assert gates.min() >= 0 and gates.max() <= 1 and gates.std() > 0
    assert all(r["squeeze"] != "" for r in rows)
    assert [int(r["channel"]) for r in rows[:64]] == list(range(64))


def test_excite_npz(runs, work: Path) -> None:
    p = runs["excite_npz"]
    _no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    with np.load(work / "x.npz") as z:
        data = {k: z[k] for k in z.files}
    assert [Path(str(s)).name for s in data["images"]] == ["good1.png", "good2.jpg"]
    for block, c in CHANNELS.items():
        assert data[f"{block}/excitation"].shape == (2, c)
        assert data[f"{block}/squeeze"].shape == (2, c)
        assert ((data[f"{block}/excitation"] >= 0) & (data[f"{block}/excitation"] <= 1)).all()
    assert data["top5_index"].shape == data["top5_prob"].shape == data["top5_label"].shape == (2, 3)
    assert set(data["top5_label"].ravel()) == set(CLASSES)
    # The same images in the CSV run give the same gates.
    with open(work / "x.csv", newline="") as f:
        csv_gates = [float(r["excitation"]) for r in csv.DictReader(f) if r["image"].endswith("good1.png")]
    npz_gates = np.concatenate([data[f"{b}/excitation"][0] for b in CHANNELS])
    assert np.allclose(csv_gates, npz_gates, rtol=1e-5, atol=1e-6)


def test_malicious_checkpoint(runs, work: Path) -> None:
    p = runs["evil"]
    _no_traceback(p)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "evil.pth" in lines[0] and "refused" in lines[0]
    assert p.stdout == ""
    assert not (work / "pwned").exists()
