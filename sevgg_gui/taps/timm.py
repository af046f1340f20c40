"""timm's attention modules. Imported by the registry only once ``timm.layers`` is imported.

Which route each type uses (see :mod:`.registry`):

* submodule output (exact): ``layers.SEModule`` (= ``SqueezeExcite``), ``EffectiveSEModule``,
  ``SqueezeExciteCl`` (channels-last), the EfficientNet/MobileNetV3 block ``SqueezeExcite``, legacy
  SENet's ``SEModule`` (gate submodule ``sigmoid``), HGNet's ``EseModule``, ``EcaModule`` /
  ``CecaModule`` (gate (B, 1, C), flattened to (B, C)), CBAM's ``ChannelAttn``, ``SpatialAttn`` and
  ``LightSpatialAttn`` (maps), ``GatherExcite`` with global extent, ``GlobalContext``'s scale branch.
* inline activation: ``LightChannelAttn`` multiplies by ``F.sigmoid(fc2(...))``; the gate is read as
  ``sigmoid`` of ``fc2``'s output and interventions rewrite the block output as ``input * gate``.
* listed, not recorded (no per-channel multiplicative gate): selective kernel, split attention,
  additive global context, gather-excite with a spatial extent, coordinate attention, non-local and
  self-attention.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from .registry import GateTap, register_attention_type, register_gate_type, register_spatial_type


def _cls(module: str, name: str) -> type | None:
    """A timm class if this timm version has it (names move between releases)."""
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def _gate(gate: str, squeeze: str, out: str, **kw: object):
    """Tap for the common SE shape: ``x * <gate>(... <squeeze>(mean(x)) ... <out>)``."""

    def tap(m: nn.Module) -> GateTap:
        last = getattr(m, out)
        return GateTap(
            gate=getattr(m, gate),
            squeeze=getattr(m, squeeze),
            squeeze_from="input",
            channels=last.out_channels if isinstance(last, nn.Conv2d) else last.out_features,
            scales_input=True,
            **kw,  # type: ignore[arg-type]
        )

    return tap


def _eca(m: nn.Module) -> GateTap:
    # CecaModule pads the pooled vector circularly before its conv: its conv input is not the squeeze.
    circular = hasattr(m, "padding") and not hasattr(m, "conv2")
    return GateTap(
        gate=m.gate,
        squeeze=m if circular else m.conv,
        squeeze_from="mean" if circular else "input",
        channels=None,  # not stored by timm: resolved by a meta-device shape pass
        scales_input=True,
    )


def _channel_attn(m: nn.Module) -> GateTap:
    # fc1 runs twice (avg, then max): the squeeze is the block input's channel mean instead.
    return GateTap(
        gate=m.gate, squeeze=m, squeeze_from="mean", channels=m.fc2.out_channels, scales_input=True
    )


def _light_channel_attn(m: nn.Module) -> GateTap:
    return GateTap(
        gate=m.fc2,
        squeeze=m,
        squeeze_from="mean",
        channels=m.fc2.out_channels,
        scales_input=True,
        activation=torch.sigmoid,  # what the block applies inline (F.sigmoid is torch.sigmoid)
    )


def _gather_excite(m: nn.Module) -> GateTap | None:
    if m.extent != 0 or m.gather is not None:
        return None  # a gate that varies over space (or a learned gather): no per-channel gate
    fc2 = getattr(m.mlp, "fc2", None)
    return GateTap(
        gate=m.gate,
        squeeze=m.mlp,
        squeeze_from="input",
        channels=fc2.out_channels if fc2 is not None else None,
        scales_input=True,
    )


def _gather_excite_note(m: nn.Module) -> str:
    if m.extent != 0 or m.gather is not None:
        return "gate varies over space (extent or learned gather): a per-channel map, not recorded"
    return ""


def _global_context(m: nn.Module) -> GateTap | None:
    if m.mlp_scale is None:
        return None
    return GateTap(
        gate=m.gate,
        squeeze=m.mlp_scale,
        squeeze_from="input",
        channels=m.mlp_scale.fc2.out_channels,
        scales_input=m.mlp_add is None,
    )


def _global_context_note(m: nn.Module) -> str:
    if m.mlp_scale is None:
        return "additive context fusion: not a per-channel gate, not recorded"
    if m.mlp_add is not None:
        return "scale gate recorded; an additive context term follows it (not recorded)"
    return "context pooled by a learned spatial softmax" if m.conv_attn is not None else ""


L = "timm.layers"
_SE_LIKE = [
    (_cls(f"{L}.squeeze_excite", "SEModule"), "se", _gate("gate", "fc1", "fc2")),
    (_cls(f"{L}.squeeze_excite", "EffectiveSEModule"), "effective-se", _gate("gate", "fc", "fc")),
    (_cls(f"{L}.squeeze_excite", "SqueezeExciteCl"), "se", _gate("gate", "fc1", "fc2", channel_dim=-1)),
    (
        _cls("timm.models._efficientnet_blocks", "SqueezeExcite"),
        "se",
        _gate("gate", "conv_reduce", "conv_expand"),
    ),
    (_cls("timm.models.senet", "SEModule"), "se", _gate("sigmoid", "fc1", "fc2")),
    (_cls("timm.models.hgnet", "EseModule"), "ese", _gate("sigmoid", "conv", "conv")),
    (_cls(f"{L}.eca", "EcaModule"), "eca", _eca),
    (_cls(f"{L}.eca", "CecaModule"), "ceca", _eca),
    (_cls(f"{L}.cbam", "ChannelAttn"), "cbam-channel", _channel_attn),
    (_cls(f"{L}.cbam", "LightChannelAttn"), "cbam-channel", _light_channel_attn),
]
for _type, _kind, _tap in _SE_LIKE:
    if _type is not None:
        register_gate_type(_type, _tap, kind=_kind)

for _name in ("SpatialAttn", "LightSpatialAttn"):
    if (_type := _cls(f"{L}.cbam", _name)) is not None:
        register_spatial_type(_type, lambda m: m.gate, kind="cbam-spatial")

if (_type := _cls(f"{L}.gather_excite", "GatherExcite")) is not None:
    register_gate_type(_type, _gather_excite, kind="gather-excite", note=_gather_excite_note)
if (_type := _cls(f"{L}.global_context", "GlobalContext")) is not None:
    register_gate_type(_type, _global_context, kind="global-context", note=_global_context_note)

_LISTED = [
    ("selective_kernel", "SelectiveKernel", "selective-kernel", "softmax over kernel paths"),
    ("split_attn", "SplitAttn", "split-attention", "softmax over radix splits"),
    ("coord_attn", "CoordAttn", "coordinate-attention", "per-channel row and column gates"),
    ("coord_attn", "SimpleCoordAttn", "coordinate-attention", "per-channel row and column gates"),
    ("coord_attn", "EfficientLocalAttn", "coordinate-attention", "per-channel row and column gates"),
    ("coord_attn", "StripAttn", "coordinate-attention", "per-channel strip gates"),
    ("non_local_attn", "NonLocalAttn", "non-local", "pairwise spatial attention added to the input"),
    ("non_local_attn", "BatNonLocalAttn", "non-local", "bilinear spatial attention added to the input"),
    ("bottleneck_attn", "BottleneckAttn", "self-attention", "multi-head self-attention over positions"),
    ("halo_attn", "HaloAttn", "self-attention", "multi-head self-attention over local halos"),
    ("lambda_layer", "LambdaLayer", "self-attention", "lambda layer (linear attention)"),
    ("attention", "Attention", "self-attention", "multi-head self-attention over tokens"),
]
for _mod, _name, _kind, _what in _LISTED:
    if (_type := _cls(f"{L}.{_mod}", _name)) is not None:
        register_attention_type(_type, _kind, f"{_what}: not a per-channel gate, not recorded")
