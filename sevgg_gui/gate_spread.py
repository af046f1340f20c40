"""Are a model's channel gates flat? Decided from one frame's excitations, so the app can show the
squeeze view instead of five charts of identical bars.

Why the spread across channels and not the change across frames: a still image gives identical frames,
so frame-to-frame change cannot tell a trained model from an untrained one, while the spread across
channels is there in every frame. Measured on the five bundled photos (224 px), per-frame std across
channels, the largest block:

- VGG16-SE, ImageNet transfer: 0 (every gate exactly 0.5)
- VGG16-SE, random init: 0.012 (block 1; blocks 3-5 below 0.001)
- VGG16 + ECA, random init: 0.021
- VGG16 + BAM / scSE / CBAM, random init: 0.08 / 0.08 / 0.15 (bars visibly differ: left on gates)
- MobileNetV3-Small, Google's ImageNet training: 0.26 (every block but the first, whose hard-sigmoid
  gates sit at exactly 1.0, is above 0.09)

A threshold of 0.03 (3 % of the charts' 0-1 axis, about two pixels of a chart row) sits between them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

FLAT_SPREAD = 0.03


def gate_spread(excitations: Mapping[str, np.ndarray]) -> float | None:
    """The largest, over blocks, std of the gates across channels (averaged over a batch if there is
    one); None for a model without channel gates."""
    spreads = [
        float(np.asarray(v, dtype=np.float64).reshape(-1, np.shape(v)[-1]).std(axis=-1).mean())
        for v in excitations.values()
        if np.size(v) > 1
    ]
    return max(spreads) if spreads else None


def gates_flat(excitations: Mapping[str, np.ndarray], threshold: float = FLAT_SPREAD) -> bool:
    """True when every block's gates lie within ``threshold`` (std) of each other: flat bars."""
    spread = gate_spread(excitations)
    return spread is not None and spread < threshold
