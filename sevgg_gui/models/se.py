"""The Squeeze-and-Excitation block, with the article's exact parameter layout.

State-dict keys are ``avg_pool`` (no parameters), ``fc.0.weight`` (C/r x C) and ``fc.2.weight``
(C x C/r), both without bias, so a checkpoint of the article's ``SEBlock`` loads unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


def se_hidden(channels: int, reduction: int) -> int:
    """Hidden width of the excitation MLP; at least 1 so tiny channel counts do not crash."""
    if channels < 1 or reduction < 1:
        raise ValueError(f"channels and reduction must be >= 1, got {channels} and {reduction}")
    return max(1, channels // reduction)


class SEBlock(nn.Module):
    """Squeeze (global average pool) -> excitation (FC, ReLU, FC, sigmoid) -> scale.

    ``fc`` maps the squeeze vector z (B, C) to the gate s (B, C); hooks on ``fc`` therefore see both
    exactly as computed, which is how :class:`~sevgg_gui.recorder.ExcitationRecorder` records them.

    ``inplace`` lets the block scale its input in place when no gradient is needed. Only safe when
    the input is a dead intermediate (e.g. the output of the preceding in-place ReLU inside a
    Sequential); VGG16-SE turns it on for its own blocks, a standalone block leaves it off.
    """

    def __init__(self, channel: int, reduction: int = 16, *, inplace: bool = False) -> None:
        super().__init__()
        hidden = se_hidden(channel, reduction)
        self.channels = channel
        self.reduction = reduction
        self.inplace = inplace
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        z = self.avg_pool(x).view(b, c)
        s = self.fc(z).view(b, c, 1, 1)
        if self.inplace and not (torch.is_grad_enabled() and x.requires_grad):
            return x.mul_(s)
        return x * s

    def extra_repr(self) -> str:
        return f"channel={self.channels}, reduction={self.reduction}"

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
