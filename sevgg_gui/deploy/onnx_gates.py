"""Every attention gate of a model as ONNX outputs, and per gate block an intervention input pair.

Which blocks: exactly the :class:`~sevgg_gui.recorder.ExcitationRecorder`'s, asked with the same
example input the torch :class:`~sevgg_gui.inference.Predictor` probes with, so blocks found by
behaviour (an inline SE, :mod:`sevgg_gui.taps.probe`) are exported too, under the same names and in
the same order. How each gate is read follows its :class:`~sevgg_gui.taps.GateTap`:

* the gate is a submodule's output (SE's sigmoid): a forward hook on that submodule reads it and,
  with interventions, returns ``gate * mul + add`` in its place, so the block applies the new gate;
* the block applies ``activation(submodule output)`` inline (timm's light CBAM), or the block was
  found by behaviour (gate = output / input where ``|input|`` is largest, NaN for an all-zero
  channel): the gate is computed from what the hooks saw, and the block's output ``y = x * g`` is
  rewritten as ``y * mul + x * add``, which is ``x * (g * mul + add)``.

Interventions: the recorder's ``intervene(block, channels, value=v | scale=s)`` (several composing in
order) is one affine map per block, ``gate' = gate * mul + add`` with ``mul`` (C,) and ``add`` (C,):
a value sets ``mul = 0, add = v``, a scale multiplies both by ``s``. The export has two graph inputs
per gate block, ``<output>_mul`` and ``<output>_add``, which are also initializers holding ones and
zeros: onnxruntime treats such inputs as defaults that a caller may override, so the graph still runs
with only the image fed (``sevgg quantize`` calibration, older callers) and then computes exactly what
the model does (``g * 1 + 0 == g`` in floating point). The reported gate is the intervened one, as
the torch recorder reports it. The ONNX metadata ``intervention_inputs`` says which inputs belong to
which block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from ..models.se import SEBlock
from ..taps import GateTap


@dataclass(frozen=True)
class ExcitationOutput:
    """One extra ONNX output: a recorded block's channel gate (B, C) or spatial map (B, 1, H, W)."""

    name: str  # the ONNX output name, e.g. "gate3", "map3", "se1"
    block: str  # the block's module name in the network, e.g. "layer2.1.se"
    kind: Literal["gate", "map"]
    block_type: str  # e.g. "CBAM", "SqueezeExcitation"
    channels: int | None = None  # C of a gate
    # The gate is activation(tap output) when the block applies its sigmoid inline (timm's light CBAM).
    activation: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, compare=False, repr=False)
    found_by: str = "type"  # "behaviour": the block itself, gate read as output / input

    def describe(self) -> dict[str, Any]:
        """The entry of the ``excitation_outputs`` metadata list; ``shape`` uses the ONNX dim names."""
        axes = self.dynamic_axes()
        shape: list[str | int] = (
            [axes[0], self.channels or "C"] if self.kind == "gate" else [axes[0], 1, axes[2], axes[3]]
        )
        return {
            "output": self.name,
            "block": self.block,
            "type": self.block_type,
            "kind": self.kind,
            "shape": shape,
            "found_by": self.found_by,
        }

    def dynamic_axes(self) -> dict[int, str]:
        if self.kind == "gate":
            return {0: "batch"}
        return {0: "batch", 2: f"{self.name}_height", 3: f"{self.name}_width"}

    @property
    def mul_input(self) -> str:
        return f"{self.name}_mul"

    @property
    def add_input(self) -> str:
        return f"{self.name}_add"

    def describe_inputs(self) -> dict[str, Any]:
        """The entry of the ``intervention_inputs`` metadata list (gates only)."""
        return {
            "block": self.block,
            "output": self.name,
            "mul": self.mul_input,
            "add": self.add_input,
            "channels": self.channels,
        }


@dataclass(frozen=True)
class _Gate:
    """How one gate output is read: through ``tap`` on ``block`` (see the module docstring)."""

    out: ExcitationOutput
    tap: GateTap
    block: nn.Module


def _recorder(model: nn.Module, example: torch.Tensor | None) -> Any:
    from ..recorder import ExcitationRecorder

    try:
        return ExcitationRecorder(model, example_input=example)
    except ValueError:
        raise ValueError(
            f"{type(model).__name__} has no SE blocks (nor any other attention block the recorder "
            "knows): nothing to export with --with-excitations"
        ) from None


