"""Trained SE networks from torchvision: MobileNetV3 Small/Large, EfficientNet-B0, RegNetY-400MF.

All four use torchvision's ``SqueezeExcitation``, which the recorder already understands, so their
gates can be watched on real images. ``load_pretrained`` takes torchvision's weights API (downloaded
once through the hub cache, as torchvision itself does) or a local file / state dict, recognised from
its keys and shapes by :func:`detect_torchvision_arch`. Class names and preprocessing come from the
weights enum's metadata, which needs no download.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..images import Preprocess

ARCHS: tuple[str, ...] = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf")
# Preprocessing assumed for local files: torchvision's classic resize-256 / crop-224 recipe.
LOCAL_FILE_RECIPE = "IMAGENET1K_V1"


class Pretrained(NamedTuple):
    """What a caller needs to classify: unpacks as ``model, class_names, preprocess = ...``."""

    model: nn.Module
    class_names: list[str]
    preprocess: Preprocess


def _check_arch(name: str) -> str:
    if name not in ARCHS:
        raise ValueError(f"unknown pretrained SE network {name!r}; available: {', '.join(ARCHS)}")
    return name


def weights_enum(name: str) -> Any:
    """torchvision's weights enum class for ``name`` (e.g. ``MobileNet_V3_Small_Weights``)."""
    from torchvision.models import get_model_weights

    return get_model_weights(_check_arch(name))


@functools.cache
def _reference(arch: str) -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    """Key -> shape of the stock model and the classifier-head keys (whose class count may differ).

    Built on the meta device where possible (no memory, no init cost); RegNet computes its widths
    with tensors, so it is built on the CPU once.
    """
    from torchvision.models import get_model

    try:
        with torch.device("meta"):
            model = get_model(arch, weights=None)
    except NotImplementedError:
        model = get_model(arch, weights=None)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    head_name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return shapes, frozenset({f"{head_name}.weight", f"{head_name}.bias"})


def detect_torchvision_arch(state_dict: Mapping[str, Any]) -> str | None:
    """Which of :data:`ARCHS` a state dict is, from its exact key set and shapes; ``None`` if none.

    Only the final classifier's number of classes may differ from torchvision's 1000.
    """
    for arch in ARCHS:
        shapes, head = _reference(arch)
        if set(state_dict) == set(shapes) and all(
            _shape_ok(tuple(getattr(state_dict[k], "shape", ())), ref, k in head) for k, ref in shapes.items()
        ):
            return arch
    return None


def _shape_ok(got: tuple[int, ...], ref: tuple[int, ...], is_head: bool) -> bool:
    """Exact shape, except the classifier head's first dimension (the number of classes)."""
    return (len(got) == len(ref) and got[1:] == ref[1:]) if is_head else got == ref


def _num_classes(state_dict: Mapping[str, Any], arch: str) -> int:
    _, head = _reference(arch)
    weight = next(k for k in head if k.endswith(".weight"))
    return int(state_dict[weight].shape[0])


def _resolve_enum(name: str, weights: Any) -> Any | None:
    """The weights enum member ``weights`` names (``"DEFAULT"``, ``"IMAGENET1K_V1"``, the enum), or None."""
    enum = weights_enum(name)
    if isinstance(weights, enum):
        return weights
    if isinstance(weights, str):
        member = weights.rsplit(".", 1)[-1] if weights.startswith(enum.__name__ + ".") else weights
        if member in enum.__members__:
            return enum[member]
    return None


def _read(weights: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict, str]:
    from ..statedict import read_state_dict, unwrap_state_dict

    if isinstance(weights, Mapping):
        sd, meta, _notes = unwrap_state_dict(weights)
        return sd, meta, "state dict"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{weights}: no such file (nor a torchvision weights name such as 'DEFAULT')")
    sd, meta, _notes = read_state_dict(path)
    return sd, meta, f"file {path.name}"


def load_pretrained(
    name: str | None = None,
    weights: Any = "DEFAULT",
    *,
    allow_download: bool = True,
) -> Pretrained:
    """Build one of :data:`ARCHS` with trained weights; returns ``(model, class_names, preprocess)``.

    ``weights``: ``"DEFAULT"`` or another member name of the torchvision weights enum (read from the
    torch hub cache, downloaded there when absent and ``allow_download``); a path to a ``.pth`` /
    ``.safetensors`` state dict or a state dict (architecture checked, or detected when ``name`` is
    None; any class count); ``None`` for random weights. The model comes back in eval mode with
    ``provenance`` and ``class_names`` attributes (which :class:`~sevgg_gui.inference.Predictor` reads).
    """
    from torchvision.models import get_model

    from .vgg import cached_weights_path, load_torchvision_weights

    if name is None and isinstance(weights, str) and weights.isupper() and not Path(weights).exists():
        raise ValueError(f"torchvision weights {weights!r} need a network name: one of {', '.join(ARCHS)}")
    enum_member = _resolve_enum(name, weights) if name is not None and weights is not None else None
    meta: dict = {}
    if weights is None:
        if name is None:
            raise ValueError("give a network name or a weights file")
        arch, sd, provenance = _check_arch(name), None, "random initialisation"
    elif enum_member is not None:
        arch = name  # type: ignore[assignment]
        hint = f"open a local state-dict file of {name} as a checkpoint (it is recognised)"
        if not allow_download and not cached_weights_path(enum_member).exists():
            raise RuntimeError(f"{enum_member} is not cached at {cached_weights_path(enum_member)}; {hint}")
        sd, provenance = load_torchvision_weights(enum_member, hint=hint), f"torchvision {enum_member}"
    else:
        if name is not None:
            _check_arch(name)
            if isinstance(weights, str) and not Path(weights).exists() and weights.isupper():
                members = ", ".join(weights_enum(name).__members__)
                raise ValueError(f"unknown weights {weights!r} for {name}; use {members} or a file path")
        sd, meta, provenance = _read(weights)
        detected = detect_torchvision_arch(sd)
        if detected is None:
            raise ValueError(f"{provenance} is not a torchvision {name or ' / '.join(ARCHS)} state dict")
        if name is not None and detected != name:
            raise ValueError(f"{provenance} holds {detected} weights, not {name}")
        arch = detected

    num_classes = _num_classes(sd, arch) if sd is not None else 1000
    model = get_model(arch, weights=None, num_classes=num_classes)
    if sd is not None:
        model.load_state_dict(sd)
    model.eval()
    recipe = enum_member or weights_enum(arch)[LOCAL_FILE_RECIPE]
    class_names = _class_names(meta, recipe, num_classes)
    model.provenance = f"{arch}: {provenance}"  # type: ignore[assignment]
    model.class_names = class_names  # type: ignore[assignment]
    return Pretrained(model, class_names, Preprocess.from_weights(recipe))


def _class_names(meta: Mapping[str, Any], recipe: Any, num_classes: int) -> list[str]:
    """Names stored in the checkpoint, else ImageNet's from the enum metadata, else numbered."""
    for key in ("class_names", "classes"):
        names = meta.get(key)
        if isinstance(names, list | tuple) and len(names) == num_classes:
            return [str(n) for n in names]
    categories = list(recipe.meta.get("categories") or [])
    if len(categories) == num_classes:
        return categories
    return [f"class {i}" for i in range(num_classes)]
