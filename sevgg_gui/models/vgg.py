"""VGG16-SE built from a config list, and the function-preserving transfer from a trained VGG16.

Layer indices match the article's hand-written ``nn.Sequential`` exactly: SE blocks sit at
``features.4/10/18/26/34``, right before each max-pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .se import SEBlock, run_sequential

# Numbers are 3x3 conv widths (each followed by ReLU), "SE" an SE block, "M" a 2x2 max-pool.
CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "SE", "M", 128, "SE", "M", 256, 256, "SE", "M", 512, 512, "SE", "M", 512, 512, "SE", "M"],
    "vgg16": [
        64, 64, "SE", "M",
        128, 128, "SE", "M",
        256, 256, 256, "SE", "M",
        512, 512, 512, "SE", "M",
        512, 512, 512, "SE", "M",
    ],
}  # fmt: skip

SE_INDICES_VGG16: tuple[int, ...] = (4, 10, 18, 26, 34)
TORCHVISION_VGG16_PARAMS = 138_357_544


def make_features(cfg: Sequence[int | str], reduction: int = 16, width: float = 1.0) -> nn.Sequential:
    """Build the convolutional trunk from a config list (torchvision's ``make_layers`` shape)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif item == "SE":
            # The SE input is the preceding in-place ReLU's output: a dead intermediate, safe to scale in place.
            layers.append(SEBlock(in_ch, reduction, inplace=True))
        else:
            out_ch = max(1, int(round(int(item) * width)))
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = out_ch
    return nn.Sequential(*layers)


class VGGSE(nn.Module):
    """A VGG with SE blocks from any config; ``VGG16_SE`` is the article's instance."""

    def __init__(
        self,
        cfg: Sequence[int | str],
        num_classes: int = 1000,
        reduction: int = 16,
        dropout: float = 0.5,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.reduction = reduction
        self.features = make_features(cfg, reduction, width)
        last = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        hidden = max(1, int(round(4096 * width)))
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(last * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's VGG init, so even random weights give image-dependent activations
        (PyTorch's default init, which the article's code gets, fades the signal out with depth).

        Skipped on the meta device (a checkpoint's weights are assigned next): ``normal_`` on meta
        tensors runs through torch._refs and imports torch._dynamo, ~1 s of start-up for nothing."""
        if any(p.is_meta for p in self.parameters()):
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        return self.classifier[-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = run_sequential(self.features, x)  # == self.features(x); SE + max-pool paired in inference
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)

    def se_blocks(self) -> list[tuple[str, SEBlock]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, SEBlock)]


class VGG16_SE(VGGSE):  # noqa: N801 - the article's class name, kept for drop-in compatibility
    """VGG16 with an SE block before each max-pool: the article's model, key for key."""

    def __init__(self, num_classes: int = 1000, reduction: int = 16, dropout: float = 0.5) -> None:
        super().__init__(CFGS["vgg16"], num_classes=num_classes, reduction=reduction, dropout=dropout)


# ----------------------------------------------------------------------------------------------
# Function-preserving transfer from a trained (torchvision) VGG16
# ----------------------------------------------------------------------------------------------


def is_torchvision_vgg16_state_dict(sd: Mapping[str, Any]) -> bool:
    """True for a plain torchvision VGG16 (no batch norm) state dict."""
    convs = [k for k in sd if k.startswith("features.") and k.endswith(".weight")]
    return (
        len(convs) == 13
        and "features.28.weight" in sd
        and "classifier.6.weight" in sd
        and not any(".fc." in k for k in sd)
        and tuple(sd["features.0.weight"].shape) == (64, 3, 3, 3)
    )


def _conv_keys(sd: Mapping[str, Any]) -> list[str]:
    keys = [k for k in sd if k.startswith("features.") and k.endswith(".weight") and sd[k].dim() == 4]
    return sorted(keys, key=lambda k: int(k.split(".")[1]))


def transfer_vgg16_state_dict(
    vgg_sd: Mapping[str, torch.Tensor], model: VGGSE, *, keep_classifier: bool = True
) -> dict[str, torch.Tensor]:
    """Map a VGG16 state dict onto ``model`` so that the SE model computes what VGG16 computes.

    Each SE gets a zero second FC, so its gate is exactly sigmoid(0) = 0.5 for every input; the weights
    of the next linear operator after it (the next conv, or ``classifier.0`` after the last block) are
    doubled. Max-pool and average-pool commute with a positive scale, so the product is unchanged while
    the SE blocks stay trainable (their first FC keeps its random init and receives gradients).
    """
    if not is_torchvision_vgg16_state_dict(vgg_sd):
        raise ValueError("source is not a torchvision VGG16 state dict (13 convs, classifier.0/3/6 expected)")
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {k: v.clone() for k, v in target.items()}
    src_convs = _conv_keys(vgg_sd)
    dst_convs = [f"features.{i}.weight" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    if len(src_convs) != len(dst_convs):
        raise ValueError(f"VGG16 has {len(src_convs)} convs, the SE model {len(dst_convs)}")
    after_se, tail_doubled = _layers_after_se(model)
    for s, d in zip(src_convs, dst_convs, strict=True):
        w = vgg_sd[s].detach().to(torch.float32)
        if w.shape != out[d].shape:
            raise ValueError(f"shape mismatch {s} {tuple(w.shape)} -> {d} {tuple(out[d].shape)}")
        out[d] = w * 2.0 if d in after_se else w.clone()
        out[d[: -len("weight")] + "bias"] = (
            vgg_sd[s[: -len("weight")] + "bias"].detach().to(torch.float32).clone()
        )
    for name, block in model.se_blocks():
        out[f"{name}.fc.2.weight"] = torch.zeros_like(block.fc[2].weight)
    for idx in (0, 3, 6):
        wk, bk = f"classifier.{idx}.weight", f"classifier.{idx}.bias"
        if idx == 6 and (not keep_classifier or vgg_sd[wk].shape != out[wk].shape):
            continue  # new head: keep the model's fresh init
        w = vgg_sd[wk].detach().to(torch.float32)
        out[wk] = w * 2.0 if (idx == 0 and tail_doubled) else w.clone()
        out[bk] = vgg_sd[bk].detach().to(torch.float32).clone()
    return out


def _layers_after_se(model: VGGSE) -> tuple[set[str], bool]:
    """Weight keys of the convs whose input is an SE block's gated map (only pools in between), and
    whether the last SE block feeds ``classifier.0`` (through the average pool)."""
    after_se: set[str] = set()
    pending = False
    for i, m in enumerate(model.features):
        if isinstance(m, SEBlock):
            pending = True
        elif isinstance(m, nn.Conv2d):
            if pending:
                after_se.add(f"features.{i}.weight")
            pending = False
    return after_se, pending


@torch.no_grad()
def neutralise_se(model: VGGSE) -> VGGSE:
    """Make every SE block start as a pass-through, in place: second FC zero (gate exactly 0.5 for any
    input) and the next linear operator's weights doubled, so the model computes what the same network
    without SE computes with these weights, while the blocks stay trainable (as in the ImageNet transfer).

    For training from scratch: a randomly initialised SE gate of ~0.5 halves the signal at each of the
    five blocks (1/32 at the classifier) and, without batch norm, slows the early epochs."""
    after_se, tail = _layers_after_se(model)
    params = dict(model.named_parameters())
    for key in after_se:
        params[key].mul_(2.0)
    if tail:
        params["classifier.0.weight"].mul_(2.0)
    for _name, block in model.se_blocks():
        block.fc[2].weight.zero_()
    return model


def _resolve_vgg16_source(source: Any) -> tuple[Mapping[str, torch.Tensor], str]:
    """Turn a weights enum / name / path / state dict into (state_dict, provenance text)."""
    from torchvision.models import VGG16_Weights

    if isinstance(source, Mapping):
        return source, "VGG16 state dict"
    if isinstance(source, str | Path) and Path(source).exists():
        from ..statedict import read_state_dict

        sd, _meta, _fmt = read_state_dict(Path(source))
        return sd, f"VGG16 file {source}"
    if isinstance(source, str) and (Path(source).suffix or "/" in source or "\\" in source):
        raise ValueError(f"{source}: no such file")
    if isinstance(source, str):
        try:
            source = VGG16_Weights[source.removeprefix("VGG16_Weights.")]
        except KeyError:
            raise ValueError(
                f"unknown VGG16 weights {source!r}: use IMAGENET1K_V1, a file path or a state dict"
            ) from None
    if isinstance(source, VGG16_Weights):
        return load_torchvision_weights(source), f"torchvision VGG16_Weights.{source.name}"
    raise TypeError(f"unsupported VGG16 source: {type(source).__name__}")


def cached_weights_path(weights: Any) -> Path:
    """Where torch.hub keeps (or would keep) the file for a torchvision weights enum."""
    from torch.hub import get_dir

    return Path(get_dir()) / "checkpoints" / Path(weights.url).name


def load_torchvision_weights(
    weights: Any, progress: bool = True, *, hint: str = "pass a local VGG16 .pth file"
) -> dict[str, torch.Tensor]:
    """Load a torchvision weights enum from the hub cache, downloading it if absent.

    Offline with no cached copy this raises one line that says where the file is expected and
    ``hint``, what else the user can do.
    """
    path = cached_weights_path(weights)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, socket errors...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeError(
            f"{weights} is not cached at {path} and could not be downloaded ({reason}); "
            f"connect to the internet once or {hint}"
        ) from None


def from_vgg16(
    source: Any = "IMAGENET1K_V1", reduction: int = 16, num_classes: int | None = None
) -> VGG16_SE:
    """VGG16-SE initialised from a trained VGG16 so that it computes exactly what VGG16 computes.

    ``source``: a ``VGG16_Weights`` enum or its name (downloaded through torchvision and cached),
    a path to a VGG16 ``.pth``/``.safetensors``, or a state dict. ``num_classes`` other than the
    source's gives a fresh final layer (transfer learning).
    """
    sd, provenance = _resolve_vgg16_source(source)
    src_classes = sd["classifier.6.weight"].shape[0] if "classifier.6.weight" in sd else 1000
    model = VGG16_SE(num_classes=num_classes or src_classes, reduction=reduction)
    model.load_state_dict(transfer_vgg16_state_dict(sd, model))
    model.provenance = f"function-preserving transfer from {provenance}"  # type: ignore[attr-defined]
    return model


def vgg16_se(
    num_classes: int = 1000, reduction: int = 16, weights: Any = None, dropout: float = 0.5
) -> VGG16_SE:
    """The article's factory; ``weights="IMAGENET1K_V1"`` starts from ImageNet VGG16 (see ``from_vgg16``)."""
    if weights is None:
        model = VGG16_SE(num_classes=num_classes, reduction=reduction, dropout=dropout)
        model.provenance = "random initialisation"  # type: ignore[attr-defined]
        return model
    return from_vgg16(weights, reduction=reduction, num_classes=num_classes)
