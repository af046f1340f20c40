"""``vgg16:<attention>``: VGG16 with another attention block (sse, scse, bam, cbam, eca), random init."""

from __future__ import annotations

from .loaded import RANDOM_WARNING, LoadedModel


def load(kind: str) -> LoadedModel:
    from ..models.networks import vgg16_attention

    model = vgg16_attention(kind).eval()
    return LoadedModel(model, f"VGG16 + {kind}, random initialisation", warning=RANDOM_WARNING)
