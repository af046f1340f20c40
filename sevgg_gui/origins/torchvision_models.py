"""``pretrained:<name>``: a torchvision SE network with its trained weights (torchvision's weights
API, downloaded once into the torch hub cache), its categories and its own preprocessing."""

from __future__ import annotations

from .loaded import LoadedModel


def load(name: str) -> LoadedModel:
    from ..models.pretrained import load_pretrained

    try:
        p = load_pretrained(name, "DEFAULT")
    except RuntimeError as exc:  # offline and not cached: one line from load_torchvision_weights
        raise RuntimeError(str(exc).splitlines()[0]) from None
    return LoadedModel(p.model, p.model.provenance, p.class_names, transform=p.preprocess)  # type: ignore[arg-type]
