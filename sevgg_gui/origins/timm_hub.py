"""``timm:hf-hub:ORG/NAME[@REVISION][:random]``: a timm model published on the Hugging Face hub, loaded
through timm's own hub path, ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)``: timm reads the
repo's ``config.json`` (architecture, ``model_args``, ``pretrained_cfg`` with mean/std/input size,
label names) and its weights, ``model.safetensors`` when the repo has one, else ``pytorch_model.bin``
through ``torch.load(weights_only=True)`` (timm's ``load_state_dict_from_hf``; only
``argparse.Namespace`` is allowed besides tensors, so no pickle in a weights file can run code).
``@REVISION`` (a branch, tag or commit) is passed to the hub as timm does (``hf_split``).

Cache first, as for ``timm:NAME``: when the snapshot's ``config.json`` and weights are in the hub cache
(``HF_HUB_CACHE``, or ``HF_HOME/hub``, read when the model is opened, not when huggingface_hub was
imported), timm loads them with the hub in offline mode, so nothing is asked of the network (a newer
commit on the hub is not looked for; pin ``@REVISION`` or refresh the cache to get it). Not cached and
offline: one line saying so, at once. Otherwise timm downloads them into that cache.

``:random`` builds the repo's architecture from its ``config.json`` alone (its classes, label names and
preprocessing) with random weights: only the config is needed, cached or downloaded.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from . import timm_models
from .loaded import LoadedModel, ModelSpecError

PREFIX = "timm:hf-hub:"
# A hub repo id (ORG/NAME: letters, digits, '-', '_', '.') and an optional revision (branch names may
# hold '/', as in refs/pr/1).
_SPEC = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[\w./-]+))?")
_OFFLINE = threading.Lock()


def parse_spec(spec: str) -> tuple[str, str | None, bool]:
    """``timm:hf-hub:org/name@v2:random`` -> (``org/name``, ``v2``, True)."""
    rest = spec[len(PREFIX) :]
    random = rest.endswith(timm_models.RANDOM_SUFFIX)
    rest = rest[: -len(timm_models.RANDOM_SUFFIX)] if random else rest
    m = _SPEC.fullmatch(rest)
    if not m or len(m["repo"]) > 96:
        raise ModelSpecError(
            f"{spec}: expected timm:hf-hub:ORG/NAME, timm:hf-hub:ORG/NAME@REVISION or either with :random "
            "(e.g. timm:hf-hub:timm/seresnet50.a1_in1k)"
        )
    return m["repo"], m["rev"], random


def cached_file(repo: str, filename: str, revision: str | None) -> str | None:
    """``filename`` of the repo's snapshot at ``revision`` (default main) in the hub cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo, filename, cache_dir=timm_models.hub_cache_dir(), revision=revision or None
    )
    return found if isinstance(found, str) and os.path.isfile(found) else None


def _cached_weights(repo: str, revision: str | None, config: str) -> str | None:
    """The weights file timm's hub loader would read for this snapshot, if cached (its order)."""
    import json

    try:
        cfg = json.loads(Path(config).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # reported by timm_architecture
    pretrained = cfg.get("pretrained_cfg") if isinstance(cfg, dict) else None
    pretrained = pretrained if isinstance(pretrained, dict) else (cfg if isinstance(cfg, dict) else {})
    for filename in timm_models.hub_files(pretrained):
        found = cached_file(repo, filename, revision)
        if found:
            return found
    return None


@contextmanager
def hub_offline() -> Iterator[None]:
    """huggingface_hub in offline mode for the duration (it reads ``constants.HF_HUB_OFFLINE`` at
    each request; the environment variable only when it is imported): cached files are served
    without asking the hub whether they are current."""
    from huggingface_hub import constants

    with _OFFLINE:
        before = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = before


def _download_config(repo: str, revision: str | None, spec: str) -> str:
    """The repo's config.json, downloaded into the hub cache; one line when that fails."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, "config.json", revision=revision, cache_dir=timm_models.hub_cache_dir())
    except Exception as exc:  # no such repo or revision, a gated repo, no config.json, HTTP errors...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(
            f"{spec}: the hub's config.json could not be read ({type(exc).__name__}: {first})"
        ) from None


def _snapshot(file: str) -> str:
    """ ", snapshot <commit>" for a cached snapshot file (``.../snapshots/<commit>/model.safetensors``)."""
    parent = Path(file).parent
    return f", snapshot {parent.name[:12]}" if parent.parent.name == "snapshots" else ""


def load(spec: str) -> LoadedModel:
    from .hf_folder import timm_architecture

    repo, revision, random = parse_spec(spec)
    timm = timm_models.require_timm()
    hub_id = f"{repo}@{revision}" if revision else repo
    config = cached_file(repo, "config.json", revision)
    weights = _cached_weights(repo, revision, config) if config and not random else None
    cached = config is not None and (random or weights is not None)
    if not cached:
        from huggingface_hub import constants

        reason = timm_models.unreachable(os.environ.get("HF_ENDPOINT") or str(constants.ENDPOINT))
        if reason:
            what = (
                "config.json is" if random else ("weights are" if config else "config.json and weights are")
            )
            raise ModelSpecError(
                f"{spec}: the hub's {what} not cached and {reason}; connect once to download them"
            )
        config = config or _download_config(repo, revision, spec)
    arch = timm_architecture(Path(config), f"{spec} (config.json)")
    kwargs: dict[str, Any] = {"pretrained": not random, "cache_dir": timm_models.hub_cache_dir()}
    name = f"hf-hub:{hub_id}"
    if random:
        with hub_offline() if cached else nullcontext():
            model = timm_models.create(timm, spec, "building from its config.json", name, **kwargs)
        return timm_models.finish(
            model,
            f"timm {arch} from hf-hub:{hub_id} (config.json), random initialisation",
            warning=f"Random weights ({spec}): predictions are meaningless; {spec[: -len(':random')]} loads trained ones.",
        )
    if cached:
        with hub_offline():
            model = timm_models.create(timm, spec, f"loading {weights}", name, **kwargs)
        how = "cached"
    else:
        model = timm_models.create(timm, spec, f"downloading {hub_id} from the hub", name, **kwargs)
        weights = _cached_weights(repo, revision, config)
        how = "downloaded"
    info = timm_models.weights_info(weights, arch, model) if weights else None
    commit = _snapshot(weights) if weights else ""
    return timm_models.finish(
        model, f"timm {arch} from hf-hub:{hub_id}, pretrained ({how}{commit})", info=info
    )
