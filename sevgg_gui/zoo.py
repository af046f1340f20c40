"""Pick the model a user asked for: a checkpoint, ImageNet VGG16 transferred, a pretrained
torchvision SE network, a VGG16 with another attention type, or random weights.

The CLI and the app both call :func:`load_model`, so they agree on defaults and warnings. Specs:
``None`` (the default VGG16-SE), a file path, ``"pretrained:<torchvision name>"`` (e.g.
``pretrained:mobilenet_v3_small``) or ``"vgg16:<attention>"`` (e.g. ``vgg16:cbam``, random init).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .checkpoints import CheckpointError, CheckpointInfo, load_checkpoint
from .images import Preprocess
from .model_specs import MODEL_CHOICES  # noqa: F401  (re-exported: the public name lives here too)
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
    transform: Preprocess | None = None  # a model's own recipe (torchvision weights metadata)

    def preprocess(self) -> Preprocess:
        if self.transform is not None:
            return self.transform
        s = self.input_size
        return Preprocess(crop_size=s, resize_size=round(s * 256 / 224))


def imagenet_vgg16_cached() -> bool:
    from torchvision.models import VGG16_Weights

    return cached_weights_path(VGG16_Weights.IMAGENET1K_V1).exists()


def load_model(checkpoint: str | Path | None = None, *, allow_download: bool = False) -> LoadedModel:
    """A checkpoint if given; else VGG16-SE from ImageNet VGG16 when the weights are at hand
    (cached, or ``allow_download``); else random initialisation with a warning."""
    if isinstance(checkpoint, str) and checkpoint.startswith("pretrained:"):
        return _pretrained(checkpoint.split(":", 1)[1])
    if isinstance(checkpoint, str) and checkpoint.startswith("vgg16:"):
        from .models.networks import vgg16_attention

        kind = checkpoint.split(":", 1)[1]
        model = vgg16_attention(kind).eval()
        return LoadedModel(model, f"VGG16 + {kind}, random initialisation", warning=RANDOM_WARNING)
    if checkpoint is not None:
        try:
            model, info = load_checkpoint(checkpoint)
        except CheckpointError as exc:
            other = _torchvision_checkpoint(Path(checkpoint)) or _trained_checkpoint(Path(checkpoint))
            if other is None:
                raise exc from None
            return other
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


def _pretrained(name: str) -> LoadedModel:
    from .models.pretrained import load_pretrained

    try:
        p = load_pretrained(name, "DEFAULT")
    except RuntimeError as exc:  # offline and not cached: one line from load_torchvision_weights
        raise RuntimeError(str(exc).splitlines()[0]) from None
    return LoadedModel(p.model, p.model.provenance, p.class_names, transform=p.preprocess)  # type: ignore[arg-type]


def _torchvision_checkpoint(path: Path) -> LoadedModel | None:
    """A state dict of a torchvision SE network (e.g. MobileNetV3), or None if it is not one."""
    from .checkpoints import read_state_dict, sha256_file
    from .models.pretrained import detect_torchvision_arch, load_pretrained

    try:
        sd, meta, notes = read_state_dict(path)
    except CheckpointError:
        return None
    arch = detect_torchvision_arch(sd)
    if arch is None:
        return None
    p = load_pretrained(arch, sd)
    sha = sha256_file(path)
    info = CheckpointInfo(
        path=str(path),
        sha256=sha,
        format="safetensors" if "safetensors" in notes else "pytorch",
        architecture=arch,
        num_classes=len(p.class_names),
        class_names=p.class_names,
        provenance=f"{arch} from {path.name}",
        notes=notes,
        metadata={k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
    )
    p.model.provenance = f"{arch} from {path.name}, sha256 {sha[:12]}"
    return LoadedModel(p.model, p.model.provenance, p.class_names, info, transform=p.preprocess)


def _trained_checkpoint(path: Path) -> LoadedModel | None:
    """A checkpoint of `sevgg train` with another architecture or width (vgg11_se, slim VGG16-SE...)."""
    from .checkpoints import read_state_dict, sha256_file
    from .training.models import ARCHS, load_trained

    try:
        _sd, meta, _notes = read_state_dict(path)
    except CheckpointError:
        return None
    if meta.get("arch") not in ARCHS:
        return None
    model, meta = load_trained(path)
    sha = sha256_file(path)
    names = meta.get("class_names")
    info = CheckpointInfo(
        path=str(path),
        sha256=sha,
        format="pytorch",
        architecture=str(meta.get("arch")),
        num_classes=int(meta["num_classes"]),
        class_names=list(names) if names else None,
        provenance=str(model.provenance),  # type: ignore[arg-type]
        metadata={k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
    )
    size = int(meta.get("input_size", 224) or 224)
    provenance = f"{model.provenance}, sha256 {sha[:12]}"
    return LoadedModel(model, provenance, info.class_names, info, input_size=size)


def gates_untrained(model: nn.Module) -> bool:
    """True when every SE block's second FC is all zeros (gates exactly 0.5 after the transfer)."""
    from .recorder import find_gate_blocks

    blocks = find_gate_blocks(model)
    found = False
    for _, b in blocks:
        fc = getattr(b, "fc", None)
        if not isinstance(fc, nn.Sequential) or len(fc) < 3:  # timm ESE: fc is one conv
            return False
        found = True
        if fc[2].weight.abs().max().item() != 0.0:
            return False
    return found