def excitation_outputs(
    model: nn.Module, example_input: torch.Tensor | None = None
) -> list[tuple[ExcitationOutput, nn.Module]]:
    """Every gate and map the recorder would record, in its block order (a block's gate before its
    map), with the module whose output it comes from (the gate submodule, the block itself for a gate
    found by behaviour, or the map's submodule).

    ``example_input``: the probe's two images (:func:`sevgg_gui.taps.example_input`); without it only
    registered types are found, as for a recorder built without one.
    """
    return [(o, m) for o, m, _ in _plan(_recorder(model, example_input))]


def _plan(rec: Any) -> list[tuple[ExcitationOutput, nn.Module, _Gate | None]]:
    """(output, hooked module, how its gate is read -- None for a map) in the recorder's order."""
    legacy = all(type(b) is SEBlock for b in rec.blocks.values())  # VGG16-SE's se1..se5, kept stable
    found: list[tuple[ExcitationOutput, nn.Module, _Gate | None]] = []
    for i, (name, block) in enumerate(rec.blocks.items(), 1):
        kind_name = type(block).__name__
        if name in rec.taps:
            tap = rec.taps[name]
            out = ExcitationOutput(
                f"se{i}" if legacy else f"gate{i}",
                name,
                "gate",
                kind_name,
                tap.channels,
                tap.activation,
                "behaviour" if tap.ratio else "type",
            )
            found.append((out, block if tap.ratio else tap.gate, _Gate(out, tap, block)))
        if name in rec.spatial_taps:
            found.append((ExcitationOutput(f"map{i}", name, "map", kind_name), rec.spatial_taps[name], None))
    seen: dict[int, str] = {}
    for out, module, _ in found:  # one module object in two places: its hook could not tell them apart
        if seen.setdefault(id(module), out.name) != out.name:
            raise ValueError(f"{out.name} and {seen[id(module)]} are computed by one shared module")
    return found


def ratio_gate(x: torch.Tensor, y: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, C) gate of a block found by behaviour: y / x per channel where |x| is largest, NaN where
    the channel is all zero -- the recorder's reading (:meth:`ExcitationRecorder._block_post_hook`)."""
    c = x.shape[dim]
    fx = x.movedim(dim, 1).reshape(x.shape[0], c, -1)
    fy = y.movedim(dim, 1).reshape(y.shape[0], c, -1)
    idx = fx.abs().argmax(dim=-1, keepdim=True)
    xs = fx.gather(-1, idx)
    g = fy.gather(-1, idx) / xs
    return torch.where(xs == 0, torch.full_like(g, float("nan")), g).squeeze(-1)


