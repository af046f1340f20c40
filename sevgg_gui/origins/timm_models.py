"""``timm:<name>[.<tag>][:random]``: a timm model, with timm's own pretrained weights (Hugging Face hub
or timm's URL, cached after the first download) or random weights; its preprocessing from its data
config and its class names from timm's ImageNet info.

timm is imported only here, when a timm spec (or a timm model folder) is opened. Offline, timm's
downloader retries for about a minute before failing; so the local cache is looked up first, and an
uncached download is tried only when the host answers, else one line says what to do.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

from ..checkpoints import CheckpointInfo
from ..images import Preprocess
from .loaded import LoadedModel, ModelSpecError

PREFIX = "timm:"
RANDOM_SUFFIX = ":random"


def require_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ModelSpecError("timm is not installed: pip install 'timm>=1.0'") from None
    return timm


def parse_spec(spec: str) -> tuple[str, bool]:
    """``timm:seresnet50.a1_in1k:random`` -> (``seresnet50.a1_in1k``, True)."""
    rest = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    random = rest.endswith(RANDOM_SUFFIX)
    name = rest[: -len(RANDOM_SUFFIX)] if random else rest
    if not name or ":" in name or "/" in name:
        raise ModelSpecError(
            f"{spec}: expected timm:NAME, timm:NAME.TAG, timm:NAME:random (e.g. timm:seresnet50.a1_in1k) "
            "or timm:hf-hub:ORG/NAME[@REVISION]"
        )
    return name, random


def check_name(name: str, spec: str) -> tuple[str, str | None]:
    """(architecture, tag) of a timm name; one line with the closest known names when it is unknown."""
    timm = require_timm()
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=4, cutoff=0.6)
        hint = f"; closest: {', '.join(close)}" if close else "; `timm.list_models('*se*')` lists them"
        raise ModelSpecError(f"{spec}: timm knows no model {arch!r}{hint}")
    if tag:
        try:
            get_pretrained_cfg(name)
        except RuntimeError:
            tags = timm.list_pretrained(f"{arch}.*")
            raise ModelSpecError(
                f"{spec}: timm has no weights tagged {tag!r} for {arch}; known: {', '.join(tags) or 'none'}"
            ) from None
    return arch, tag or None


# ------------------------------------------------------------------------------ what a model needs
def preprocess_for(model: nn.Module) -> tuple[Preprocess, list[str]]:
    """The model's own preprocessing (``timm.data.resolve_model_data_config``) as a Preprocess."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    notes: list[str] = []
    _c, h, w = (int(v) for v in cfg["input_size"])
    if h != w:
        notes.append(f"input {h}x{w} in its config: square {max(h, w)} crop used")
    crop = max(h, w)
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    mode = str(cfg.get("crop_mode") or "center")
    if mode != "center":
        notes.append(f"crop_mode {mode!r} in its config: approximated by a centre crop")
    interp = str(cfg.get("interpolation") or "bilinear")
    if interp not in ("bilinear", "bicubic", "nearest"):
        notes.append(f"interpolation {interp!r} in its config: bilinear used")
        interp = "bilinear"
    pre = Preprocess(
        crop_size=crop,
        resize_size=max(crop, math.floor(crop / crop_pct)),  # timm's transforms_factory: floor(size / pct)
        mean=tuple(float(m) for m in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(s) for s in cfg["std"]),  # type: ignore[arg-type]
        interpolation=interp,
    )
    return pre, notes


