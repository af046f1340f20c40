"""The models a user can pick by name (``--checkpoint`` specs), kept free of torch imports so the
app can build its menus and show its window while torch is still loading on the worker thread."""

from __future__ import annotations

import os
from pathlib import Path

ATTENTION_VARIANTS = ("sse", "scse", "bam", "cbam", "eca")

# timm's trained SE networks (weights from the Hugging Face hub, cached after the first download).
TIMM_CHOICES: list[tuple[str, str]] = [
    ("SE-ResNet-50 (timm, trained SE)", "timm:seresnet50.a1_in1k"),
    ("Legacy SE-ResNet-50 (timm, the original SENet port)", "timm:legacy_seresnet50.in1k"),
    ("ECA-ResNet-50d (timm, ECA)", "timm:ecaresnet50d.miil_in1k"),
    ("EfficientNet-B0 (timm)", "timm:efficientnet_b0.ra_in1k"),
    ("MobileNetV3-Large (timm)", "timm:mobilenetv3_large_100.ra_in1k"),
    ("RegNetY-016 (timm)", "timm:regnety_016.tv2_in1k"),
]

MODEL_CHOICES: list[tuple[str, str | None]] = [
    ("VGG16-SE (article; ImageNet transfer when cached)", None),
    ("MobileNetV3-Small (torchvision, trained SE)", "pretrained:mobilenet_v3_small"),
    ("MobileNetV3-Large (torchvision, trained SE)", "pretrained:mobilenet_v3_large"),
    ("EfficientNet-B0 (torchvision, trained SE)", "pretrained:efficientnet_b0"),
    ("RegNetY-400MF (torchvision, trained SE)", "pretrained:regnet_y_400mf"),
    *[(f"VGG16 + {k.upper()} (random init)", f"vgg16:{k}") for k in ATTENTION_VARIANTS],
    *TIMM_CHOICES,
]

# The weight files of a Hugging Face model folder, in the order they are preferred.
MODEL_FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    """A folder holding a model (``config.json`` + weights, or a hub cache repo folder), not images."""
    p = Path(path)
    if not p.is_dir():
        return False
    if (p / "config.json").is_file() and any((p / w).is_file() for w in MODEL_FOLDER_WEIGHTS):
        return True
    return (p / "snapshots").is_dir() and (p / "refs").is_dir()  # models--org--name in the hub cache
