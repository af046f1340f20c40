"""Attention variants from the article's section 8.2 (and ECA), behind one registry and factory.

``create_attention(name, channels, **options)`` builds any of them with one option vocabulary:
``reduction`` (bottleneck ratio, hidden width ``max(1, C // reduction)``), ``kernel_size`` (the
type's own convolution) and ``gate`` (``"sigmoid"`` or ``"hard_sigmoid"``). Every module accepts any
channel count >= 1 and any spatial size, 1x1 and odd sizes included (no fixed-size pooling).

Recording contract (see :mod:`sevgg_gui.taps.builtin`): a channel gate is the output of a dedicated
submodule ``gate`` ((B, C) or (B, C, 1, 1)), a spatial map the output of a dedicated submodule
``spatial_gate`` ((B, 1, H, W)), and the channel descriptor the output of ``avg_pool``. The recorder
hooks exactly those, so it sees what the forward actually used and its interventions change the output.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .se import SEBlock, se_hidden

GateKind = Literal["sigmoid", "hard_sigmoid"]
_GATES: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid}


def make_gate(kind: str) -> nn.Module:
    """The squashing function of a gate; hard-sigmoid is MobileNetV3's cheap, quantisation-friendly one."""
    try:
        return _GATES[kind]()
    except KeyError:
        raise ValueError(f"unknown gate {kind!r}; use one of {sorted(_GATES)}") from None


def _odd_kernel(kernel_size: int, what: str) -> int:
    """'Same' padding needs an odd kernel, otherwise the output would shrink by one pixel."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{what} kernel_size must be odd and >= 1, got {kernel_size}")
    return kernel_size


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel: k = |log2(C)/gamma + b/gamma|, rounded down, then made odd (Wang et al. 2020)."""
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    t = int(abs(math.log2(channels) / gamma + b / gamma))
    return t if t % 2 else t + 1


