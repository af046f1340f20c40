"""Checkpoint files of the architectures sevgg_gui knows: the article's VGG16-SE (and plain VGG16,
transferred), a `sevgg train` checkpoint of another architecture or width, a torchvision SE network's
state dict; and the default model when no spec is given."""

from __future__ import annotations

from pathlib import Path

from ..checkpoints import CheckpointError, CheckpointInfo, load_checkpoint, read_state_dict, sha256_file
from .loaded import RANDOM_WARNING, LoadedModel


def imagenet_vgg16_cached() -> bool:
    from torchvision.models import VGG16_Weights

    from ..models.vgg import cached_weights_path

    return cached_weights_path(VGG16_Weights.IMAGENET1K_V1).exists()


def load_default(allow_download: bool = False) -> LoadedModel:
    """VGG16-SE from ImageNet VGG16 when the weights are at hand (cached, or ``allow_download``);
    else random initialisation with a warning."""
    from ..models.vgg import VGG16_SE, from_vgg16

    if allow_download or imagenet_vgg16_cached():
        model = from_vgg16("IMAGENET1K_V1").eval()
        return LoadedModel(
            model,
            model.provenance,  # type: ignore[arg-type]
            notes=["SE gates are untrained (exactly 0.5): the squeeze view shows what varies"],
        )
    model = VGG16_SE().eval()
    return LoadedModel(model, "random initialisation", warning=RANDOM_WARNING)


def load_file(path: str | Path) -> LoadedModel:
    """A VGG16-SE checkpoint, else a torchvision SE state dict, else a `sevgg train` checkpoint; the
    VGG16-SE loader's one-line refusal when it is none of them."""
    try:
        model, info = load_checkpoint(path)
    except CheckpointError as exc:
        other = _torchvision_checkpoint(Path(path)) or _trained_checkpoint(Path(path))
        if other is None:
            raise exc from None
        return other
    size = int(info.metadata.get("input_size", 224) or 224)
    return LoadedModel(model, model.provenance, info.class_names, info, None, info.notes, size)  # type: ignore[arg-type]


def _torchvision_checkpoint(path: Path) -> LoadedModel | None:
    """A state dict of a torchvision SE network (e.g. MobileNetV3), or None if it is not one."""
    from ..models.pretrained import detect_torchvision_arch, load_pretrained

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
    from ..training.models import ARCHS, load_trained

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
