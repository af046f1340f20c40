"""SE (or any registered attention) in the networks of the article's section 8.1, and VGG16 variants.

Where the attention goes follows the article: VGG16 before each max-pool, ResNet inside the residual
block (on the residual branch, before the addition), Inception after every Inception module, MobileNet
after the depthwise convolution. The ResNet, GoogLeNet and MobileNetV2 builders subclass torchvision's
blocks, so every non-attention key keeps torchvision's name and torchvision weights load with
``strict=False`` (only the attention keys are missing). ``attention=None`` builds the same network
without attention, which is what :func:`attention_overhead` compares against.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models.googlenet import BasicConv2d, GoogLeNet, Inception, InceptionAux
from torchvision.models.mobilenetv2 import InvertedResidual, MobileNetV2
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .attention import ATTENTION_TYPES, create_attention, reset_attention_parameters
from .attention import attention_options as accepted_options
from .vgg import CFGS, VGGSE


def _attention(name: str, channels: int, reduction: int, options: dict[str, Any]) -> nn.Module:
    """``create_attention`` with the network's ``reduction`` passed only to types that have a bottleneck
    (sSE and ECA have none), so one network signature serves every type."""
    opts = dict(options)
    if "reduction" in accepted_options(name):
        opts.setdefault("reduction", reduction)
    return create_attention(name, channels, **opts)


def attention_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every attention module built by :mod:`.attention`, in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ATTENTION_TYPES)]


# ----------------------------------------------------------------------------------------------
# VGG16
# ----------------------------------------------------------------------------------------------


class VGGAttention(VGGSE):
    """A VGG whose "SE" slots hold any registered attention type (same layout and indices as VGG16-SE).

    With ``attention="se"`` the state dict is key for key the article's VGG16_SE.
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        attention: str = "se",
        num_classes: int = 1000,
        reduction: int = 16,
        dropout: float = 0.5,
        width: float = 1.0,
        **options: Any,
    ) -> None:
        # Build (and initialise) the plain trunk once, then splice attention into the "SE" slots.
        super().__init__([c for c in cfg if c != "SE"], num_classes, reduction, dropout, width)
        attention = attention.lower()
        if attention == "se":
            options.setdefault("inplace", True)  # as VGG16_SE: its input is a dead ReLU output
        plain = iter(self.features)
        layers: list[nn.Module] = []
        channels = 3
        for item in cfg:
            if item == "SE":
                layers.append(_attention(attention, channels, reduction, options))
            elif item == "M":
                layers.append(next(plain))
            else:
                conv = next(plain)
                channels = conv.out_channels
                layers += [conv, next(plain)]
        self.features = nn.Sequential(*layers)
        self.attention = attention

    def attention_blocks(self) -> list[tuple[str, nn.Module]]:
        return attention_blocks(self)


def vgg16_attention(
    name: str = "se",
    num_classes: int = 1000,
    reduction: int = 16,
    *,
    width: float = 1.0,
    dropout: float = 0.5,
    **opts: Any,
) -> VGGAttention:
    """VGG16 with ``name`` attention before each max-pool (``features.4/10/18/26/34``).

    ``opts`` go to :func:`~.attention.create_attention`; ``width`` scales the conv and FC widths
    (1.0 = VGG16), handy for small experiments.
    """
    return VGGAttention(CFGS["vgg16"], name, num_classes, reduction, dropout, width, **opts)


# ----------------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------------