class _ChannelMean(nn.Module):
    """(B, C, H, W) -> (B, 1, H, W): a module so the recorder can hook the map it produces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


class _ChannelMax(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class SpatialSE(nn.Module):
    """sSE (Roy et al. 2018): squeeze channels with a 1x1 conv to one map, sigmoid, multiply.

    The complement of SE: it says *where* to look, identically for every channel.
    """

    def __init__(self, channels: int, kernel_size: int = 1, gate: GateKind = "sigmoid") -> None:
        super().__init__()
        se_hidden(channels, 1)  # validates channels >= 1
        k = _odd_kernel(kernel_size, "sSE")
        self.channels = channels
        self.conv = nn.Conv2d(channels, 1, kernel_size=k, padding=k // 2)
        self.spatial_gate = make_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.spatial_gate(self.conv(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class SCSE(nn.Module):
    """scSE (Roy et al., MICCAI 2018): channel SE and spatial SE in parallel on the same input.

    ``combine="add"`` (default) is the MICCAI 2018 paper's element-wise addition
    ``x * g_c + x * g_s``; ``"max"`` is the max-out the same authors preferred in their 2019 TMI
    follow-up. The cSE MLP has biases, as in the authors' code.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 1,
        gate: GateKind = "sigmoid",
        combine: Literal["add", "max"] = "add",
    ) -> None:
        super().__init__()
        if combine not in ("add", "max"):
            raise ValueError(f"combine must be 'add' or 'max', got {combine!r}")
        hidden = se_hidden(channels, reduction)
        k = _odd_kernel(kernel_size, "scSE")
        self.channels, self.reduction, self.combine = channels, reduction, combine
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.gate = make_gate(gate)
        self.conv = nn.Conv2d(channels, 1, kernel_size=k, padding=k // 2)
        self.spatial_gate = make_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g_c = self.gate(self.fc(self.avg_pool(x).flatten(1)))  # (B, C)
        g_s = self.spatial_gate(self.conv(x))  # (B, 1, H, W)
        c = x * g_c[:, :, None, None]
        s = x * g_s
        return c + s if self.combine == "add" else torch.maximum(c, s)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, combine={self.combine!r}"


class BAM(nn.Module):
    """BAM (Park et al. 2018): ``F' = F + F * sigmoid(M_c(F) + M_s(F))``.

    ``M_c = BN(MLP(AvgPool(F)))`` with a *global* average pool (the reference code pools with a fixed
    kernel of the map size; the adaptive pool is identical and works at any size). ``M_s`` is the
    paper's 1x1 reduce -> two dilated ``kernel_size`` convs (dilation 4) -> 1x1 to one map -> BN; the
    padding keeps every size, 1x1 included. BatchNorm makes training need batches of 2 or more.

    The 3-D attention ``sigmoid(M_c + M_s)`` does not factor into a channel and a spatial part, so what
    is recorded are its exact marginals: ``gate`` = its spatial mean per channel (B, C, 1, 1),
    ``spatial_gate`` = its channel mean (B, 1, H, W). A rewritten ``gate`` (a recorder intervention)
    rescales that channel's attention by new/old mean, so "value=v" sets the channel's mean attention
    to v and keeps its spatial pattern; untouched, the attention is used bit for bit.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 3,
        dilation: int = 4,
        gate: GateKind = "sigmoid",
    ) -> None:
        super().__init__()
        hidden = se_hidden(channels, reduction)
        k = _odd_kernel(kernel_size, "BAM")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        pad = dilation * (k - 1) // 2
        self.channels, self.reduction, self.dilation = channels, reduction, dilation
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.BatchNorm1d(channels),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, k, padding=pad, dilation=dilation),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, k, padding=pad, dilation=dilation),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
            nn.BatchNorm2d(1),
        )
        self.attention = make_gate(gate)
        self.gate = nn.Identity()
        self.spatial_gate = _ChannelMean()

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """``sigmoid(M_c(F) + M_s(F))``, (B, C, H, W); the quantity the paper multiplies F with."""
        m_c = self.channel_mlp(self.avg_pool(x).flatten(1))[:, :, None, None]
        return self.attention(m_c + self.spatial(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attention_map(x)
        mean = a.mean(dim=(2, 3), keepdim=True)
        g = self.gate(mean)
        if g is not mean:  # an intervention replaced the channel gate
            a = a * (g / mean.clamp_min(torch.finfo(mean.dtype).tiny))
        self.spatial_gate(a)  # recorded only; costs one channel mean
        return x + x * a

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, dilation={self.dilation}"


class CBAM(nn.Module):
    """CBAM (Woo et al. 2018): channel attention, *then* spatial attention, applied sequentially.

    Channel: ``sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with one shared MLP. Spatial:
    ``sigmoid(conv_kxk([mean_c(F'); max_c(F')]))`` on the channel-refined F'. The spatial conv follows
    the paper's equation (no BatchNorm; the reference code's BN is replaced by the conv's bias).
    """

    def __init__(
        self, channels: int, reduction: int = 16, kernel_size: int = 7, gate: GateKind = "sigmoid"
    ) -> None:
        super().__init__()
        hidden = se_hidden(channels, reduction)
        k = _odd_kernel(kernel_size, "CBAM")
        self.channels, self.reduction = channels, reduction
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )
        self.gate = make_gate(gate)
        self.channel_mean = _ChannelMean()
        self.channel_max = _ChannelMax()
        self.conv = nn.Conv2d(2, 1, kernel_size=k, padding=k // 2)
        self.spatial_gate = make_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(self.avg_pool(x).flatten(1)) + self.mlp(self.max_pool(x).flatten(1))
        x = x * self.gate(logits[:, :, None, None])
        pooled = torch.cat([self.channel_mean(x), self.channel_max(x)], dim=1)
        return x * self.spatial_gate(self.conv(pooled))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class ECA(nn.Module):
    """ECA (Wang et al. 2020): SE without the bottleneck; a 1-D conv across neighbouring channels.

    ``kernel_size=None`` picks the paper's adaptive size (:func:`eca_kernel_size`). No reduction:
    avoiding the dimensionality reduction is the point of ECA.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gate: GateKind = "sigmoid",
        gamma: int = 2,
        b: int = 1,
    ) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, b) if kernel_size is None else _odd_kernel(kernel_size, "ECA")
        self.channels, self.kernel_size = channels, k
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)
        self.gate = make_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.avg_pool(x).flatten(1).unsqueeze(1)).squeeze(1)  # (B, C)
        return x * self.gate(y)[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


# ----------------------------------------------------------------------------------------------
# Registry and factory
# ----------------------------------------------------------------------------------------------


def _se(channels: int, reduction: int = 16, gate: GateKind = "sigmoid", inplace: bool = False) -> SEBlock:
    """The article's SEBlock, unchanged (same keys); a hard-sigmoid gate swaps the parameter-free fc.3."""
    block = SEBlock(channels, reduction, inplace=inplace)
    if gate != "sigmoid":
        block.fc[3] = make_gate(gate)
    return block


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
DEFAULT_ATTENTION = "se"


def register_attention(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a type: ``factory(channels, **options)``; its keyword parameters are the accepted options."""
    _REGISTRY[name.lower()] = factory


def available_attention() -> list[str]:
    return list(_REGISTRY)


def attention_options(name: str) -> list[str]:
    """The option names ``create_attention(name, ...)`` accepts."""
    params = list(inspect.signature(_factory(name)).parameters.values())[1:]
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _factory(name: str) -> Callable[..., nn.Module]:
    try:
        return _REGISTRY[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown attention {name!r}; available: {', '.join(_REGISTRY)}") from None


def create_attention(name: str, channels: int, **options: object) -> nn.Module:
    """Build a registered attention module for ``channels`` input channels (``DEFAULT_ATTENTION``: SE).

    Options a type does not have raise ``ValueError`` instead of being silently ignored; which ones a
    type takes is ``attention_options(name)``.
    """
    factory = _factory(name)
    accepted = attention_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"attention {name!r} takes no option(s) {unknown}; it takes {accepted}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be an int >= 1, got {channels!r}")
    return factory(channels, **options)


register_attention("se", _se)
register_attention("sse", SpatialSE)
register_attention("scse", SCSE)
register_attention("bam", BAM)
register_attention("cbam", CBAM)
register_attention("eca", ECA)

ATTENTION_TYPES: tuple[type[nn.Module], ...] = (SEBlock, SpatialSE, SCSE, BAM, CBAM, ECA)


def reset_attention_parameters(model: nn.Module) -> None:
    """Give attention modules back their own default init.

    Network builders (torchvision's ResNet, GoogLeNet, MobileNetV2) re-initialise *every* conv with a
    trunk-oriented scheme; for a 1x1 conv to a single map (sSE) Kaiming fan-out means std sqrt(2) and
    saturated gates from the first step; an N(0, 0.01) Linear init makes every SE gate 0.5.
    """
    for m in model.modules():
        if isinstance(m, ATTENTION_TYPES):
            for sub in m.modules():
                if sub is not m and hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
