"""The models a user can pick by name (``--checkpoint`` specs), kept free of torch imports so the
app can build its menus and show its window while torch is still loading on the worker thread."""

from __future__ import annotations

ATTENTION_VARIANTS = ("sse", "scse", "bam", "cbam", "eca")

MODEL_CHOICES: list[tuple[str, str | None]] = [
    ("VGG16-SE (article; ImageNet transfer when cached)", None),
    ("MobileNetV3-Small (torchvision, trained SE)", "pretrained:mobilenet_v3_small"),
    ("MobileNetV3-Large (torchvision, trained SE)", "pretrained:mobilenet_v3_large"),
    ("EfficientNet-B0 (torchvision, trained SE)", "pretrained:efficientnet_b0"),
    ("RegNetY-400MF (torchvision, trained SE)", "pretrained:regnet_y_400mf"),
    *[(f"VGG16 + {k.upper()} (random init)", f"vgg16:{k}") for k in ATTENTION_VARIANTS],
]
