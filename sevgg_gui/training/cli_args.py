"""Arguments of ``sevgg train`` / ``eval`` / ``export`` -- argparse only, so ``sevgg --help`` stays instant.

Every ``train`` option defaults to ``None`` here: the real defaults live in
:class:`~sevgg_gui.training.train.TrainConfig`, and ``--resume`` can tell what was set on the command
line (which overrides the checkpoint's saved configuration) from what was not (which is inherited).
"""

from __future__ import annotations

import argparse
from typing import Any

# flag -> (type, help). Defaults are shown from TrainConfig's values in the help text.
_TRAIN_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--data", {"help": "KIND:PATH (fashionmnist:DIR, cifar10:DIR, imagefolder:DIR) or an ImageFolder DIR"}),
    ("--epochs", {"type": int, "help": "total epochs (default: sum of --stages, else 10)"}),
    ("--out", {"help": "checkpoint written every epoch (default sevgg_train.pth; with --resume: that file)"}),
    (
        "--resume",
        {"metavar": "CKPT", "help": "continue a run exactly (flags given now override its saved ones)"},
    ),
    ("--init", {"help": "imagenet | random | CKPT (default: imagenet at full width, else random)"}),
    (
        "--se-init",
        {
            "choices": ["default", "neutral"],
            "help": "with random init: neutral starts every SE block as a pass-through (gate 0.5, next "
            "layer x2), as the ImageNet transfer does (default: the SE layers' own random init)",
        },
    ),
    (
        "--arch",
        {
            "choices": ["vgg16_se", "vgg11_se", "vgg16"],
            "help": "vgg16_se (default), vgg11_se, or vgg16: the plain baseline without SE",
        },
    ),
    ("--width", {"type": float, "help": "channel width multiplier, e.g. 0.125 for a slim model (default 1)"}),
    ("--reduction", {"type": int, "help": "SE reduction ratio r (default 16)"}),
    (
        "--stages",
        {
            "metavar": "A,B,C",
            "help": "progressive unfreezing: A epochs backbone frozen, B with the "
            "last conv block(s) trainable, C all trainable",
        },
    ),
    ("--unfreeze-blocks", {"type": int, "help": "conv blocks unfrozen in stage 2 (default 1)"}),
    ("--input-size", {"type": int, "help": "square crop size (default: 224 for folders, 32 for small sets)"}),
    ("--augment", {"choices": ["none", "light", "strong"], "help": "augmentation preset (default light)"}),
    ("--val-fraction", {"type": float, "help": "held-out share of the training data (default 0.1)"}),
    (
        "--limit",
        {"type": int, "metavar": "N", "help": "use N training images (class-balanced), for quick runs"},
    ),
    ("--val-limit", {"type": int, "metavar": "N", "help": "cap the validation images (default: --limit)"}),
    ("--cache-dir", {"help": "where gzip/tar data is unpacked (default ~/.cache/sevgg_gui/datasets)"}),
    ("--batch-size", {"type": int, "help": "global batch, split over DDP ranks (default 64)"}),
    (
        "--accum-steps",
        {"type": int, "help": "gradient accumulation: effective batch = batch x steps (default 1)"},
    ),
    ("--optimizer", {"choices": ["adamw", "sgd"], "help": "default adamw"}),
    (
        "--lr-backbone",
        {
            "type": float,
            "help": "learning rate of the conv backbone (default 1e-3 with --init random, else 1e-5)",
        },
    ),
    (
        "--lr-head",
        {
            "type": float,
            "help": "learning rate of SE blocks + classifier (default 1e-3 with --init random, else 1e-4)",
        },
    ),
    ("--momentum", {"type": float, "help": "SGD momentum (default 0.9)"}),
    ("--weight-decay", {"type": float, "help": "decoupled weight decay, biases excluded (default 0.01)"}),
    ("--dropout", {"type": float, "help": "classifier dropout (default 0.5)"}),
    ("--label-smoothing", {"type": float, "help": "default 0.1"}),
    ("--clip-grad", {"type": float, "help": "max global gradient norm, 0 disables (default 1.0)"}),
    ("--warmup-epochs", {"type": float, "help": "linear warm-up before the cosine decay (default 0)"}),
    ("--min-lr-ratio", {"type": float, "help": "final LR as a share of the initial one (default 0.01)"}),
    (
        "--amp",
        {"choices": ["auto", "fp16", "bf16", "off"], "help": "mixed precision, CUDA only (default auto)"},
    ),
    ("--device", {"help": "auto | cpu | cuda | cuda:N (default auto)"}),
    ("--workers", {"type": int, "help": "DataLoader worker processes (default 0)"}),
    ("--seed", {"type": int, "help": "seed of the split, the data order, init and dropout (default 0)"}),
    ("--log-csv", {"help": "per-epoch CSV log (default: OUT with .csv)"}),
    ("--log-interval", {"type": int, "metavar": "N", "help": "also print a line every N optimizer steps"}),
    (
        "--stop-after",
        {"type": int, "metavar": "N", "help": "end this invocation after N epochs (resume later)"},
    ),
]
_TRAIN_FLAGS = [
    (
        "--deterministic",
        "torch.use_deterministic_algorithms (slower on GPU; CPU runs are reproducible anyway)",
    ),
    ("--keep-best", "also write OUT.best.pth whenever validation top-1 improves"),
]


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    for flag, kw in _TRAIN_OPTIONS:
        p.add_argument(flag, default=None, **kw)
    for flag, text in _TRAIN_FLAGS:
        p.add_argument(flag, action="store_true", default=None, help=text)


def explicit_train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line (everything not None), parsed."""
    names = [f.lstrip("-").replace("-", "_") for f, _ in _TRAIN_OPTIONS] + [
        f.lstrip("-").replace("-", "_") for f, _ in _TRAIN_FLAGS
    ]
    out = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    if "stages" in out:
        try:
            out["stages"] = [int(s) for s in str(out["stages"]).split(",")]
        except ValueError:
            raise ValueError(f"--stages wants three integers A,B,C, got {out['stages']!r}") from None
    return out


MODEL_HELP = (
    "any model spec: a `sevgg train` checkpoint, another .pth/.safetensors, a Hugging Face model folder, "
    "pretrained:NAME, vgg16:ATTENTION, timm:NAME[.TAG][:random]; with --model-code, its weights"
)


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="KIND:PATH or an ImageFolder DIR")
    p.add_argument("--checkpoint", "-c", help=MODEL_HELP)
    p.add_argument(
        "--split",
        choices=["test", "val", "train"],
        default="test",
        help="test (default: the official test split / test folder), val (the held-out split "
        "of training, same seed), train",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument("--confusion", metavar="PNG", help="write the confusion matrix as an image")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, metavar="N", help="evaluate N images (class-balanced)")
    p.add_argument("--input-size", type=int, help="override the model's input size")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--cache-dir")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", "-c", help="a model spec (see `sevgg predict --help`); required without --model-code"
    )
    p.add_argument("--onnx", "-o", required=True, metavar="OUT.onnx")
    p.add_argument(
        "--with-excitations",
        action="store_true",
        help="add every attention block's output beside the logits: se1..se5 (B, C) for VGG16-SE, "
        "gate<i> (B, C) / map<i> (B, 1, H, W) for other attention (names and blocks in the ONNX metadata)",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 or newer (default 17)")
    p.add_argument("--input-size", type=int, help="trace size (default: the checkpoint's input size)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
