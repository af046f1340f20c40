"""Reading a checkpoint file safely into (state dict, metadata, notes), with no model in sight.

Every ``torch.load`` here uses ``weights_only=True``: a checkpoint is data, and a pickle that tries to
run code is refused with one line. Many real-world layouts are accepted (bare state dicts, training
wrappers, DataParallel / torch.compile prefixes, safetensors). The model layer (``models/``) and the
VGG16-SE loader (``checkpoints``) both build on this module, which imports neither: so the two no
longer import each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "ema", "ema_state_dict", "net", "module")
PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line meant for the user."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ reading
def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, BadZipFile...
        text = str(exc).strip()
        refused = "Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError)
        # Only a pickled global (a class or function to call) can run code; other refusals are random
        # bytes or an unsupported pickle opcode, which must not be reported as an attack.
        if refused and "global" in text.lower():
            raise CheckpointError(
                f"{path.name}: refused: it holds pickled Python objects, not just tensors "
                "(loading it could run code); re-save it as a plain state_dict"
            ) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next((line for line in lines if "Unsupported" in line), lines[0] if lines else "")
        if not zipfile.is_zipfile(path):
            detail = f"neither a torch zip archive nor a readable pickle: {detail[:60] or type(exc).__name__}"
        reason = detail[:120] if detail else type(exc).__name__
        raise CheckpointError(f"{path.name}: not a readable PyTorch checkpoint ({reason})") from None


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open
    except ImportError as exc:  # pragma: no cover - dependency
        raise CheckpointError("safetensors is not installed: pip install safetensors") from exc
    try:
        sd = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path.name}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})"
        ) from None
    meta: dict[str, Any] = {}
    if "sevgg_meta" in raw:
        try:
            meta = json.loads(raw["sevgg_meta"])
        except json.JSONDecodeError:
            meta = {}
    else:
        meta = dict(raw)
    return sd, meta


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def unwrap_state_dict(obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """Find the state dict in a training checkpoint; return (state_dict, metadata, notes)."""
    notes: list[str] = []
    meta: dict[str, Any] = {}
    for _ in range(4):
        if _is_tensor_dict(obj):
            break
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
        if isinstance(obj.get("meta"), Mapping):
            meta.update(obj["meta"])
        for key in ("class_names", "classes", "epoch", "arch", "architecture"):
            if key in obj and key not in meta and not isinstance(obj[key], torch.Tensor | Mapping):
                meta[key] = obj[key]
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                notes.append(f"state dict taken from '{key}'")
                obj = obj[key]
                break
        else:
            # Drop non-tensor entries (e.g. 'epoch' stored beside the tensors).
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise CheckpointError(
                    f"no tensors found (top-level keys: {', '.join(map(str, list(obj)[:6]))})"
                )
            obj = tensors
    sd = dict(obj)
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
            notes.append(f"prefix '{prefix}' removed")
    return sd, meta, notes


def load_payload(path: str | os.PathLike[str]) -> Any:
    """A whole checkpoint payload (a resumable train/distill file: weights, optimizer, RNG...), loaded
    with ``weights_only=True``; a missing, corrupt or pickled-code file gives one CheckpointError line."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint")
    return _torch_load(p)


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """Read any supported file into (state_dict, metadata, notes); raises CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        sd, meta = _load_safetensors(path)
        return sd, meta, ["safetensors"]
    obj = _torch_load(path)
    sd, meta, notes = unwrap_state_dict(obj)
    return sd, meta, notes
