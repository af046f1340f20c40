"""Forward hooks that record every attention gate exactly as the model computed it.

The registry in :mod:`sevgg_gui.taps` says which modules are attention and, per block, a
:class:`GateTap`: which submodule produces the gate and where its squeeze vector can be read.
Recording therefore costs no second computation and no extra forward: the hooks keep references to
tensors the model produced anyway (blocks whose gate is computed inline are read from their own
input and output, see :mod:`sevgg_gui.taps.registry`).

Interventions ("what if channel 17 of block 3 were muted?") live here too: they rewrite the gate in
the same hook, so the recorder always reports the gate that was actually applied.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .intervention_history import InterventionHistory
from .taps import AttentionBlock, GateTap, attention_blocks, find_gate_blocks
from .taps.registry import ensure_registered, register_gate_type, register_spatial_type

__all__ = [
    "ExcitationRecorder",
    "GateTap",
    "find_gate_blocks",
    "register_gate_type",
    "register_spatial_type",
]


def _register_torchvision() -> None:
    """Kept for callers of the old name: the registry now loads library taps on every scan."""
    ensure_registered()


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, 1) / (B, 1, C) / (B, C) -> (B, C), a view as ``reshape`` gives; detached only when it
    carries autograd history (a recording hook runs per block per forward: ~0.4 us saved each)."""
    t = t.detach() if t.requires_grad else t
    return t.flatten(1) if t.dim() > 1 else t.unsqueeze(1)


def _float_cpu(t: torch.Tensor) -> torch.Tensor:
    """``t.float().cpu()``, which returns ``t`` itself when it is already float32 on the CPU; the check
    first skips two dispatcher calls per tensor on that common path (read back every frame)."""
    return t if t.dtype is torch.float32 and t.is_cpu else t.float().cpu()


@dataclass
class _Intervention:
    channels: torch.Tensor  # long indices
    value: float | None
    scale: float | None


