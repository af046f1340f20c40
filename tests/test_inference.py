"""Predictor on a real (small-input) VGG16-SE: results, excitations, maps, batches, hooks, devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sevgg_gui.images import ImageError, Preprocess
from sevgg_gui.inference import InferenceError, Predictor, Result, default_class_names

NAMES = [f"thing {i}" for i in range(10)]
CHANNELS = {"features.4": 64, "features.10": 128, "features.18": 256, "features.26": 512, "features.34": 512}


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(42)
    return [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture
def predictor(se10: nn.Module):
    p = Predictor(se10, device="cpu", class_names=NAMES, preprocess=Preprocess(crop_size=32, resize_size=36))
    yield p
    p.close()


def test_result(predictor: Predictor) -> None:
    result = predictor.predict(frames(1)[0], topk=5)
    assert isinstance(result, Result)
    probs = [p.prob for p in result.topk]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
    assert len({p.index for p in result.topk}) == 5
    assert all(p.label == NAMES[p.index] for p in result.topk)  # class_names used
    assert result.top1 == result.topk[0]
    assert list(result.excitations) == list(CHANNELS)
    for name, c in CHANNELS.items():
        gates = result.excitations[name]
        assert isinstance(gates, np.ndarray) and gates.shape == (c,)
        assert gates.min() >= 0.0 and gates.max() <= 1.0 and gates.std() > 0
        assert result.squeezes[name].shape == (c,)
    assert result.feature_maps == {}
    assert set(result.timings) == {"preprocess", "model", "postprocess"}
    assert all(v >= 0 for v in result.timings.values())
    assert result.image.shape == (48, 64, 3)


def test_topk_is_capped_by_the_class_count(predictor: Predictor) -> None:
    result = predictor.predict(frames(1)[0], topk=50)
    assert len(result.topk) == 10
    assert sum(p.prob for p in result.topk) == pytest.approx(1.0, abs=1e-5)


def test_maps_for_one_block(se10: nn.Module) -> None:
    with Predictor(
        se10,
        device="cpu",
        preprocess=Preprocess(crop_size=32, resize_size=36),
        maps_for=["features.10"],
        map_size=8,
    ) as p:
        result = p.predict(frames(1)[0])
        assert list(result.feature_maps) == ["features.10"]
        before, after = result.feature_maps["features.10"]
        assert before.shape == after.shape == (128, 8, 8)
        gate = result.excitations["features.10"][:, None, None]
        assert np.allclose(after, before * gate, rtol=1e-4, atol=1e-6)
        p.set_maps_for(["features.34"])
        result = p.predict(frames(1)[0])
        assert list(result.feature_maps) == ["features.34"]
        assert result.feature_maps["features.34"][0].shape == (512, 2, 2)
        assert p.block_names == list(CHANNELS)
    assert hook_count(se10) == 0


def test_predict_batch_equals_single_predictions(predictor: Predictor, tmp_path: Path) -> None:
    imgs: list = frames(2)
    path = tmp_path / "third.png"
    Image.fromarray(frames(3)[2]).save(path)
    imgs += [path, Image.open(path)]
    batch = predictor.predict_batch(imgs, topk=3)
    assert len(batch) == 4
    singles = [predictor.predict(im, topk=3) for im in imgs]
    for b, s in zip(batch, singles, strict=True):
        assert [p.index for p in b.topk] == [p.index for p in s.topk]
        for name in CHANNELS:
            assert np.allclose(b.excitations[name], s.excitations[name], rtol=1e-4, atol=1e-6)
    assert np.allclose(batch[2].excitations["features.4"], batch[3].excitations["features.4"])  # same image
    assert not np.allclose(batch[0].excitations["features.4"], batch[1].excitations["features.4"])


def test_bgr_frames(predictor: Predictor) -> None:
    rgb = frames(1)[0]
    a = predictor.predict(rgb)
    b = predictor.predict(np.ascontiguousarray(rgb[..., ::-1]), bgr=True)
    assert np.array_equal(b.image, rgb)
    assert np.allclose(a.excitations["features.4"], b.excitations["features.4"])


def test_close_leaves_no_hooks(se10: nn.Module) -> None:
    p = Predictor(
        se10, device="cpu", preprocess=Preprocess(crop_size=32, resize_size=36), maps_for=["features.4"]
    )
    assert hook_count(se10) > 0
    p.predict(frames(1)[0])
    p.close()
    assert hook_count(se10) == 0
    p.close()  # twice is fine


def test_default_class_names(se10: nn.Module) -> None:
    with Predictor(se10, device="cpu", preprocess=Preprocess(crop_size=32, resize_size=36)) as p:
        assert p.class_names == [f"class {i}" for i in range(10)]
        assert p.predict(frames(1)[0]).top1.label.startswith("class ")
    imagenet = default_class_names(1000)
    assert len(imagenet) == 1000 and imagenet[0] == "tench"


def test_bad_image_raises_image_error(predictor: Predictor, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match="bad.jpg"):
        predictor.predict(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_cuda_without_a_gpu_is_an_inference_error(se10: nn.Module) -> None:
    with pytest.raises(InferenceError) as info:
        Predictor(se10, device="cuda")
    assert "\n" not in str(info.value) and "CUDA" in str(info.value)
    assert hook_count(se10) == 0


def test_fast_path_trial_keeps_the_faster_path_by_its_minimum() -> None:
    from sevgg_gui.inference import FastPathTrial

    trial = FastPathTrial(timed=2)
    # (fused?, seconds per image) as the predictor alternates; the first of each is warm-up and ignored
    calls = [(True, 9.0), (False, 9.0), (True, 0.70), (False, 0.30), (True, 0.65)]
    assert trial.next_fused()  # it starts with the fused path
    for fused, sec in calls:
        assert trial.record(fused, sec) is None
    assert trial.record(False, 0.50) is False  # eager's best 0.30 < fused's best 0.65
    assert "eager kept" in (trial.verdict or "")
    fused_wins = FastPathTrial(timed=1)
    for fused, sec in [(True, 5.0), (False, 1.0), (True, 0.2)]:
        assert fused_wins.record(fused, sec) is None
    assert fused_wins.record(False, 0.4) is True


def test_the_automatic_fast_path_is_decided_on_the_first_calls_and_results_hold(se10: nn.Module) -> None:
    """Whichever path the timing picks on this CPU, the predictor ends the trial with one path and
    the same answers (the two paths agree to float rounding: probabilities within 1e-4)."""
    pred = Predictor(se10, device="cpu")
    if pred.fast_trial is None:
        pytest.skip("no automatic CPU fast path here (oneDNN fusion unavailable or SEVGG_FAST=0)")
    img = (np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(48, 40, 3)
    first = pred.predict(img)
    for _ in range(5):
        pred.predict(img)
    assert pred.fast_trial is None and pred.fast_path_verdict
    assert (pred.fast_path is not None) == pred.fused == pred.fast_path_verdict.startswith("fused")
    after = pred.predict(img)
    assert [p.index for p in after.topk] == [p.index for p in first.topk]
    np.testing.assert_allclose([p.prob for p in after.topk], [p.prob for p in first.topk], atol=1e-4)
    for name, gate in first.excitations.items():
        np.testing.assert_allclose(after.excitations[name], gate, atol=1e-5)
    pred.close()


def test_the_allocator_keeps_freed_memory_once_per_process_on_glibc() -> None:
    import platform

    from sevgg_gui import allocator

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are glibc's")
    assert allocator.keep_freed_memory() is True  # a CPU Predictor may have done it already: same answer
    assert allocator.keep_freed_memory() is True
