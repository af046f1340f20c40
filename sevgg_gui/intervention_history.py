"""The list of mute / boost / set interventions a recorder keeps per block, shared by the torch
recorder (:class:`~sevgg_gui.recorder.ExcitationRecorder`, applied in forward hooks) and the runtime
backends' (:class:`~sevgg_gui.backends.interventions.RuntimeRecorder`, folded into graph inputs), so
``undo``, ``clear_interventions`` and ``interventions`` mean the same in both. No torch here: the
channel indices are whatever array type the owner stores (anything with ``tolist``)."""

from __future__ import annotations

from typing import Any


class InterventionHistory:
    """Per block, the interventions in the order they were asked for (they compose in that order)."""

    _interventions: dict[str, list[Any]]  # items have .channels (indices), .value, .scale

    @staticmethod
    def _check_kind(value: float | None, scale: float | None) -> None:
        if (value is None) == (scale is None):
            raise ValueError("give exactly one of value= or scale=")

    def _changed(self) -> None:
        """Called after every change of the list (the runtime recorder drops its cached feeds)."""

    def _push(self, block: str, item: Any) -> None:
        self._interventions.setdefault(block, []).append(item)
        self._changed()

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
            self._changed()

    def clear_interventions(self) -> None:
        self._interventions.clear()
        self._changed()

    @property
    def interventions(self) -> dict[str, list[tuple[list[int], float | None, float | None]]]:
        return {
            b: [(iv.channels.tolist(), iv.value, iv.scale) for iv in items]
            for b, items in self._interventions.items()
        }
