"""Flat gates are told from trained ones on real photos: the rule behind the app's automatic squeeze view."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sevgg_gui.gate_spread import FLAT_SPREAD, gate_spread, gates_flat
from sevgg_gui.images import Preprocess, load_image
from sevgg_gui.inference import Predictor
from sevgg_gui.models.vgg import CFGS, VGGSE, neutralise_se

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg")


def _spreads(model: torch.nn.Module, photos, crop: int) -> list[float]:
    pre = Preprocess(crop_size=crop, resize_size=crop * 8 // 7)
    with Predictor(model.eval(), device="cpu", class_names=None, preprocess=pre) as p:
        return [gate_spread(p.predict(load_image(photos / n)).excitations) for n in PHOTOS]


def test_no_gates_and_exact_half():
    assert gate_spread({}) is None and not gates_flat({})
    half = {"a": np.full(64, 0.5, np.float32), "b": np.full((2, 128), 0.5, np.float32)}
    assert gate_spread(half) == 0.0 and gates_flat(half)
    assert not gates_flat({**half, "c": np.array([0.1, 0.9], np.float32)})  # one lively block is enough


def test_random_vgg16_se_is_flat(se10, photos):
    assert max(_spreads(se10, photos, 32)) < FLAT_SPREAD  # measured 0.004-0.012 (see gate_spread.py)


def test_transferred_gates_are_flat_trained_like_are_not(photos):
    torch.manual_seed(0)
    transferred = neutralise_se(VGGSE(CFGS["vgg16"], num_classes=3, width=0.25))
    assert _spreads(transferred, photos, 32) == [0.0] * len(PHOTOS)  # sigmoid(0) is exactly 0.5
    lively = VGGSE(CFGS["vgg16"], num_classes=3, width=0.25)
    with torch.no_grad():
        for _, block in lively.se_blocks():
            block.fc[2].weight.mul_(40.0)  # gates that depend on the input, as training makes them
    assert min(_spreads(lively, photos, 32)) > FLAT_SPREAD


def test_googles_trained_mobilenet_v3_small_is_not_flat(shared_dir, photos):
    weights = shared_dir / "weights" / "mobilenet_v3_small-tfslim_uint8-distilled.pth"
    if not weights.exists():
        pytest.skip(f"{weights} not found")
    from sevgg_gui.zoo import load_model

    loaded = load_model(str(weights))
    spreads = _spreads(loaded.model, photos, 224)
    # measured 0.26-0.27 on these photos: ten times the threshold, not a near call
    assert min(spreads) > 3 * FLAT_SPREAD
