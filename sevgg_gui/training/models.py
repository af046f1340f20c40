"""Models a training run can build, their parameter groups and freezing, and reloading what it saved.

Architectures: ``vgg16_se`` (the article's model; ``--width`` < 1 gives a slim variant with the same
layout, for quick runs and distillation students), ``vgg11_se`` and ``vgg16`` (the plain baseline:
torchvision's VGG16 at full width, the same layer indices without SE blocks when slimmed).

Parameter groups follow the article (section 6.1): the convolutional ``backbone`` learns slowly
(1e-5 from ImageNet weights), the ``head`` -- SE blocks and classifier, new or re-purposed -- ten times
faster. Progressive unfreezing (6.2) freezes by conv block, the stretch between two max-pools.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoints import CheckpointError, check_matches, load_checkpoint, read_state_dict
from ..models.se import SEBlock
from ..models.vgg import (
    CFGS,
    VGG16_SE,
    VGGSE,
    from_vgg16,
    is_torchvision_vgg16_state_dict,
    load_torchvision_weights,
    neutralise_se,
    transfer_vgg16_state_dict,
)

ARCHS: tuple[str, ...] = ("vgg16_se", "vgg11_se", "vgg16")
SE_INITS: tuple[str, ...] = ("default", "neutral")  # neutral: models.vgg.neutralise_se


def _plain_cfg(name: str) -> list[int | str]:
    return [c for c in CFGS[name] if c != "SE"]


def _set_dropout(model: nn.Module, p: float) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p


def build_model(
    arch: str = "vgg16_se",
    num_classes: int = 1000,
    *,
    width: float = 1.0,
    reduction: int = 16,
    dropout: float = 0.5,
    init: str = "random",
    se_init: str = "default",
) -> nn.Module:
    """A fresh model; ``init`` is ``random`` (see :func:`reinit_for_training`), ``none`` (the constructors'
    own init: for rebuilding saved models), ``imagenet`` (torchvision's VGG16 weights; for VGG16-SE the
    function-preserving transfer, gates at 0.5) or a checkpoint path whose matching weights are loaded.
    ``se_init="neutral"`` (with ``random``) starts every SE block as a pass-through the same way."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: use {', '.join(ARCHS)}")
    if not 0.0 < width <= 1.0:
        raise ValueError(f"width must be in (0, 1], got {width}")
    if init == "imagenet":
        if arch == "vgg11_se" or width != 1.0:
            raise ValueError("--init imagenet needs a full-width VGG16 (vgg16_se or vgg16, --width 1)")
        from torchvision.models import VGG16_Weights

        try:
            weights = load_torchvision_weights(VGG16_Weights.IMAGENET1K_V1)
        except RuntimeError as exc:  # offline and not cached: the core's one line, plus the way out
            raise RuntimeError(f"{exc}; or train from scratch with --init random") from None
        if arch == "vgg16_se":
            model: nn.Module = from_vgg16(weights, reduction=reduction, num_classes=num_classes)
            model.provenance = "function-preserving transfer from torchvision VGG16 IMAGENET1K_V1"  # type: ignore[attr-defined]
        else:
            model = _torchvision_vgg16(1000, dropout)
            model.load_state_dict(weights)
            if num_classes != 1000:
                model.classifier[6] = nn.Linear(model.classifier[6].in_features, num_classes)
                nn.init.normal_(model.classifier[6].weight, 0, 0.01)
                nn.init.zeros_(model.classifier[6].bias)
            model.provenance = "torchvision VGG16 IMAGENET1K_V1"  # type: ignore[attr-defined]
        _set_dropout(model, dropout)
        return model
    if arch == "vgg16_se" and width == 1.0:
        model = VGG16_SE(num_classes=num_classes, reduction=reduction, dropout=dropout)
    elif arch in ("vgg16_se", "vgg11_se"):
        model = VGGSE(
            CFGS[arch[:-3]], num_classes=num_classes, reduction=reduction, dropout=dropout, width=width
        )
    elif width == 1.0:
        model = _torchvision_vgg16(num_classes, dropout)
    else:
        model = VGGSE(_plain_cfg("vgg16"), num_classes=num_classes, dropout=dropout, width=width)
    if se_init not in SE_INITS:
        raise ValueError(f"unknown SE init {se_init!r}: use {', '.join(SE_INITS)}")
    if init == "random":
        reinit_for_training(model)
        model.provenance = "random initialisation (fan-in)"  # type: ignore[attr-defined]
        if se_init == "neutral" and isinstance(model, VGGSE) and model.se_blocks():
            neutralise_se(model)
            model.provenance += ", SE blocks neutral (gates 0.5, next layer x2)"  # type: ignore[attr-defined]
    elif init == "none":
        model.provenance = "random initialisation"  # type: ignore[attr-defined]
    else:
        init_from_file(model, init)
    return model


