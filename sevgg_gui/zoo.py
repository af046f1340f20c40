"""Pick the model a user asked for: a checkpoint, ImageNet VGG16 transferred, or random weights.

The CLI and the app both call :func:`load_model`, so they agree on defaults and warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .checkpoints import CheckpointInfo, load_checkpoint
from .images import Preprocess
from .models.vgg import VGG16_SE, cached_weights_path, from_vgg16

RANDOM_WARNING = (
    "Random weights: predictions are meaningless. Open a trained checkpoint (Ctrl+K), or download "
    "ImageNet VGG16 once (`sevgg fetch-weights`) to start from its transfer."
)


@dataclass
class LoadedModel:
    model: nn.Module
    provenance: str
    class_names: list[str] | None = None
    info: CheckpointInfo | None = None
    warning: str | None = None
    notes: list[str] = field(default_factory=list)
    input_size: int = 224  # the crop the model was trained on (checkpoint metadata "input_size")

    def preprocess(self) -> Preprocess:
        s = self.input_size
        return Preprocess(crop_size=s, resize_size=round(s * 256 / 224))


def imagenet_vgg16_cached() -> bool:
    from torchvision.models import VGG16_Weights

    return cached_weights_path(VGG16_Weights.IMAGENET1K_V1).exists()


def load_model(checkpoint: str | Path | None = None, *, allow_download: bool = False) -> LoadedModel:
    """A checkpoint if given; else VGG16-SE from ImageNet VGG16 when the weights are at hand
    (cached, or ``allow_download``); else random initialisation with a warning."""
    if checkpoint is not None:
        model, info = load_checkpoint(checkpoint)
        size = int(info.metadata.get("input_size", 224) or 224)
        return LoadedModel(model, model.provenance, info.class_names, info, None, info.notes, size)  # type: ignore[arg-type]
    if allow_download or imagenet_vgg16_cached():
        model = from_vgg16("IMAGENET1K_V1").eval()
        return LoadedModel(
            model,
            model.provenance,  # type: ignore[arg-type]
            notes=["SE gates are untrained (exactly 0.5): the squeeze view shows what varies"],
        )
    model = VGG16_SE().eval()
    return LoadedModel(model, "random initialisation", warning=RANDOM_WARNING)


def gates_untrained(model: nn.Module) -> bool:
    """True when every SE block's second FC is all zeros (gates exactly 0.5 after the transfer)."""
    from .recorder import find_gate_blocks

    blocks = find_gate_blocks(model)
    found = False
    for _, b in blocks:
        fc = getattr(b, "fc", None)
        if fc is None or len(fc) < 3:
            return False
        found = True
        if fc[2].weight.abs().max().item() != 0.0:
            return False
    return found
