"""Which modules are attention: one registry (ours, torchvision's, timm's) plus a behaviour probe."""

from .probe import ProbeResult, example_input
from .registry import (
    AttentionBlock,
    GateTap,
    register_attention_type,
    register_gate_type,
    register_spatial_type,
)
from .scan import attention_blocks, find_gate_blocks

__all__ = [
    "AttentionBlock",
    "GateTap",
    "ProbeResult",
    "attention_blocks",
    "example_input",
    "find_gate_blocks",
    "register_attention_type",
    "register_gate_type",
    "register_spatial_type",
]
