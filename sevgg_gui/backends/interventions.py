"""Mute / boost / set a gate in an exported model: the torch recorder's intervention surface for the
runtime backends (onnxruntime, OpenVINO).

``sevgg export --with-excitations`` gives every gate block two inputs, ``<output>_mul`` and
``<output>_add`` (C,): the block applies, and the gate output reports, ``gate * mul + add``
(:mod:`sevgg_gui.deploy.onnx_gates`). :class:`RuntimeRecorder` keeps the recorder's list of
interventions per block and folds it into that pair (a value sets ``mul = 0, add = value``, a scale
multiplies both; they compose in order, as the recorder applies them), and the predictor feeds the
pairs on every run. Validation and errors are the recorder's: exactly one of ``value`` / ``scale``,
``KeyError`` for an unknown block, ``ValueError`` for a map-only block, ``IndexError`` for a channel
out of range; and ``ValueError`` for an export made before (or without) these inputs.
"""

from __future__ import annotations

import json
import numbers
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..intervention_history import InterventionHistory


@dataclass(frozen=True)
class InterventionInput:
    """The two graph inputs of one gate block (``intervention_inputs`` metadata entry)."""

    block: str
    output: str
    mul: str
    add: str
    channels: int


def _json(props: dict[str, str], key: str) -> Any:
    try:
        return json.loads(props[key]) if key in props else None
    except (TypeError, ValueError):
        return None


def intervention_inputs(props: dict[str, str], available: Iterable[str]) -> list[InterventionInput]:
    """The exported intervention inputs the session really accepts (``available``: its feedable names)."""
    names = set(available)
    found = []
    for d in _json(props, "intervention_inputs") or []:
        if not isinstance(d, dict):
            continue
        try:
            entry = InterventionInput(
                str(d["block"]), str(d["output"]), str(d["mul"]), str(d["add"]), int(d["channels"])
            )
        except (KeyError, TypeError, ValueError):
            continue
        if entry.mul in names and entry.add in names and entry.channels > 0:
            found.append(entry)
    return found


@dataclass(frozen=True)
class ExportedTap:
    """What the views read from a torch recorder's ``taps[block]``: the gate's width."""

    channels: int | None


@dataclass
class ExportedBlock:
    """One attention block as the export's ``attention_blocks`` metadata describes it (the torch
    :class:`~sevgg_gui.taps.AttentionBlock`'s ``describe()``), for the model panel."""

    name: str
    kind: str
    channels: int | None
    found_by: str
    recorded: bool
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


def exported_blocks(props: dict[str, str]) -> list[ExportedBlock]:
    out = []
    for d in _json(props, "attention_blocks") or []:
        if isinstance(d, dict) and d.get("name"):
            ch = d.get("channels")
            out.append(
                ExportedBlock(
                    str(d["name"]),
                    str(d.get("kind", "")),
                    int(ch) if isinstance(ch, int) else None,
                    str(d.get("found_by", "type")),
                    bool(d.get("recorded", True)),
                    str(d.get("note", "")),
                    dict(d),
                )
            )
    return out


@dataclass
class _Intervention:
    channels: np.ndarray  # int64 indices
    value: float | None
    scale: float | None


class RuntimeRecorder(InterventionHistory):
    """``intervene`` / ``undo`` / ``clear_interventions`` / ``interventions`` over an exported model.

    ``gates``: block -> channels of every gate output; ``maps``: blocks with a spatial map;
    ``inputs``: the intervention inputs the session accepts (empty for an older export: then
    ``intervene`` raises the one-line ``ValueError`` in ``why_not``).
    """

    def __init__(
        self,
        gates: Sequence[tuple[str, int | None]],
        maps: Sequence[str],
        inputs: Sequence[InterventionInput],
        *,
        block_infos: Sequence[ExportedBlock] = (),
        source: str = "this export",
    ) -> None:
        order = list(dict.fromkeys([*(b for b, _ in gates), *maps]))
        channels = dict(gates)
        self.inputs: OrderedDict[str, InterventionInput] = OrderedDict((i.block, i) for i in inputs)
        for block, knob in self.inputs.items():
            channels[block] = knob.channels
        # block -> channels (None: map only), in the model's order, like the recorder's ``blocks``.
        self.blocks: OrderedDict[str, int | None] = OrderedDict((b, channels.get(b)) for b in order)
        self.taps: dict[str, ExportedTap] = {b: ExportedTap(channels.get(b)) for b, _ in gates}
        self.spatial_taps: dict[str, None] = dict.fromkeys(maps)
        self.block_infos: list[ExportedBlock] = list(block_infos) or [
            ExportedBlock(b, "gate" if b in self.taps else "map", self.blocks[b], "type", True) for b in order
        ]
        self.probe_report = None  # the probe ran at export time (its blocks are in block_infos)
        self.source = source
        self._interventions: dict[str, list[_Intervention]] = {}
        self._feeds: dict[str, np.ndarray] | None = None

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks)

    @property
    def supported(self) -> bool:
        """Whether this export has intervention inputs at all."""
        return bool(self.inputs)

    # ---------------------------------------------------------------- the recorder's surface
    def intervene(
        self,
        block: str,
        channels: int | Iterable[int],
        *,
        value: float | None = None,
        scale: float | None = None,
    ) -> None:
        """Override (``value``) or multiply (``scale``) the gates of ``channels`` in ``block`` on every
        following run, until ``undo``/``clear_interventions``."""
        self._check_kind(value, scale)
        if block not in self.blocks:
            raise KeyError(f"unknown block {block!r}; known: {list(self.blocks)}")
        if block not in self.taps:
            raise ValueError(f"{block} has only a spatial map, no channel gate to intervene on")
        knob = self.inputs.get(block)
        if knob is None:
            raise ValueError(self.why_not())
        single = isinstance(channels, numbers.Integral)
        idx = np.asarray([int(channels)] if single else [int(c) for c in channels], dtype=np.int64)  # type: ignore[union-attr]
        if idx.size and (idx.min() < 0 or idx.max() >= knob.channels):
            raise IndexError(f"channel out of range for {block} ({knob.channels} channels)")
        self._push(
            block,
            _Intervention(
                idx, None if value is None else float(value), None if scale is None else float(scale)
            ),
        )

    def why_not(self) -> str:
        """Why ``intervene`` refuses on this export (one line)."""
        return (
            f"{self.source} predates gate interventions (no intervention inputs in the graph): "
            "re-export it with `sevgg export --with-excitations` "
            "(a cached --backend export is rebuilt automatically)"
        )

    def _changed(self) -> None:
        self._feeds = None

    # ---------------------------------------------------------------- what the predictor feeds
    def affine(self, block: str) -> tuple[np.ndarray, np.ndarray]:
        """(mul, add) of ``block``: its interventions folded in order (identity without any)."""
        knob = self.inputs[block]
        mul = np.ones(knob.channels, dtype=np.float32)
        add = np.zeros(knob.channels, dtype=np.float32)
        for iv in self._interventions.get(block, []):
            if iv.value is not None:
                mul[iv.channels] = 0.0
                add[iv.channels] = iv.value
            else:
                mul[iv.channels] *= iv.scale
                add[iv.channels] *= iv.scale
        return mul, add

    def feeds(self) -> dict[str, np.ndarray]:
        """Every intervention input's array (all of them: OpenVINO has no defaults), rebuilt only after
        the interventions changed."""
        if self._feeds is None:
            feeds: dict[str, np.ndarray] = {}
            for block, knob in self.inputs.items():
                feeds[knob.mul], feeds[knob.add] = self.affine(block)
            self._feeds = feeds
        return self._feeds