class SEBasicBlock(BasicBlock):
    """torchvision's BasicBlock with attention on the residual branch, after bn2, before the addition."""

    def __init__(
        self,
        *args: Any,
        attention: str = "se",
        reduction: int = 16,
        attention_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.se = _attention(attention, self.bn2.num_features, reduction, attention_options or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class SEBottleneck(Bottleneck):
    """torchvision's Bottleneck with attention after bn3, before the addition (Hu et al., Fig. 3)."""

    def __init__(
        self,
        *args: Any,
        attention: str = "se",
        reduction: int = 16,
        attention_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.se = _attention(attention, self.bn3.num_features, reduction, attention_options or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def _block(
    base: type[nn.Module], se_cls: type[nn.Module], attention: str | None, reduction: int, opts: dict
) -> Callable[..., nn.Module]:
    """The ``block`` argument torchvision's builders call; carries ``expansion`` like the classes do."""
    if attention is None:
        return base
    factory = functools.partial(se_cls, attention=attention, reduction=reduction, attention_options=opts)
    factory.expansion = getattr(base, "expansion", 1)  # type: ignore[attr-defined]
    return factory


def _resnet(
    base: type[nn.Module],
    se_cls: type[nn.Module],
    layers: list[int],
    num_classes: int,
    reduction: int,
    attention: str | None,
    opts: dict[str, Any],
) -> ResNet:
    model = ResNet(_block(base, se_cls, attention, reduction, opts), layers, num_classes=num_classes)
    reset_attention_parameters(model)
    return model


def se_resnet18(
    num_classes: int = 1000, reduction: int = 16, *, attention: str | None = "se", **opts: Any
) -> ResNet:
    """SE-ResNet-18 (torchvision keys + ``layerN.i.se.*``); ``attention=None`` = plain ResNet-18."""
    return _resnet(BasicBlock, SEBasicBlock, [2, 2, 2, 2], num_classes, reduction, attention, opts)


def se_resnet50(
    num_classes: int = 1000, reduction: int = 16, *, attention: str | None = "se", **opts: Any
) -> ResNet:
    """SE-ResNet-50 as in Hu et al. (SE on the 4x expanded output of each bottleneck)."""
    return _resnet(Bottleneck, SEBottleneck, [3, 4, 6, 3], num_classes, reduction, attention, opts)


# ----------------------------------------------------------------------------------------------
# Inception (GoogLeNet / Inception-v1)
# ----------------------------------------------------------------------------------------------


class SEInception(Inception):
    """torchvision's Inception module followed by attention on its concatenated output."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        conv_block: Callable[..., nn.Module] | None = None,
        *,
        attention: str = "se",
        reduction: int = 16,
        attention_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, conv_block)
        out = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.se = _attention(attention, out, reduction, attention_options or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(torch.cat(self._forward(x), 1))


def se_inception(
    num_classes: int = 1000,
    reduction: int = 16,
    *,
    attention: str | None = "se",
    dropout: float = 0.2,
    **opts: Any,
) -> GoogLeNet:
    """Inception-v1 (torchvision's GoogLeNet without the auxiliary heads) with attention after each of
    its 9 Inception modules; ~6.6 M parameters, any input >= 32x32."""
    inception = _block(Inception, SEInception, attention, reduction, opts)
    model = GoogLeNet(
        num_classes=num_classes,
        aux_logits=False,
        init_weights=True,
        blocks=[BasicConv2d, inception, InceptionAux],
        dropout=dropout,
    )
    reset_attention_parameters(model)
    return model


# ----------------------------------------------------------------------------------------------
# MobileNet (V2-style inverted residuals)
# ----------------------------------------------------------------------------------------------


class SEInvertedResidual(InvertedResidual):
    """torchvision's InvertedResidual with attention between the depthwise conv and the linear
    projection, as MobileNetV3 places it; ``conv`` keeps torchvision's indices.

    ``attention=None`` leaves an identity in the slot; :meth:`set_attention` fills it later.
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        attention: str | None = "se",
        reduction: int = 16,
        attention_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(inp, oup, stride, expand_ratio, norm_layer)
        self._se_at = len(self.conv) - 2  # conv = [expand?] + depthwise + project + bn
        self.hidden_channels: int = self.conv[self._se_at - 1].out_channels
        self.se: nn.Module = nn.Identity()
        if attention is not None:
            self.set_attention(attention, reduction, **(attention_options or {}))

    def set_attention(self, name: str, reduction: int = 16, **options: Any) -> None:
        self.se = _attention(name, self.hidden_channels, reduction, options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, layer in enumerate(self.conv):
            if i == self._se_at:
                out = self.se(out)
            out = layer(out)
        return x + out if self.use_res_connect else out


def se_mobilenet(
    num_classes: int = 1000,
    reduction: int = 16,
    *,
    attention: str | None = "se",
    width_mult: float = 1.0,
    **opts: Any,
) -> MobileNetV2:
    """MobileNetV2 with attention after every depthwise conv (17 blocks, on the expanded width).

    ``reduction=16`` is the article's ratio (about +25% parameters on MobileNetV2); MobileNetV3 uses
    ``reduction=4, gate="hard_sigmoid"`` but only in some blocks; in all 17 that doubles the network.
    """
    if attention is None:
        return MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    # Attention joins after MobileNetV2's init loop, which assumes every Linear has a bias (SEBlock's don't).
    block = functools.partial(SEInvertedResidual, attention=None)
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult, block=block)
    for m in model.modules():
        if isinstance(m, SEInvertedResidual):
            m.set_attention(attention, reduction, **opts)
    return model


# ----------------------------------------------------------------------------------------------
# Overhead
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionOverhead:
    params_with: int
    params_without: int

    @property
    def extra(self) -> int:
        return self.params_with - self.params_without

    @property
    def ratio(self) -> float:
        """Extra parameters as a fraction of the network without attention."""
        return self.extra / self.params_without if self.params_without else float("inf")

    def __str__(self) -> str:
        return (
            f"{self.params_with:,} vs {self.params_without:,} parameters: "
            f"+{self.extra:,} ({100 * self.ratio:.2f}%)"
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def attention_overhead(model_with: nn.Module, model_without: nn.Module) -> AttentionOverhead:
    """Parameter cost of attention: compare a builder's output with its ``attention=None`` twin."""
    return AttentionOverhead(count_parameters(model_with), count_parameters(model_without))
