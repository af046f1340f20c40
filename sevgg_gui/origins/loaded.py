"""The record every model origin returns, and the error every origin raises for bad specs."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..checkpoints import CheckpointInfo
from ..images import Preprocess

RANDOM_WARNING = (
    "Random weights: predictions are meaningless. Open a trained checkpoint (Ctrl+K), or download "
    "ImageNet VGG16 once (`sevgg fetch-weights`) to start from its transfer."
)


class ModelSpecError(ValueError):
    """A model spec that cannot be opened; the message is one line meant for the user."""


@dataclass
class LoadedModel:
    model: nn.Module
    provenance: str
    class_names: list[str] | None = None
    info: CheckpointInfo | None = None
    warning: str | None = None
    notes: list[str] = field(default_factory=list)
    input_size: int = 224  # the crop the model was trained on (checkpoint metadata "input_size")
    transform: Preprocess | None = None  # a model's own recipe (torchvision weights, timm data config)

    def preprocess(self) -> Preprocess:
        if self.transform is not None:
            return self.transform
        s = self.input_size
        return Preprocess(crop_size=s, resize_size=round(s * 256 / 224))
