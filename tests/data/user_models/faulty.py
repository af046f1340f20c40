"""Model code that goes wrong in the ways `--model-code` must report in one line (tests)."""

from __future__ import annotations

from torch import nn


def explode() -> nn.Module:
    layers = [nn.Conv2d(3, 8, 3)]
    raise ValueError(f"cannot build with {len(layers)} layer")  # explode-line


def not_a_model() -> dict:
    return {"conv": nn.Conv2d(3, 8, 3)}


def deeper() -> nn.Module:
    return _helper(4)


def _helper(n: int) -> nn.Module:
    return nn.Conv2d(3, n, 3, padding="nonsense")  # helper-line


def quits() -> nn.Module:
    raise SystemExit("bye")  # quits-line
