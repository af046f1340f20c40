"""sevgg_gui: see Squeeze-and-Excitation attention at work.

The public API is re-exported here lazily, so ``import sevgg_gui`` (and ``sevgg --help``) stays fast
and never imports Qt; torch is imported on first use of a model-related name.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "SEBlock": "sevgg_gui.models.se",
    "VGG16_SE": "sevgg_gui.models.vgg",
    "VGGSE": "sevgg_gui.models.vgg",
    "vgg16_se": "sevgg_gui.models.vgg",
    "from_vgg16": "sevgg_gui.models.vgg",
    "load_checkpoint": "sevgg_gui.checkpoints",
    "save_checkpoint": "sevgg_gui.checkpoints",
    "CheckpointError": "sevgg_gui.checkpoints",
    "CheckpointInfo": "sevgg_gui.checkpoints",
    "ExcitationRecorder": "sevgg_gui.recorder",
    "register_gate_type": "sevgg_gui.recorder",
    "Predictor": "sevgg_gui.inference",
    "Result": "sevgg_gui.inference",
    "InferenceError": "sevgg_gui.inference",
    "load_image": "sevgg_gui.images",
    "ImageError": "sevgg_gui.images",
    "Preprocess": "sevgg_gui.images",
    "model_cost": "sevgg_gui.analysis",
    "create_attention": "sevgg_gui.models.attention",
    "available_attention": "sevgg_gui.models.attention",
    "vgg16_attention": "sevgg_gui.models.networks",
    "load_pretrained": "sevgg_gui.models.pretrained",
    "load_model": "sevgg_gui.zoo",
}

__all__ = [
    "available_attention",
    "create_attention",
    "load_model",
    "load_pretrained",
    "vgg16_attention",
    "CheckpointError",
    "CheckpointInfo",
    "ExcitationRecorder",
    "ImageError",
    "InferenceError",
    "Predictor",
    "Preprocess",
    "Result",
    "SEBlock",
    "VGG16_SE",
    "VGGSE",
    "__version__",
    "from_vgg16",
    "load_checkpoint",
    "load_image",
    "model_cost",
    "register_gate_type",
    "save_checkpoint",
    "vgg16_se",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sevgg_gui' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .analysis import model_cost
    from .checkpoints import CheckpointError, CheckpointInfo, load_checkpoint, save_checkpoint
    from .images import ImageError, Preprocess, load_image
    from .inference import InferenceError, Predictor, Result
    from .models.attention import available_attention, create_attention
    from .models.networks import vgg16_attention
    from .models.pretrained import load_pretrained
    from .models.se import SEBlock
    from .models.vgg import VGG16_SE, VGGSE, from_vgg16, vgg16_se
    from .recorder import ExcitationRecorder, register_gate_type
    from .zoo import load_model
