"""One scan of a model: registered blocks by type, then (given an example input) unknown ones by
behaviour. Everything that lists or records attention asks here."""

from __future__ import annotations

import torch
from torch import nn

from .probe import ProbeResult, probe
from .registry import AttentionBlock, GateTap, block_from_type, ensure_registered, resolve_channels


def attention_blocks(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> tuple[list[AttentionBlock], ProbeResult | None]:
    """Every attention block in forward-definition order (recorded or only listed), and the probe's
    report when ``example_input`` was given (None otherwise)."""
    ensure_registered()
    blocks = [b for n, m in model.named_modules() if n and (b := block_from_type(n, m)) is not None]
    report = None
    if example_input is not None:
        report = probe(model, example_input, [b.name for b in blocks])
        modules = dict(model.named_modules())
        for name, dim, channels in report.found:
            m = modules[name]
            tap = GateTap(
                gate=m, squeeze=m, squeeze_from="mean", channels=channels, ratio=True, channel_dim=dim
            )
            blocks.append(
                AttentionBlock(
                    name,
                    m,
                    "unknown-gate",
                    channels,
                    "behaviour",
                    tap,
                    note="found by behaviour: output = input x per-channel gate; gate read as output/input",
                )
            )
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        blocks.sort(key=lambda b: order[b.name])
    resolve_channels(model, blocks, example_input)
    return blocks, report


def find_gate_blocks(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> list[tuple[str, nn.Module]]:
    """All recordable attention blocks in forward-definition order: by registered type, and with an
    ``example_input`` (a batch of two different images) also those found by behaviour."""
    return [(b.name, b.module) for b in attention_blocks(model, example_input)[0] if b.recorded]