def reinit_for_training(model: nn.Module) -> None:
    """Kaiming fan-in convs and PyTorch's default linear init, for training from scratch.

    torchvision's VGG init (fan-out convs, N(0, 0.01) linears), which the core keeps for fidelity, lets
    activations shrink through 13 convs without batch norm: a slim VGG16-SE then sits at chance for
    epochs (measured: 10% after 3 Fashion-MNIST epochs, against 41% with this init). Fan-in keeps the
    forward variance; SE blocks keep their default init.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and not _inside_se(model, name):
            m.reset_parameters()


def _torchvision_vgg16(num_classes: int, dropout: float) -> nn.Module:
    from torchvision.models import vgg16

    return vgg16(weights=None, num_classes=num_classes, dropout=dropout)


def init_from_file(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load the weights of ``path`` that fit ``model``; a differently sized last layer stays fresh.

    A plain torchvision VGG16 file goes through the function-preserving transfer when ``model`` has SE
    blocks. Returns the keys left at their initialisation; any other mismatch raises one line.
    """
    sd, _meta, _notes = read_state_dict(Path(path))
    target = model.state_dict()
    has_se = any(isinstance(m, SEBlock) for m in model.modules())
    if has_se and is_torchvision_vgg16_state_dict(sd) and isinstance(model, VGGSE):
        model.load_state_dict(transfer_vgg16_state_dict(sd, model))
        model.provenance = f"function-preserving transfer from {Path(path).name}"  # type: ignore[attr-defined]
        return []
    head = _last_linear_keys(model)
    kept: dict[str, torch.Tensor] = {}
    fresh: list[str] = []
    for k, v in target.items():
        if k in sd and tuple(sd[k].shape) == tuple(v.shape):
            kept[k] = sd[k]
        elif k in head:
            fresh.append(k)
        else:
            why = "missing" if k not in sd else f"shape {tuple(sd[k].shape)} vs {tuple(v.shape)}"
            raise CheckpointError(f"{Path(path).name}: does not fit {type(model).__name__} at {k} ({why})")
    model.load_state_dict({**target, **kept})
    model.provenance = f"initialised from {Path(path).name}"  # type: ignore[attr-defined]
    return fresh


def _last_linear_keys(model: nn.Module) -> set[str]:
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _inside_se(model, n)][-1]
    return {f"{last}.weight", f"{last}.bias"}


def _inside_se(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:i])), SEBlock) for i in range(1, len(parts)))


# ------------------------------------------------------------------------------ groups and freezing
def conv_blocks(model: nn.Module) -> list[list[nn.Conv2d]]:
    """The convs of each VGG block (split at max-pools), first block first."""
    blocks: list[list[nn.Conv2d]] = [[]]
    for m in model.features:  # type: ignore[attr-defined]
        if isinstance(m, nn.Conv2d):
            blocks[-1].append(m)
        elif isinstance(m, nn.MaxPool2d) and blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for block in conv_blocks(model) for conv in block for p in conv.parameters()]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """SE blocks and classifier: everything that is not a backbone conv."""
    backbone = {id(p) for p in backbone_parameters(model)}
    return [p for p in model.parameters() if id(p) not in backbone]