class WithExcitations(nn.Module):
    """``model(x, *affine)`` -> ``(logits, *excitations)`` in :attr:`outputs` order.

    ``affine``: per gate in :attr:`gates` order its ``mul`` then its ``add`` (C,); none at all runs
    the model untouched (the outputs are then exactly what the recorder records). Gates and maps are
    taken by hooks during the one forward that computes the logits (see the module docstring).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        rec = _recorder(model, example_input)
        plan = _plan(rec)
        # What the model panel lists (recorded or only listed), for the ONNX metadata.
        self.attention: list[dict[str, object]] = [b.describe() for b in rec.block_infos]
        self.outputs: list[ExcitationOutput] = [o for o, _, _ in plan]
        self.block_names: list[str] = list(dict.fromkeys(o.block for o in self.outputs))
        self._captured: dict[str, torch.Tensor] = {}
        self._affine: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._inputs: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        for out, module, g in plan:
            if g is None:
                self._handles.append(module.register_forward_hook(partial(self._map_hook, out.name)))
                continue
            name = out.name
            if g.tap.ratio:
                self._handles.append(g.block.register_forward_pre_hook(partial(self._keep_input, name, True)))
                self._handles.append(g.block.register_forward_hook(partial(self._ratio_hook, name, g.tap)))
            elif g.tap.activation is not None:
                self._handles.append(
                    g.tap.gate.register_forward_hook(partial(self._inline_gate_hook, name, g.tap))
                )
                self._handles.append(
                    g.block.register_forward_pre_hook(partial(self._keep_input, name, False))
                )
                self._handles.append(
                    g.block.register_forward_hook(partial(self._inline_block_hook, name, g.tap))
                )
            else:
                self._handles.append(g.tap.gate.register_forward_hook(partial(self._gate_hook, name)))

    @property
    def gates(self) -> list[ExcitationOutput]:
        """The channel-gate outputs, in order: one (mul, add) input pair each."""
        return [o for o in self.outputs if o.kind == "gate"]

    # ------------------------------------------------------------------ hooks
    def _gate_hook(self, name: str, module: nn.Module, inputs: Any, output: torch.Tensor) -> Any:
        flat = output.reshape(output.shape[0], -1)
        affine = self._affine.get(name)
        if affine is None:  # returns None: the forward goes on with exactly the tensor computed
            self._captured[name] = flat
            return None
        new = flat * affine[0] + affine[1]
        self._captured[name] = new
        return new.reshape(output.shape)

    def _keep_input(
        self, name: str, always: bool, module: nn.Module, inputs: tuple[torch.Tensor, ...]
    ) -> None:
        if always or name in self._affine:
            # A copy: the block may scale its input in place (in the graph: the value before it does).
            self._inputs[name] = inputs[0].clone()

    def _inline_gate_hook(
        self, name: str, tap: GateTap, module: nn.Module, inputs: Any, output: torch.Tensor
    ) -> None:
        assert tap.activation is not None
        gate = tap.activation(output)
        self._captured[name] = gate.reshape(gate.shape[0], -1)

    def _rewrite(self, name: str, tap: GateTap, output: torch.Tensor) -> torch.Tensor | None:
        """The block's ``y = x * g`` as ``y * mul + x * add`` (channel axis), None without interventions."""
        x = self._inputs.pop(name, None)
        affine = self._affine.get(name)
        if affine is None or x is None:
            return None
        shape = [1] * output.dim()
        shape[tap.channel_dim] = -1
        return output * affine[0].reshape(shape) + x * affine[1].reshape(shape)

    def _inline_block_hook(
        self, name: str, tap: GateTap, module: nn.Module, inputs: Any, output: torch.Tensor
    ) -> Any:
        affine = self._affine.get(name)
        if affine is not None:
            self._captured[name] = self._captured[name] * affine[0] + affine[1]
        return self._rewrite(name, tap, output)

    def _ratio_hook(
        self, name: str, tap: GateTap, module: nn.Module, inputs: Any, output: torch.Tensor
    ) -> Any:
        gate = ratio_gate(self._inputs[name], output, tap.channel_dim)
        affine = self._affine.get(name)
        if affine is not None:
            # A value (mul 0) also replaces an unobservable (NaN) gate, as the recorder's does.
            gate = torch.where(affine[0] == 0, affine[1].expand_as(gate), gate * affine[0] + affine[1])
        self._captured[name] = gate
        return self._rewrite(name, tap, output)

    def _map_hook(self, name: str, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._captured[name] = output

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, *affine: torch.Tensor) -> tuple[torch.Tensor, ...]:
        gates = self.gates
        if affine and len(affine) != 2 * len(gates):
            raise ValueError(f"expected {2 * len(gates)} tensors (mul, add per gate), got {len(affine)}")
        self._affine = (
            {o.name: (affine[2 * i], affine[2 * i + 1]) for i, o in enumerate(gates)} if affine else {}
        )
        self._captured, self._inputs = {}, {}
        try:
            logits = self.model(x)
        finally:
            captured, self._captured, self._affine, self._inputs = self._captured, {}, {}, {}
        missing = [o.name for o in self.outputs if o.name not in captured]
        if missing:
            raise RuntimeError(f"no value for {missing}: those blocks did not run in the forward")
        return (logits, *(captured[o.name] for o in self.outputs))

    def identity_affine(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Ones and zeros (mul, add per gate): the intervention that changes nothing. Gate widths a
        tap did not know are read from one forward of ``x`` (and kept in :attr:`outputs`)."""
        if any(o.channels is None for o in self.gates):
            with torch.no_grad():
                outs = self(x)
            self.outputs = [
                replace(o, channels=int(t.shape[1])) if o.kind == "gate" and o.channels is None else o
                for o, t in zip(self.outputs, outs[1:], strict=True)
            ]
        out: list[torch.Tensor] = []
        for o in self.gates:
            assert o.channels is not None
            out += [torch.ones(o.channels), torch.zeros(o.channels)]
        return out

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