class ExcitationRecorder(InterventionHistory):
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
        example_input: torch.Tensor | None = None,
    ) -> None:
        """``example_input``: a batch of (at least) two different images; given one, modules of types
        no registry knows are probed once (one forward) for gate behaviour (:mod:`sevgg_gui.taps.probe`)."""
        self.model = model
        infos, self.probe_report = attention_blocks(model, example_input)
        # Every attention block, recorded or only listed (split attention, self-attention...).
        self.block_infos: list[AttentionBlock] = infos
        self.blocks: OrderedDict[str, nn.Module] = OrderedDict(
            (b.name, b.module) for b in infos if b.recorded
        )
        if not self.blocks:
            listed = ", ".join(sorted({b.kind for b in infos}))
            why = [f"only attention that is not a per-channel gate: {listed}"] if listed else []
            if self.probe_report is not None and self.probe_report.candidates:
                why.append(self.probe_report.summary())
            detail = f" ({'; '.join(why)})" if why else ""
            raise ValueError(f"{type(model).__name__} has no recordable attention blocks{detail}")
        self.taps: dict[str, GateTap] = {b.name: b.tap for b in infos if b.tap is not None}
        # Blocks with a spatial map: name -> submodule whose output is the (B, 1, H, W) map.
        self.spatial_taps: dict[str, nn.Module] = {b.name: b.spatial for b in infos if b.spatial is not None}
        self._first = next(iter(self.blocks))
        self.map_size = map_size
        self._map_names: set[str] = set()
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._map_handles: dict[str, list[torch.utils.hooks.RemovableHandle]] = {}
        self._gates: dict[str, torch.Tensor] = {}
        self._raw: dict[str, torch.Tensor] = {}  # inline gates before interventions (via_block taps)
        self._pending: dict[str, tuple] = {}  # per via_block block: what its pre-hook saw
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
                block = self.blocks[name]
                if not tap.ratio:
                    self._handles.append(tap.gate.register_forward_hook(self._gate_hook(name)))
                if tap.via_block:
                    self._handles.append(block.register_forward_pre_hook(self._block_pre_hook(name)))
                    self._handles.append(block.register_forward_hook(self._block_post_hook(name)))
                if tap.squeeze_from == "mean":
                    self._handles.append(tap.squeeze.register_forward_pre_hook(self._mean_squeeze_hook(name)))
                elif not self._squeeze_in_gate_hook(tap):
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
        tap = self.taps[name]
        squeeze_here = self._squeeze_in_gate_hook(tap)
        count = name == self._first  # forwards are counted where the first block computes its gate
        activation = tap.activation

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            if output.is_meta:  # shape analysis (analysis.layer_macs) is not a forward to record
                return None
            if count:
                self.forwards += 1
            if squeeze_here:
                self._squeezes[name] = _flat(inputs[0])
            if activation is not None:  # inline gate: the block applies activation(output) itself
                gate = activation(output.detach())
                self._raw[name] = self._gates[name] = gate.flatten(1)
                return None
            if name in self._interventions:
                gate = self._apply_interventions(name, output)
                self._gates[name] = _flat(gate)
                return gate
            self._gates[name] = _flat(output)
            return None

        return hook

    def _block_pre_hook(self, name: str):
        """For gates read from the block (inline activation, or output/input): what must be seen
        before the block runs -- it may scale its input in place."""
        tap = self.taps[name]
        dim = tap.channel_dim

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            if x.is_meta:
                return
            idx = xs = None
            if tap.ratio:
                flat = x.detach().movedim(dim, 1).reshape(x.shape[0], x.shape[dim], -1)
                idx = flat.abs().argmax(dim=-1, keepdim=True)
                xs = flat.gather(-1, idx)
            self._raw.pop(name, None)  # set again by this forward's gate hook (inline activation)
            chans = self._intervened_channels(name, x.device)
            kept = x.detach().index_select(dim, chans).clone() if chans is not None else None
            self._pending[name] = (idx, xs, chans, kept)

        return hook

    def _block_post_hook(self, name: str):
        tap = self.taps[name]
        dim = tap.channel_dim
        count = tap.ratio and name == self._first

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            pending = self._pending.pop(name, None)
            if output.is_meta or pending is None:
                return None
            idx, xs, chans, kept = pending
            if tap.ratio:
                if count:
                    self.forwards += 1
                flat = output.detach().movedim(dim, 1).reshape(output.shape[0], output.shape[dim], -1)
                g = flat.gather(-1, idx) / xs
                g = torch.where(xs == 0, torch.full_like(g, float("nan")), g)  # unobservable: NaN
                self._raw[name] = g.squeeze(-1)
            raw = self._raw.get(name)
            if raw is None:
                return None
            if chans is None or kept is None:
                self._gates[name] = raw
                return None
            gate = self._apply_interventions(name, raw)
            self._gates[name] = gate
            # The block computed input * gate; the intervened channels are recomputed with the new gate.
            shape = [1] * output.dim()
            shape[0], shape[dim] = gate.shape[0], chans.numel()
            new = kept * torch.nan_to_num(gate.index_select(1, chans)).reshape(shape).to(kept.dtype)
            return output.index_copy(dim, chans, new)

        return hook

    def _intervened_channels(self, name: str, device: torch.device) -> torch.Tensor | None:
        items = self._interventions.get(name)
        if not items:
            return None
        return torch.unique(torch.cat([iv.channels for iv in items])).to(device)

    def _mean_squeeze_hook(self, name: str):
        dim = self.taps[name].channel_dim

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            if x.is_meta:
                return
            x = x.detach().movedim(dim, 1)
            self._squeezes[name] = x.reshape(x.shape[0], x.shape[1], -1).mean(dim=-1)

        return hook

    def _squeeze_hook(self, name: str, where: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            t = output if where == "output" else inputs[0]
            if not t.is_meta:
                self._squeezes[name] = _flat(t)

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
                self._maps_in[name] = self._shrink(self._nchw(name, inputs[0]))

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
                self._maps_out[name] = self._shrink(self._nchw(name, output))

        return hook

    def _nchw(self, name: str, x: torch.Tensor) -> torch.Tensor:
        tap = self.taps.get(name)
        return x.movedim(tap.channel_dim, 1) if tap is not None and tap.channel_dim != 1 else x

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
        self._check_kind(value, scale)
        if block not in self.blocks:
            raise KeyError(f"unknown block {block!r}; known: {list(self.blocks)}")
        if block not in self.taps:
            raise ValueError(f"{block} has only a spatial map, no channel gate to intervene on")
        single = isinstance(channels, numbers.Integral)  # int, numpy integer, 0-d tensor index...
        idx = torch.as_tensor([int(channels)] if single else [int(c) for c in channels], dtype=torch.long)
        n = self.taps[block].channels
        if idx.numel() and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"channel out of range for {block} ({n} channels)")
        self._push(block, _Intervention(idx, value, scale))

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
        return OrderedDict((n, _float_cpu(d[n])) for n in order if n in d)

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
            (n, (_float_cpu(self._maps_in[n]), _float_cpu(self._maps_out[n])))
            for n in self.blocks
            if n in self._maps_in and n in self._maps_out
        )

    def reset(self) -> None:
        self._gates.clear()
        self._raw.clear()
        self._squeezes.clear()
        self._maps_in.clear()
        self._maps_out.clear()
        self._spatial.clear()