def param_groups(
    model: nn.Module, lr_backbone: float, lr_head: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Four groups: backbone / head, each split so biases get no weight decay (decaying a bias only
    shifts activations, it does not regularise)."""
    groups: list[dict[str, Any]] = []
    for name, params, lr in (
        ("backbone", backbone_parameters(model), lr_backbone),
        ("head", head_parameters(model), lr_head),
    ):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups.append({"name": name, "params": decay, "lr": lr, "weight_decay": weight_decay})
        groups.append({"name": f"{name}_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def apply_stage(model: nn.Module, stage: int, unfreeze_blocks: int = 1) -> int:
    """Stage 1: backbone frozen; 2: the last ``unfreeze_blocks`` conv blocks trainable; 3: all.
    Returns the number of trainable parameters."""
    blocks = conv_blocks(model)
    if stage >= 3:
        trainable = len(blocks)
    elif stage == 2:
        trainable = min(len(blocks), max(0, unfreeze_blocks))
    else:
        trainable = 0
    for i, block in enumerate(blocks):
        on = i >= len(blocks) - trainable
        for conv in block:
            for p in conv.parameters():
                p.requires_grad_(on)
    for p in head_parameters(model):
        p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------ reloading
def build_from_cfg(
    cfg: list[int | str],
    num_classes: int,
    *,
    hidden: int = 4096,
    se_hidden: list[int] | None = None,
    reduction: int = 16,
    dropout: float = 0.5,
) -> VGGSE:
    """A VGG(-SE) with explicit widths: conv channels as listed, ``hidden`` classifier units and
    ``se_hidden`` units per SE block (pruning keeps a block's gate MLP width while its channels shrink,
    so neither follows from ``width``/``reduction``). Same layer indices as the unpruned model."""
    with torch.device("meta"):  # free: every layer is replaced or re-initialised below
        model = VGGSE(cfg, num_classes=num_classes, reduction=reduction, dropout=dropout)
        last = model.classifier[0].in_features
        if hidden != model.classifier[0].out_features:
            model.classifier[0] = nn.Linear(last, hidden)
            model.classifier[3] = nn.Linear(hidden, hidden)
            model.classifier[6] = nn.Linear(hidden, num_classes)
        blocks = model.se_blocks()
        if se_hidden is not None:
            if len(se_hidden) != len(blocks):
                raise ValueError(f"se_hidden has {len(se_hidden)} entries for {len(blocks)} SE blocks")
            for (_, block), h in zip(blocks, se_hidden, strict=True):
                block.fc[0] = nn.Linear(block.channels, h, bias=False)
                block.fc[2] = nn.Linear(h, block.channels, bias=False)
    model.to_empty(device="cpu")
    model._init_weights()
    for _, block in model.se_blocks():  # to_empty left the SE FCs uninitialised
        for fc in (block.fc[0], block.fc[2]):
            fc.reset_parameters()
    model.provenance = "random initialisation"  # type: ignore[attr-defined]
    return model


def model_metadata(arch: str, width: float, reduction: int, dropout: float) -> dict[str, Any]:
    """What :func:`load_trained` needs to rebuild ``model`` exactly."""
    return {"arch": arch, "width": float(width), "reduction": int(reduction), "dropout": float(dropout)}


def load_trained(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by ``sevgg train`` (any arch/width, from its metadata), or any checkpoint
    :func:`~sevgg_gui.checkpoints.load_checkpoint` understands. Returns (model in eval mode, metadata)."""
    path = Path(path)
    sd, meta, _notes = read_state_dict(path)
    if meta.get("arch") in ARCHS:
        num_classes = int(meta.get("num_classes") or _num_classes(sd))
        if meta.get("cfg"):  # explicit per-layer widths: a pruned model (sevgg prune)
            model = build_from_cfg(
                list(meta["cfg"]),
                num_classes,
                hidden=int(meta.get("hidden") or sd["classifier.0.weight"].shape[0]),
                se_hidden=[int(h) for h in meta.get("se_hidden") or []] or None,
                reduction=int(meta.get("reduction", 16)),
                dropout=float(meta.get("dropout", 0.5)),
            )
        else:
            model = build_model(
                str(meta["arch"]),
                num_classes,
                width=float(meta.get("width", 1.0)),
                reduction=int(meta.get("reduction", 16)),
                dropout=float(meta.get("dropout", 0.5)),
                init="none",
            )
        try:
            check_matches(sd, model)
        except CheckpointError as exc:
            raise CheckpointError(f"{path.name}: weights do not fit its metadata: {exc}") from None
        model.load_state_dict(sd, strict=True)
        model.provenance = str(meta.get("provenance") or f"checkpoint {path.name}")  # type: ignore[attr-defined]
        meta = dict(meta)
        meta["num_classes"] = num_classes
    else:
        model, info = load_checkpoint(path)
        meta = {**info.metadata, "class_names": info.class_names, "num_classes": info.num_classes}
        meta.setdefault("arch", "vgg16_se")
    model.class_names = meta.get("class_names")  # type: ignore[attr-defined]
    model.prune_record = meta.get("pruned")  # type: ignore[attr-defined]  # sevgg prune: kept channels
    return model.eval(), meta


def _num_classes(sd: Mapping[str, torch.Tensor]) -> int:
    return int(sd["classifier.6.weight"].shape[0])
