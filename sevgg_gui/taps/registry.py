"""Which modules are attention, and where their gates can be observed: one registry for every source.

A registered type maps to a :class:`TapType`: its ``kind`` (``se``, ``eca``, ``cbam-spatial``...), how
to find its channel gate (a :class:`GateTap`) and/or spatial map, and a note saying what is shown.
Types whose attention is not a per-channel multiplicative gate (split attention, selective kernel,
self-attention) are registered with no taps: they are *listed* (``kind`` + note) but not recorded.

Entries come from :mod:`.builtin` (ours), :mod:`.torchvision` and :mod:`.timm` (registered only once
those libraries are imported, so start-up never pays for them) and, for types nobody registered, from
the behaviour probe (:mod:`.probe`), which finds blocks whose output is their input times a per-channel,
input-dependent factor.

How a gate is read (``GateTap``), in order of preference:

* ``gate`` is a submodule whose forward output *is* the gate (SE's sigmoid): exact, free, and an
  intervention rewrites that output, so the block itself applies the new gate.
* ``activation`` is set: the gate is ``activation(output of gate)``, computed inline by the block
  (timm's ``LightChannelAttn`` applies ``F.sigmoid`` to ``fc2``'s output). Recording applies the same
  function to the same tensor (bit-identical); an intervention rewrites the *block's* output for the
  intervened channels as ``input * new_gate`` (the block computes ``input * gate``).
* ``ratio`` is set (blocks found by behaviour): ``gate`` is the block itself and the gate is
  ``output / input`` per channel, read where ``|input|`` is largest (NaN for an all-zero channel,
  whose gate cannot be observed); interventions rewrite the block's output like above.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class GateTap:
    """Where a block's gate and squeeze vector can be observed.

    ``gate``: submodule whose forward output is the gate (B, C), (B, C, 1, 1) or (B, 1, C) -- or its
    pre-activation (``activation``), or the block itself (``ratio``).
    ``squeeze``: submodule whose input (``squeeze_from="input"``) or output holds the channel
    descriptor, or whose input's channel mean is taken (``"mean"``: the block, when no submodule
    sees the plain channel means).
    ``channels``: C; ``None`` until known (timm's ECA does not store it: see :func:`resolve_channels`).
    """

    gate: nn.Module
    squeeze: nn.Module
    squeeze_from: Literal["input", "output", "mean"]
    channels: int | None
    # The block's output is exactly input * gate per channel (SE, ECA): the after-gate feature map is
    # then the before-gate map times the gate (average pooling is linear), one downsampling, not two.
    scales_input: bool = False
    activation: Callable[[torch.Tensor], torch.Tensor] | None = None
    ratio: bool = False
    channel_dim: int = 1  # -1 for channels-last blocks (B, H, W, C)

    @property
    def via_block(self) -> bool:
        """Interventions rewrite the block's output (the gate is not a submodule's output)."""
        return self.activation is not None or self.ratio


TapFactory = Callable[[nn.Module], GateTap | None]
SpatialFactory = Callable[[nn.Module], nn.Module | None]
Text = str | Callable[[nn.Module], str]


@dataclass(frozen=True)
class TapType:
    """One registered attention type; ``gate`` / ``spatial`` return None for an instance whose
    configuration has no such gate (timm's ``GatherExcite`` with a spatial extent)."""

    kind: Text | None = None
    gate: TapFactory | None = None
    spatial: SpatialFactory | None = None
    note: Text = ""


@dataclass
class AttentionBlock:
    """One attention block of a model, as the views list it."""

    name: str
    module: nn.Module
    kind: str
    channels: int | None
    found_by: Literal["type", "behaviour"]
    tap: GateTap | None = None
    spatial: nn.Module | None = None
    note: str = ""

    @property
    def recorded(self) -> bool:
        return self.tap is not None or self.spatial is not None

    def describe(self) -> dict[str, object]:
        """Plain data for ``sevgg info --json`` and the model panel."""
        return {
            "name": self.name,
            "type": type(self.module).__name__,
            "kind": self.kind,
            "channels": self.channels,
            "found_by": self.found_by,
            "gate": self.tap is not None,
            "map": self.spatial is not None,
            "recorded": self.recorded,
            "note": self.note,
        }


_TYPES: dict[type, TapType] = {}


def _merge(cls: type, **changes: object) -> None:
    _TYPES[cls] = replace(_TYPES.get(cls, TapType()), **{k: v for k, v in changes.items() if v is not None})


def register_gate_type(
    cls: type, tap: TapFactory, kind: Text | None = None, note: Text | None = None
) -> None:
    """Teach the recorder a channel-gate type: ``tap(module)`` says where its gate is."""
    _merge(cls, gate=tap, kind=kind, note=note)


def register_spatial_type(
    cls: type, tap: SpatialFactory, kind: Text | None = None, note: Text | None = None
) -> None:
    """Teach the recorder where a type's spatial attention map (B, 1, H, W) comes from.

    ``tap(module)`` returns the submodule whose forward output is that map. A type may have a channel
    gate (``register_gate_type``), a spatial map, or both; spatial-only types (sSE) are blocks too.
    """
    _merge(cls, spatial=tap, kind=kind, note=note)


def register_attention_type(cls: type, kind: Text, note: Text) -> None:
    """A type that is attention but has no per-channel gate to record: listed with ``note``."""
    _merge(cls, kind=kind, note=note)


def _first(module: nn.Module, field: str) -> object:
    for cls in type(module).__mro__:
        entry = _TYPES.get(cls)
        if entry is not None and getattr(entry, field):
            return getattr(entry, field)
    return None


def registered(module: nn.Module) -> bool:
    return any(cls in _TYPES for cls in type(module).__mro__)


def _text(value: object, module: nn.Module) -> str:
    return value(module) if callable(value) else str(value or "")


def block_from_type(name: str, module: nn.Module) -> AttentionBlock | None:
    """The registered description of ``module``, or None for an unregistered type."""
    if not registered(module):
        return None
    gate_factory = _first(module, "gate")
    spatial_factory = _first(module, "spatial")
    tap = gate_factory(module) if gate_factory else None  # type: ignore[operator]
    spatial = spatial_factory(module) if spatial_factory else None  # type: ignore[operator]
    kind = _text(_first(module, "kind"), module) or type(module).__name__.lower()
    note = _text(_first(module, "note"), module)
    return AttentionBlock(name, module, kind, tap.channels if tap else None, "type", tap, spatial, note)


# ------------------------------------------------------------------------------------------------------
# Library registrations, imported only when needed
# ------------------------------------------------------------------------------------------------------
_loaded: set[str] = set()


def ensure_registered() -> None:
    """Register ours always, torchvision's / timm's only once they are imported.

    Called on every scan instead of at import time: importing torchvision costs ~1 s of start-up
    (its ops pull in torch._dynamo), timm more; a model can only hold their modules if whoever built
    it has imported them already, so checking ``sys.modules`` loses nothing.
    """
    if "builtin" not in _loaded:
        _loaded.add("builtin")
        from . import builtin  # noqa: F401  (registers on import)
    if "torchvision" not in _loaded and "torchvision.ops.misc" in sys.modules:
        _loaded.add("torchvision")
        from . import torchvision  # noqa: F401
    if "timm" not in _loaded and "timm.layers" in sys.modules:
        _loaded.add("timm")
        from . import timm  # noqa: F401


def resolve_channels(model: nn.Module, blocks: list[AttentionBlock], example: torch.Tensor | None) -> None:
    """Fill in ``channels`` a tap could not know (timm's ECA keeps no channel count) from one
    shape-only pass on the ``meta`` device: no memory, no compute, the real weights untouched."""
    todo = [b for b in blocks if b.tap is not None and b.tap.channels is None]
    if not todo:
        return
    shapes: dict[str, int] = {}
    handles = []
    for b in todo:
        tap = b.tap
        assert tap is not None

        def hook(m: nn.Module, inputs: object, out: torch.Tensor, name: str = b.name) -> None:
            shapes[name] = int(out[0].numel())

        handles.append(tap.gate.register_forward_hook(hook))
    shape = tuple(example.shape[1:]) if example is not None else (3, 224, 224)
    fake = {
        n: torch.empty_like(t, device="meta") for n, t in [*model.named_parameters(), *model.named_buffers()]
    }
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.func.functional_call(model, fake, (torch.empty(1, *shape, device="meta"),))
    except Exception:  # noqa: BLE001 - a model the meta device cannot run: channels stay unknown
        pass
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for b in todo:
        if b.name in shapes:
            assert b.tap is not None
            b.tap = replace(b.tap, channels=shapes[b.name])
            b.channels = shapes[b.name]
