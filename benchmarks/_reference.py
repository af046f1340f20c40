"""The comparison points: the article's SEBlock and VGG16_SE (shared/seed/000_*.txt, sections 3 and 4.3),
timm's and torchvision's SE modules, and model builders.

The article's code is copied unchanged apart from formatting, so "the article's implementation" means
exactly what its readers run: ``x * y.expand_as(x)``, out of place.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn


class ArticleSEBlock(nn.Module):
    """Squeeze-and-Excitation Block (the article's code)."""

    def __init__(self, channel, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


def article_vgg16_se(num_classes: int = 1000, reduction: int = 16) -> nn.Module:
    """The article's hand-written VGG16_SE (same layer indices and keys as ours)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in (64, 64, "SE", "M", 128, 128, "SE", "M", 256, 256, 256, "SE", "M",
                 512, 512, 512, "SE", "M", 512, 512, 512, "SE", "M"):  # fmt: skip
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif item == "SE":
            layers.append(ArticleSEBlock(in_ch, reduction))
        else:
            layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = int(item)

    class VGG16_SE(nn.Module):  # noqa: N801 - the article's name
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(4096, num_classes),
            )

        def forward(self, x):
            x = self.features(x)
            x = self.avgpool(x)
            x = torch.flatten(x, 1)
            return self.classifier(x)

    return VGG16_SE()


def se_implementations(channels: int, reduction: int = 16) -> dict[str, Callable[[], nn.Module] | None]:
    """Factories for every SE implementation compared; ``None`` where the package is missing."""
    from sevgg_gui.models.se import SEBlock

    out: dict[str, Callable[[], nn.Module] | None] = {
        "ours": lambda: SEBlock(channels, reduction, inplace=True),
        "ours out-of-place": lambda: SEBlock(channels, reduction),
        "article": lambda: ArticleSEBlock(channels, reduction),
    }
    try:
        from timm.layers import SEModule

        out["timm"] = lambda: SEModule(channels, rd_ratio=1.0 / reduction)
    except ImportError:
        out["timm"] = None
    try:
        from torchvision.ops import SqueezeExcitation

        out["torchvision"] = lambda: SqueezeExcitation(channels, channels // reduction)
    except ImportError:  # pragma: no cover - torchvision is a dependency
        out["torchvision"] = None
    return out


def torchvision_vgg16() -> nn.Module:
    from torchvision.models import vgg16

    return vgg16(weights=None)


def ours_vgg16_se() -> nn.Module:
    from sevgg_gui.models.vgg import VGG16_SE

    return VGG16_SE()


def fast_build(factory: Callable[[], nn.Module], tiny_head: bool = True) -> nn.Module:
    """For --quick smoke runs: build on the meta device, fill with small random numbers, and (by
    default) swap the 120M-weight classifier for one 10-way linear layer, so a forward at a small
    input takes milliseconds. Never used for the numbers in the README."""
    with torch.device("meta"):
        model = factory()
        if tiny_head and isinstance(getattr(model, "classifier", None), nn.Sequential):
            model.classifier = nn.Sequential(nn.Linear(model.classifier[0].in_features, 10))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.01, 0.01)
        for b in model.buffers():
            b.zero_()
    return model
