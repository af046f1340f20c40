"""Fitting a state dict to a model whose architecture came from elsewhere (a timm config, the user's
code): the prefixes training wrappers add, and one line that says what does not fit."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..checkpoints import CheckpointError

# What DataParallel/DDP, torch.compile and Lightning-style wrappers put before every key.
PREFIXES = ("module.", "_orig_mod.", "model.", "net.")


def strip_prefixes(
    sd: Mapping[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove a wrapper prefix shared by every key when the model's own keys do not carry it."""
    out, notes = dict(sd), []
    own = model.state_dict().keys()
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if out and all(k.startswith(prefix) for k in out) and not all(k.startswith(prefix) for k in own):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                notes.append(f"prefix '{prefix}' removed")
                changed = True
    return out, notes


def _summary(keys: list[str], n: int = 3) -> str:
    return f"{len(keys)} ({', '.join(keys[:n])}{', ...' if len(keys) > n else ''})"


def mismatch(sd: Mapping[str, torch.Tensor], model: nn.Module) -> str | None:
    """Missing keys, unexpected keys and shape mismatches in one line; None when ``sd`` fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing {_summary(missing)}")
    if unexpected:
        parts.append(f"unexpected {_summary(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch (file vs model) {_summary(shapes, 2)}")
    return "; ".join(parts) or None


def load_into(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> list[str]:
    """Load ``sd`` into ``model`` (strict) after stripping wrapper prefixes; on a misfit raise one
    CheckpointError line naming ``what`` and leave the model untouched. Returns notes."""
    sd, notes = strip_prefixes(sd, model)
    problem = mismatch(sd, model)
    if problem:
        raise CheckpointError(f"{what}: {problem}")
    model.load_state_dict(sd, strict=True)
    return notes