def class_names_for(model: nn.Module) -> list[str] | None:
    """Names from the model's config (a folder's or hub repo's ``label_names``, through its
    ``label_descriptions`` when it has them), else timm's ImageNet info when the class count is an
    ImageNet subset's; None (numbered "class i") when nothing fits the model's outputs. Label names
    that are only WordNet ids (``n01440764``) give way to ImageNet's descriptions."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    n = int(getattr(model, "num_classes", 0) or 0)
    cfg = getattr(model, "pretrained_cfg", None) or {}

    def listed(key: str) -> list[str] | None:
        v = cfg.get(key)
        v = list(v.values()) if isinstance(v, dict) else v
        return [str(x) for x in v] if isinstance(v, list | tuple) and len(v) == n else None

    def short(description: str) -> str:  # "tench, Tinca tinca" -> "tench", as torchvision's categories
        return description.split(",")[0].strip()

    names, described = listed("label_names"), cfg.get("label_descriptions")
    if names and isinstance(described, dict) and all(k in described for k in names):
        return [short(str(described[k])) for k in names]  # timm's layout: label name -> description
    descriptions = listed("label_descriptions")
    if descriptions:
        return [short(d) for d in descriptions]
    if names and not all(re.fullmatch(r"n\d{8}", k) for k in names):
        return names
    subset = infer_imagenet_subset(model)
    if subset:
        info = ImageNetInfo(subset)
        if info.num_classes() == n:
            return [short(d) for d in info.label_descriptions()]
    return names


def finish(model: nn.Module, provenance: str, **extra: Any) -> LoadedModel:
    """A timm model in eval mode with its preprocessing and class names, as a LoadedModel."""
    model.eval()
    pre, notes = preprocess_for(model)
    names = class_names_for(model)
    model.provenance = provenance  # type: ignore[assignment]
    model.class_names = names  # type: ignore[assignment]
    extra["notes"] = list(extra.get("notes") or []) + notes
    if extra.get("info") is not None:
        extra["info"].class_names = names
    return LoadedModel(model, provenance, names, transform=pre, input_size=pre.crop_size, **extra)


# ------------------------------------------------------------------------------ weights and cache
def hub_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment now (not when huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_files(cfg: dict[str, Any]) -> list[str]:
    """The weight files timm's hub loader tries for ``cfg``, in its order: the safetensors
    alternative first (``timm.models._hub._get_safe_alternatives``), then the named file."""
    name = cfg.get("hf_hub_filename") or "pytorch_model.bin"
    safe = {
        "pytorch_model.bin": "model.safetensors",
        "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
    }
    if name.endswith(".bin"):
        return [safe.get(name, name[: -len(".bin")] + ".safetensors"), name]
    return [name]


def cached_weights(cfg: dict[str, Any]) -> str | None:
    """The local file timm would load for ``cfg`` if it is already in a cache, else None."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = str(hub_id).partition("@")
        for filename in hub_files(cfg):
            found = try_to_load_from_cache(
                repo, filename, cache_dir=hub_cache_dir(), revision=revision or None
            )
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url")
    if url:
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(str(url)).path)
        if path.is_file():
            return str(path)
    return None


def unreachable(url: str) -> str | None:
    """Why ``url``'s host cannot be used now (offline mode, no route), or None if it answers."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or type(exc).__name__})"
    return None


def load(spec: str) -> LoadedModel:
    name, random = parse_spec(spec)
    arch, _tag = check_name(name, spec)
    timm = require_timm()
    from timm.models import get_pretrained_cfg

    if random:
        model = create(timm, spec, "building", name, pretrained=False)
        return finish(
            model,
            f"timm {name}, random initialisation",
            warning=f"Random weights ({spec}): predictions are meaningless; timm:{name} loads trained ones.",
        )
    found = get_pretrained_cfg(name)
    cfg = found.to_dict() if found is not None else {"tag": None}
    if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
        trained = timm.list_pretrained(f"{arch}.*")
        others = f", or a trained variant: {', '.join(trained[:4])}" if trained else ""
        raise ModelSpecError(
            f"{spec}: timm has no pretrained weights for {name} (tag {cfg.get('tag')!r}); "
            f"use timm:{name}:random{others}"
        )
    file = cached_weights(cfg)
    full = f"{arch}.{cfg.get('tag')}" if cfg.get("tag") else arch
    if file is not None:
        model = create(
            timm, spec, f"loading {file}", name, pretrained=True, pretrained_cfg_overlay={"file": file}
        )
        return finish(model, f"timm {full}, pretrained (cached)", info=weights_info(file, full, model))
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import constants

        where, url = f"{hub_id} (Hugging Face hub)", str(constants.ENDPOINT)
        url = os.environ.get("HF_ENDPOINT") or url
    else:
        where, url = str(cfg["url"]), str(cfg["url"])
    reason = unreachable(url)
    if reason:
        raise ModelSpecError(
            f"{spec}: timm's weights {where} are not cached and {reason}; connect once to download "
            f"them, or use timm:{name}:random"
        )
    kwargs: dict[str, Any] = {"cache_dir": hub_cache_dir()} if hub_id else {}
    model = create(timm, spec, f"downloading timm's weights {where}", name, pretrained=True, **kwargs)
    file = cached_weights(cfg)
    info = weights_info(file, full, model) if file else None
    return finish(model, f"timm {full}, pretrained (downloaded from {where})", info=info)


def create(timm: Any, spec: str, doing: str, name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with any failure (HTTP errors, a gated repo, a corrupt cached file, an
    architecture that needs arguments) as one line."""
    try:
        return timm.create_model(name, **kwargs)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(f"{spec}: {doing} failed ({type(exc).__name__}: {first})") from None


def weights_info(file: str, arch: str, model: nn.Module) -> CheckpointInfo:
    """Path and sha256 of a weights file for the model panel. Hub blobs are named by their sha256, so
    a cached file's hash costs nothing; other files are hashed (torch hub files are small)."""
    from ..checkpoints import sha256_file

    blob = Path(file).resolve().name
    sha = blob if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob) else sha256_file(file)
    return CheckpointInfo(
        path=file,
        sha256=sha,
        format="safetensors" if file.endswith(".safetensors") else "pytorch",
        architecture=arch,
        num_classes=int(getattr(model, "num_classes", 0) or 0),
        provenance=f"timm {arch}",
    )
