"""Forward hooks that record every attention gate exactly as the model computed it.

A small registry maps module types to a :class:`GateTap` that says which submodule produces the gate
and where its squeeze vector can be read. Recording therefore costs no second computation and no
extra forward: the hooks keep references to tensors the model produced anyway.

Interventions ("what if channel 17 of block 3 were muted?") live here too: they rewrite the gate in
the same hook, so the recorder always reports the gate that was actually applied.
"""

from __future__ import annotations

import numbers
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .models.se import SEBlock


@dataclass(frozen=True)
class GateTap:
    """Where a block's gate and squeeze vector can be observed.

    ``gate``: submodule whose forward output is the gate (B, C) or (B, C, 1, 1).
    ``squeeze``: submodule whose input (``squeeze_from="input"``) or output holds the channel means.
    """

    gate: nn.Module
    squeeze: nn.Module
    squeeze_from: Literal["input", "output"]
    channels: int
    # The block's output is exactly input * gate per channel (SE, ECA): the after-gate feature map is
    # then the before-gate map times the gate (average pooling is linear), one downsampling, not two.
    scales_input: bool = False


_TAPS: dict[type, Callable[[nn.Module], GateTap]] = {}


def register_gate_type(cls: type, tap: Callable[[nn.Module], GateTap]) -> None:
    """Teach the recorder a new attention type (later variants join here)."""
    _TAPS[cls] = tap


register_gate_type(
    SEBlock,
    lambda m: GateTap(gate=m.fc, squeeze=m.fc, squeeze_from="input", channels=m.channels, scales_input=True),
)


_torchvision_registered = False


def _register_torchvision() -> None:
    """Register torchvision's ``SqueezeExcitation`` once torchvision is imported anyway.

    Called on every scan instead of at import time: importing torchvision costs ~1 s of start-up
    (its ops pull in torch._dynamo), and a model can only hold a torchvision module if whoever built
    it has imported torchvision already, so checking ``sys.modules`` loses nothing.
    """
    global _torchvision_registered
    if _torchvision_registered or "torchvision.ops.misc" not in sys.modules:
        return
    _torchvision_registered = True
    from torchvision.ops.misc import SqueezeExcitation

    register_gate_type(
        SqueezeExcitation,
        lambda m: GateTap(
            gate=m.scale_activation,
            squeeze=m.avgpool,
            squeeze_from="output",
            channels=m.fc2.out_channels,
            scales_input=True,
        ),
    )


_SPATIAL_TAPS: dict[type, Callable[[nn.Module], nn.Module]] = {}


def register_spatial_type(cls: type, tap: Callable[[nn.Module], nn.Module]) -> None:
    """Teach the recorder where a type's spatial attention map (B, 1, H, W) comes from.

    ``tap(module)`` returns the submodule whose forward output is that map. A type may have a channel
    gate (``register_gate_type``), a spatial map, or both; spatial-only types (sSE) are blocks too.
    """
    _SPATIAL_TAPS[cls] = tap


