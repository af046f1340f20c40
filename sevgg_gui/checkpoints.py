"""VGG16-SE checkpoints: building the model that fits a state dict, and atomic saving.

Reading a file (``weights_only=True`` always, wrappers, prefixes, safetensors) is ``statedict``'s job,
whose names are re-exported here; the architecture's hyper-parameters are inferred from tensor shapes.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .models.se import se_hidden
from .models.vgg import VGG16_SE, is_torchvision_vgg16_state_dict, transfer_vgg16_state_dict
from .statedict import (  # noqa: F401  (re-exported: the reading layer's public names live here too)
    PREFIXES,
    WRAPPER_KEYS,
    CheckpointError,
    load_payload,
    read_state_dict,
    sha256_file,
    unwrap_state_dict,
)

FORMAT_TAG = "sevgg_gui/1"


@dataclass
class CheckpointInfo:
    path: str | None
    sha256: str | None
    format: str
    architecture: str = "VGG16_SE"
    num_classes: int = 1000
    reduction: int = 16
    class_names: list[str] | None = None
    provenance: str = ""
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ matching
def infer_vgg16_se_hparams(sd: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """(num_classes, reduction) from tensor shapes of a VGG16-SE state dict."""
    num_classes = int(sd["classifier.6.weight"].shape[0])
    hidden = {int(k.split(".")[1]): int(v.shape[0]) for k, v in sd.items() if k.endswith(".fc.0.weight")}
    channels = {int(k.split(".")[1]): int(v.shape[1]) for k, v in sd.items() if k.endswith(".fc.0.weight")}
    # Several ratios give the same widths (512 // 31 == 512 // 32 == 16): prefer the usual powers of two.
    for r in [16, *(2**k for k in range(11)), *range(1, 1025)]:
        if all(se_hidden(channels[i], r) == h for i, h in hidden.items()):
            return num_classes, r
    raise CheckpointError(f"SE widths {sorted(hidden.values())} match no single reduction ratio")


def _summarise(keys: list[str], n: int = 3) -> str:
    head = ", ".join(keys[:n])
    return f"{len(keys)} ({head}{', ...' if len(keys) > n else ''})"


def _guess_architecture(keys: list[str]) -> str:
    joined = " ".join(keys[:400])
    for marker, name in (
        ("layer1.0.conv1", "a ResNet"),
        ("Mixed_", "an Inception"),
        ("block.0.0", "a MobileNetV3/EfficientNet"),
        ("features.1.conv", "a MobileNet"),
        ("denseblock", "a DenseNet"),
        ("blocks.0.attn", "a vision transformer"),
        ("running_mean", "a network with batch norm"),
    ):
        if marker in joined:
            return f" (looks like {name})"
    return ""


def check_matches(sd: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Raise one clear line when ``sd`` does not fit ``model`` (missing/unexpected/shape)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected {_summarise(unexpected)}")
        raise CheckpointError(
            f"not a {type(model).__name__} checkpoint{_guess_architecture(list(sd))}: " + "; ".join(parts)
        )
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CheckpointError(f"shape mismatch at {k}: file {tuple(sd[k].shape)}, model {tuple(v.shape)}")


def model_from_state_dict(
    sd: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None
) -> tuple[VGG16_SE, list[str], int, int]:
    """Build the VGG16-SE that fits ``sd`` (transferring a plain VGG16); returns (model, notes, C, r)."""
    meta = dict(meta or {})
    notes: list[str] = []
    if is_torchvision_vgg16_state_dict(sd):
        num_classes = int(sd["classifier.6.weight"].shape[0])
        reduction = int(meta.get("reduction", 16))
        model = VGG16_SE(num_classes=num_classes, reduction=reduction)
        model.load_state_dict(transfer_vgg16_state_dict(sd, model))
        notes.append("plain torchvision VGG16: transferred with SE gates at 0.5 (function-preserving)")
        return model, notes, num_classes, reduction
    if "classifier.6.weight" not in sd or not any(k.endswith(".fc.0.weight") for k in sd):
        with torch.device("meta"):
            model = VGG16_SE()
        check_matches(sd, model)  # raises with a summary
    num_classes, reduction = infer_vgg16_se_hparams(sd)
    with torch.device("meta"):  # no 138M-parameter random init that load_state_dict would overwrite
        model = VGG16_SE(num_classes=num_classes, reduction=reduction)
    check_matches(sd, model)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    return model, notes, num_classes, reduction


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[VGG16_SE, CheckpointInfo]:
    """Load a VGG16-SE checkpoint safely; returns (model in eval mode, info). Raises CheckpointError."""
    from concurrent.futures import ThreadPoolExecutor

    path = Path(path)
    with ThreadPoolExecutor(1) as pool:  # hashing (GIL-free in hashlib) overlaps the load
        sha_future = pool.submit(sha256_file, path) if path.is_file() else None
        sd, meta, notes = read_state_dict(path)
        sha = sha_future.result() if sha_future else ""
    try:
        model, more, num_classes, reduction = model_from_state_dict(sd, meta)
    except CheckpointError as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None
    notes += more
    class_names = meta.get("class_names") or meta.get("classes")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            notes.append(f"ignored {len(class_names)} class names for {num_classes} outputs")
            class_names = None
    provenance = str(meta.get("provenance") or f"checkpoint {path.name}")
    if more:
        provenance = f"{more[0]} ({path.name})"
    info = CheckpointInfo(
        path=str(path),
        sha256=sha,
        format="safetensors" if "safetensors" in notes else "pytorch",
        num_classes=num_classes,
        reduction=reduction,
        class_names=class_names,
        provenance=provenance,
        notes=notes,
        metadata={k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
    )
    model.provenance = f"{provenance}, sha256 {sha[:12]}"  # type: ignore[attr-defined]
    model.class_names = class_names  # type: ignore[attr-defined]
    return model.to(map_location).eval(), info


# ------------------------------------------------------------------------------------------ writing
def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are 0600, and the checkpoint should get the umask's permissions like torch.save's.
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    open(tmp, "xb").close()
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    class_names: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    **metadata: Any,
) -> Path:
    """Write the model atomically (temp file + rename) with its metadata.

    ``.safetensors`` stores metadata as JSON in the header; anything else is a torch zip holding
    ``{"format", "state_dict", "meta", **extra}`` that loads with ``weights_only=True``.
    """
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {
        "format": FORMAT_TAG,
        "architecture": type(model).__name__,
        "reduction": int(getattr(model, "reduction", 16)),
        "num_classes": int(getattr(model, "num_classes", 0) or 0),
        "provenance": str(getattr(model, "provenance", "")),
    }
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    if names is not None:
        meta["class_names"] = [str(c) for c in names]
    meta.update(metadata)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        _atomic_write(path, lambda tmp: save_file(sd, tmp, metadata={"sevgg_meta": json.dumps(meta)}))
    else:
        payload: dict[str, Any] = {"format": FORMAT_TAG, "state_dict": sd, "meta": meta}
        if extra:
            payload.update(extra)
        _atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path
