"""Taps for this package's own blocks: the article's SEBlock and the section-8.2 attention variants.

Every one of them exposes its gate as a submodule output (see :mod:`sevgg_gui.models.attention`), so
all use the exact submodule route.
"""

from __future__ import annotations

from torch import nn

from ..models.attention import BAM, CBAM, ECA, SCSE, SpatialSE
from ..models.se import SEBlock
from .registry import GateTap, register_gate_type, register_spatial_type

register_gate_type(
    SEBlock,
    lambda m: GateTap(gate=m.fc, squeeze=m.fc, squeeze_from="input", channels=m.channels, scales_input=True),
    kind="se",
)


def _channel_tap(m: nn.Module) -> GateTap:
    return GateTap(
        gate=m.gate,
        squeeze=m.avg_pool,
        squeeze_from="output",
        channels=m.channels,
        scales_input=isinstance(m, ECA),  # ECA's output is x * gate; the others add a spatial part
    )


_KINDS = {SpatialSE: "sse", SCSE: "scse", BAM: "bam", CBAM: "cbam", ECA: "eca"}
_NOTES = {
    BAM: "gate and map are the exact marginals of BAM's 3-D attention (it does not factor)",
    SCSE: "channel gate and spatial map in parallel, outputs added",
}
for _cls in (SCSE, BAM, CBAM, ECA):
    register_gate_type(_cls, _channel_tap, kind=_KINDS[_cls], note=_NOTES.get(_cls))
for _cls in (SpatialSE, SCSE, BAM, CBAM):
    register_spatial_type(_cls, lambda m: m.spatial_gate, kind=_KINDS[_cls])