def find_gate_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All recordable attention blocks in forward-definition order, by registered type."""
    _register_torchvision()
    types = tuple(_TAPS) + tuple(_SPATIAL_TAPS)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, types) and n]


def _tap_for(module: nn.Module) -> GateTap:
    for cls in type(module).__mro__:
        if cls in _TAPS:
            return _TAPS[cls](module)
    raise TypeError(f"no gate tap registered for {type(module).__name__}")


def _has_gate_tap(module: nn.Module) -> bool:
    return any(cls in _TAPS for cls in type(module).__mro__)


def _spatial_tap_for(module: nn.Module) -> nn.Module | None:
    for cls in type(module).__mro__:
        if cls in _SPATIAL_TAPS:
            return _SPATIAL_TAPS[cls](module)
    return None


@dataclass
class _Intervention:
    channels: torch.Tensor  # long indices
    value: float | None
    scale: float | None


class ExcitationRecorder:
    """Record gates (B, C), squeeze vectors (B, C) and optionally feature maps of every attention block.

    Use as a context manager (hooks are removed on exit, also on exceptions) or call ``attach`` /
    ``detach`` for a long-lived recorder. After a forward, ``excitations`` / ``squeezes`` are ordered
    dicts block-name -> (B, C) float32 CPU tensors of the *last* forward.

    ``feature_maps``: names of blocks whose output maps (and input maps, i.e. before the gate) to keep,
    each downsampled to at most ``map_size`` pixels on a side. Keep it to the block on screen: maps are
    the only recording that costs measurable time.
    """

    def __init__(
        self,
        model: nn.Module,
        feature_maps: Iterable[str] = (),
        map_size: int = 28,
    ) -> None:
        self.model = model
        self.blocks: OrderedDict[str, nn.Module] = OrderedDict(find_gate_blocks(model))
        if not self.blocks:
            raise ValueError(f"{type(model).__name__} has no recordable attention blocks")
        self.taps: dict[str, GateTap] = {n: _tap_for(b) for n, b in self.blocks.items() if _has_gate_tap(b)}
        # Blocks with a spatial map: name -> submodule whose output is the (B, 1, H, W) map.
        self.spatial_taps: dict[str, nn.Module] = {
            n: t for n, b in self.blocks.items() if (t := _spatial_tap_for(b)) is not None
        }
        self._first = next(iter(self.blocks))
        self.map_size = map_size
        self._map_names: set[str] = set()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._map_handles: dict[str, list[torch.utils.hooks.RemovableHandle]] = {}
        self._gates: dict[str, torch.Tensor] = {}
        self._squeezes: dict[str, torch.Tensor] = {}
        self._maps_in: dict[str, torch.Tensor] = {}
        self._maps_out: dict[str, torch.Tensor] = {}
        self._spatial: dict[str, torch.Tensor] = {}
        self._interventions: dict[str, list[_Intervention]] = {}
        self.forwards = 0
        self.set_feature_maps(feature_maps)

    # ---------------------------------------------------------------- lifecycle
    def attach(self) -> ExcitationRecorder:
        if self._handles:
            return self
        for name in self.blocks:
            tap = self.taps.get(name)
            if tap is not None:
                self._handles.append(tap.gate.register_forward_hook(self._gate_hook(name)))
                if not self._squeeze_in_gate_hook(tap):
                    self._handles.append(
                        tap.squeeze.register_forward_hook(self._squeeze_hook(name, tap.squeeze_from))
                    )
            if name in self.spatial_taps:
                self._handles.append(self.spatial_taps[name].register_forward_hook(self._spatial_hook(name)))
        self._hook_map_blocks()
        return self

    def _hook_map_blocks(self) -> None:
        """Hook a block itself only while its feature maps are wanted: a block without hooks of its
        own may be run fused with the max-pool after it (models.se.se_then_max_pool)."""
        for name in list(self._map_handles):
            if name not in self._map_names or not self._handles:
                for h in self._map_handles.pop(name):
                    h.remove()
        if not self._handles:
            return
        for name in self._map_names:
            if name not in self._map_handles:
                block = self.blocks[name]
                self._map_handles[name] = [
                    block.register_forward_pre_hook(self._pre_hook(name)),
                    block.register_forward_hook(self._post_hook(name)),
                ]

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._hook_map_blocks()  # no handles: removes the map hooks too

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def __enter__(self) -> ExcitationRecorder:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def set_feature_maps(self, names: Iterable[str]) -> None:
        names = set(names)
        unknown = names - set(self.blocks)
        if unknown:
            raise KeyError(f"unknown block(s) {sorted(unknown)}; known: {list(self.blocks)}")
        self._map_names = names
        self._hook_map_blocks()
        for maps in (self._maps_in, self._maps_out):
            for stale in set(maps) - names:  # else a block no longer asked for keeps reporting old maps
                del maps[stale]

    # ---------------------------------------------------------------- hooks
    @staticmethod
    def _squeeze_in_gate_hook(tap: GateTap) -> bool:
        return tap.squeeze is tap.gate and tap.squeeze_from == "input"

    def _gate_hook(self, name: str):
        squeeze_here = self._squeeze_in_gate_hook(self.taps[name])
        count = name == self._first  # forwards are counted where the first block computes its gate

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            if output.is_meta:  # shape analysis (analysis.layer_macs) is not a forward to record
                return None
            if count:
                self.forwards += 1
            gate = output
            if name in self._interventions:
                gate = self._apply_interventions(name, gate)
            self._gates[name] = gate.detach().reshape(gate.shape[0], -1)
            if squeeze_here:
                self._squeezes[name] = inputs[0].detach().reshape(inputs[0].shape[0], -1)
            return gate if gate is not output else None

        return hook

    def _squeeze_hook(self, name: str, where: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            t = output if where == "output" else inputs[0]
            if t.is_meta:
                return
            self._squeezes[name] = t.detach().reshape(t.shape[0], -1)

        return hook

    def _spatial_hook(self, name: str):
        count = name == self._first and name not in self.taps  # a spatial-only first block counts

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if not output.is_meta:
                if count:
                    self.forwards += 1
                self._spatial[name] = output.detach()

        return hook

    def _pre_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if inputs[0].is_meta:
                return
            if name in self._map_names:
                # Downsampled copy taken before the block may scale its input in place.
                self._maps_in[name] = self._shrink(inputs[0])

        return hook

    def _post_hook(self, name: str):
        tap = self.taps.get(name)
        derive = tap is not None and tap.scales_input

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if name not in self._map_names or output.is_meta:
                return
            before, gate = self._maps_in.get(name), self._gates.get(name)
            if derive and before is not None and gate is not None:
                self._maps_out[name] = before * gate.reshape(*gate.shape[:2], 1, 1).to(before.dtype)
            else:
                self._maps_out[name] = self._shrink(output)

        return hook

    def _shrink(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        h, w = x.shape[-2:]
        if max(h, w) > self.map_size:
            scale = self.map_size / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            return F.adaptive_avg_pool2d(x, size)
        return x.clone()

    # ---------------------------------------------------------------- interventions
    def intervene(
        self,
        block: str,
        channels: int | Iterable[int],
        *,
        value: float | None = None,
        scale: float | None = None,
    ) -> None:
        """Override (``value``) or multiply (``scale``) the gates of ``channels`` in ``block``
        for every following forward, until ``undo``/``clear_interventions``."""
        if (value is None) == (scale is None):
            raise ValueError("give exactly one of value= or scale=")
        if block not in self.blocks:
            raise KeyError(f"unknown block {block!r}; known: {list(self.blocks)}")
        if block not in self.taps:
            raise ValueError(f"{block} has only a spatial map, no channel gate to intervene on")
        single = isinstance(channels, numbers.Integral)  # int, numpy integer, 0-d tensor index...
        idx = torch.as_tensor([int(channels)] if single else [int(c) for c in channels], dtype=torch.long)
        n = self.taps[block].channels
        if idx.numel() and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"channel out of range for {block} ({n} channels)")
        self._interventions.setdefault(block, []).append(_Intervention(idx, value, scale))

    def undo(self, block: str | None = None) -> None:
        """Remove the most recent intervention (of ``block`` if given)."""
        if block is None:
            if not self._interventions:
                return
            block = next(reversed(self._interventions))
        items = self._interventions.get(block)
        if items:
            items.pop()
            if not items:
                del self._interventions[block]

    def clear_interventions(self) -> None:
        self._interventions.clear()

    @property
    def interventions(self) -> dict[str, list[tuple[list[int], float | None, float | None]]]:
        return {
            b: [(iv.channels.tolist(), iv.value, iv.scale) for iv in items]
            for b, items in self._interventions.items()
        }

    def _apply_interventions(self, name: str, gate: torch.Tensor) -> torch.Tensor:
        flat = gate.reshape(gate.shape[0], -1).clone()
        for iv in self._interventions[name]:
            idx = iv.channels.to(flat.device)
            if iv.value is not None:
                flat[:, idx] = iv.value
            else:
                flat[:, idx] = flat[:, idx] * iv.scale
        return flat.view_as(gate)

    # ---------------------------------------------------------------- results
    @staticmethod
    def _cpu(d: dict[str, torch.Tensor], order: Iterable[str]) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((n, d[n].float().cpu()) for n in order if n in d)

    @property
    def excitations(self) -> OrderedDict[str, torch.Tensor]:
        return self._cpu(self._gates, self.blocks)

    @property
    def squeezes(self) -> OrderedDict[str, torch.Tensor]:
        return self._cpu(self._squeezes, self.blocks)

    @property
    def spatial_maps(self) -> OrderedDict[str, torch.Tensor]:
        """block -> (B, 1, H, W) spatial attention map at the block's resolution, float32 CPU."""
        return self._cpu(self._spatial, self.blocks)

    @property
    def feature_maps(self) -> OrderedDict[str, tuple[torch.Tensor, torch.Tensor]]:
        """block -> (before gate, after gate), each (B, C, h, w) downsampled, float32 CPU."""
        return OrderedDict(
            (n, (self._maps_in[n].float().cpu(), self._maps_out[n].float().cpu()))
            for n in self.blocks
            if n in self._maps_in and n in self._maps_out
        )

    def reset(self) -> None:
        self._gates.clear()
        self._squeezes.clear()
        self._maps_in.clear()
        self._maps_out.clear()
        self._spatial.clear()
