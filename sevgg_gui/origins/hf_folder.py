"""A Hugging Face model folder as the hub stores a timm model: ``config.json`` naming the
``architecture`` (with ``num_classes``, ``model_args``, ``pretrained_cfg``, label names) and
``model.safetensors`` or ``pytorch_model.bin`` -- what ``timm.models.save_for_hf`` writes and what the
hub cache's snapshot folders hold. A hub cache repo folder (``models--org--name``) opens its snapshot.

The architecture is built from the config with random weights, then the weights are read here
(safetensors, or ``torch.load(weights_only=True)``) and must fit it exactly: a misfit is one line
naming the missing / unexpected keys and shape mismatches, and nothing is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoints import CheckpointError, CheckpointInfo, read_state_dict, sha256_file
from ..model_specs import MODEL_FOLDER_WEIGHTS, is_model_folder
from . import fit, timm_models
from .loaded import LoadedModel, ModelSpecError


def resolve_folder(path: Path) -> Path:
    """``path`` itself, or the snapshot a hub cache repo folder (``models--timm--x``) points to."""
    snapshots = path / "snapshots"
    if (path / "config.json").is_file() or not snapshots.is_dir():
        return path
    ref = path / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted((p for p in snapshots.iterdir() if is_model_folder(p)), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else path


def timm_architecture(config: Path, where: str | None = None) -> str:
    """The timm architecture a ``config.json`` names, checked against timm's registry; one line when
    the file is not JSON, names no timm architecture (a transformers config) or one timm lacks."""
    where = where or str(config)
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelSpecError(f"{where}: not readable JSON ({str(exc).splitlines()[0][:100]})") from None
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    if not isinstance(arch, str):
        other = cfg.get("architectures") if isinstance(cfg, dict) else None
        kind = f" (a transformers {other[0]} model?)" if isinstance(other, list) and other else ""
        raise ModelSpecError(f"{where}: names no timm 'architecture'{kind}; only timm models open")
    timm_models.check_name(arch, where)
    return arch


def load(folder: str | Path) -> LoadedModel:
    path = resolve_folder(Path(folder))
    config = path / "config.json"
    if not config.is_file():
        raise ModelSpecError(f"{folder}: a folder without config.json is not a model folder")
    weights = next((path / n for n in MODEL_FOLDER_WEIGHTS if (path / n).is_file()), None)
    if weights is None:
        raise ModelSpecError(f"{folder}: config.json but no {' or '.join(MODEL_FOLDER_WEIGHTS)}")
    arch = timm_architecture(config)
    timm = timm_models.require_timm()
    try:
        # timm's own reading of the config (pretrained_cfg, model_args, label names); no weights yet
        model = timm.create_model(f"local-dir:{path}", pretrained=False)
    except Exception as exc:  # bad model_args for the architecture, an old config layout...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(f"{config}: timm cannot build {arch} from it ({first})") from None
    sd, _meta, notes = read_state_dict(weights)
    try:
        notes += fit.load_into(model, sd, f"{weights.name} does not fit its config.json ({arch})")
    except CheckpointError as exc:
        raise CheckpointError(f"{folder}: {exc}") from None
    sha = sha256_file(weights)
    info = CheckpointInfo(
        path=str(weights),
        sha256=sha,
        format="safetensors" if weights.suffix == ".safetensors" else "pytorch",
        architecture=arch,
        num_classes=int(getattr(model, "num_classes", 0) or 0),
        provenance=f"timm {arch} from {path.name}",
        notes=notes,
    )
    return timm_models.finish(
        model, f"timm {arch} from folder {path.name}, sha256 {sha[:12]}", info=info, notes=notes
    )
