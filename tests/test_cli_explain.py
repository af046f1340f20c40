"""`sevgg explain` on the bundled photos with a slim VGG16-SE checkpoint (32 px): files, NPZ contents in the
input image's pixel coordinates, a bad image in the batch, class by name, and bad options."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sevgg_gui.bundled import SAMPLES
from sevgg_gui.cli import main
from sevgg_gui.images import Preprocess, load_image

BLOCKS = ("features.4", "features.10", "features.18", "features.26", "features.34")


@pytest.fixture(scope="module")
def photos_with_a_bad_one(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("explain_in")
    for p in SAMPLES.iterdir():
        if p.suffix in (".png", ".jpg"):
            shutil.copy(p, d / p.name)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return d


def test_explain_the_bundled_photos(
    slim_ckpt: Path, photos_with_a_bad_one: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    code = main(
        ["explain", str(photos_with_a_bad_one), "-c", str(slim_ckpt), "--device", "cpu", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 1  # one bad image: the batch goes on, and says so at the end
    err_lines = captured.err.strip().splitlines()
    assert any(line.startswith("sevgg: broken.jpg:") for line in err_lines), captured.err
    assert err_lines[-1].startswith("sevgg: 1 of 6 inputs failed"), captured.err
    assert "Traceback" not in captured.err
    names = sorted(p.stem for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    assert sorted(p.stem for p in out.glob("*.npz")) == names
    assert sorted(p.stem for p in out.glob("*.png")) == names
    pre = Preprocess(crop_size=32, resize_size=round(32 * 256 / 224))  # the checkpoint's input_size
    for name in names:
        src = next(SAMPLES.glob(f"{name}.*"))
        rgb = load_image(src)
        z = np.load(out / f"{name}.npz")
        cam = z["cam"]
        assert cam.shape == rgb.shape[:2] and cam.dtype == np.float32
        top, left, ch, cw = pre.crop_box(*rgb.shape[:2])
        inside = cam[top : top + ch, left : left + cw]
        assert np.isfinite(inside).all() and (inside >= 0).all()
        assert np.isnan(cam).sum() == cam.size - inside.size  # NaN exactly outside the crop
        assert 0 <= int(z["class_index"]) < 10
        for b, c in zip(BLOCKS, (8, 16, 32, 64, 64), strict=True):  # width 0.125
            assert z[f"{b}/evidence"].shape == (c,) and z[f"{b}/gate"].shape == (c,)
            assert np.isfinite(z[f"{b}/evidence"]).all()
            assert ((z[f"{b}/gate"] >= 0) & (z[f"{b}/gate"] <= 1)).all()
        png = Image.open(out / f"{name}.png")
        assert png.size == (rgb.shape[1], rgb.shape[0]) and png.mode == "RGB"
    assert len(captured.out.strip().splitlines()) == 5


def test_explain_a_named_class_with_eigencam(slim_ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    args = ["explain", str(SAMPLES / "chelsea.png"), "-c", str(slim_ckpt), "--out", str(out)]
    assert main([*args, "--class", "c7", "--method", "eigencam", "--layer", "features.34"]) == 0
    z = np.load(out / "chelsea.npz")
    assert int(z["class_index"]) == 7 and str(z["method"]) == "eigencam" and str(z["layer"]) == "features.34"
    capsys.readouterr()
    assert main([*args, "--class", "zebra"]) == 2
    assert capsys.readouterr().err.strip() == "sevgg: no class named 'zebra'"
    assert main([*args, "--layer", "nope"]) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err
