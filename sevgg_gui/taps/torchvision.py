"""torchvision's ``SqueezeExcitation`` (MobileNetV3, EfficientNet, RegNetY): the gate is the output of
its ``scale_activation`` submodule (exact route). Imported by the registry only once torchvision is."""

from __future__ import annotations

from torchvision.ops.misc import SqueezeExcitation

from .registry import GateTap, register_gate_type

register_gate_type(
    SqueezeExcitation,
    lambda m: GateTap(
        gate=m.scale_activation,
        squeeze=m.avgpool,
        squeeze_from="output",
        channels=m.fc2.out_channels,
        scales_input=True,
    ),
    kind="se",
)
