"""A user's own model, as `--model-code tests/data/user_models/inline_se.py:build` opens it: a small
CNN whose Squeeze-and-Excitation is written inline (its own class, not sevgg_gui's SEBlock), and one
built on torchvision's SqueezeExcitation, whose gates sevgg_gui records by type."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation


class ChannelGate(nn.Module):
    """SE written by hand: x * sigmoid(up(relu(down(mean(x)))))."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, channels // reduction, 1)
        self.up = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.up(torch.relu(self.down(s))))


class TinySENet(nn.Module):
    input_size = 64  # the crop it expects; sevgg_gui reads this attribute

    def __init__(self, num_classes: int = 3, gate: Callable[[int, int], nn.Module] = ChannelGate) -> None:
        super().__init__()
        self.class_names = ["circle", "square", "triangle"][:num_classes]
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            gate(16, 4),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            gate(32, 4),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def build() -> nn.Module:
    torch.manual_seed(0)
    return TinySENet()


def build_torchvision_se() -> nn.Module:
    torch.manual_seed(0)
    return TinySENet(gate=lambda c, r: SqueezeExcitation(c, c // r))
