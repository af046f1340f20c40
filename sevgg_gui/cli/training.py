"""Commands that train and evaluate: train, eval, analyze, compare (the article's sections 6 and 7)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import add_model_code_argument, err

DATA_MODEL_RULES = (
    "A `sevgg train` checkpoint is fed as it was trained (its input size, its train/val split, its "
    "classes); any other model through its own preprocessing (crop, resize, interpolation, mean/std). "
    "Classes: the model's and the data's must be the same; else every data class must be one of the "
    "model's, by name or, for a 1000-class ImageNet model, by ImageNet name or WordNet id (n02123045) "
    "folder names (metrics among those classes, plus top-1 over all outputs); else, with as many classes "
    "as the model's outputs, output i is read as class i and the report says so; else one line, exit 2."
)


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.cli_args import explicit_train_options
    from ..training.train import TrainConfig, train

    opts = explicit_train_options(args)
    if not opts.get("data") and not opts.get("resume"):
        err("--data is required (or --resume CKPT)")
        return 2
    result = train(TrainConfig(**opts), explicit=opts.keys())
    return 130 if result.interrupted else 0


def _model_over_data(command: str, args: argparse.Namespace, run: Callable[..., Any], **extra: Any) -> Any:
    """eval and analyze: ``run`` any model spec (or --model-code) over --data; None after one line
    when there is no model or its classes do not match the data's."""
    from ..training.class_match import ClassMismatch

    if not args.checkpoint and not args.model_code:
        err(f"{command}: --checkpoint is required (or --model-code FILE.py:FUNCTION)")
        return None
    try:
        return run(
            args.checkpoint,
            args.data,
            split=args.split,
            batch_size=args.batch_size,
            limit=args.limit,
            device=args.device,
            cache_dir=args.cache_dir,
            input_size=args.input_size,
            model_code=args.model_code,
            **extra,
        )
    except ClassMismatch as exc:
        err(str(exc))
        return None


def cmd_eval(args: argparse.Namespace) -> int:
    from ..training.evaluate import evaluate_checkpoint, save_confusion_png, write_json

    report = _model_over_data("eval", args, evaluate_checkpoint, workers=args.workers)
    if report is None:
        return 2
    if report.warning:
        err(f"warning: {report.warning}")
    text = write_json(report, args.json_out)
    print(text if args.json else report.format())
    if args.confusion:
        path = save_confusion_png(report, args.confusion)
        print(f"confusion matrix written to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from ..analysis_classwise import analyze_checkpoint, plot_class_profiles, spread_summary

    prof = _model_over_data("analyze", args, analyze_checkpoint)
    if prof is None:
        return 2
    if prof.meta.get("warning"):
        err(f"warning: {prof.meta['warning']}")
    for key, label in (("data_note", "data"), ("class_map", "classes")):
        if prof.meta.get(key):
            print(f"{label}: {prof.meta[key]}")
    path = prof.save(args.out)
    n = int(next(iter(prof.count.values())).sum())
    print(
        f"wrote {path}: {len(prof.blocks)} blocks x {len(prof.classes)} classes over {n} {args.split} images"
    )
    for name, spread in spread_summary(prof):
        print(f"  {name:<14} {prof.mean[name].shape[1]:>5} channels  between-class spread {spread:.4f}")
    if args.png:
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        picked = [int(c) if c.isdigit() else c for c in classes] if classes else None
        view = "fitted" if args.zoom else args.view
        print(
            f"plot ({view} view) written to {plot_class_profiles(prof, args.png, classes=picked, view=view)}"
        )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..training.compare import CompareConfig, compare

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        err(f"--seeds wants integers like 0,1,2, got {args.seeds!r}")
        return 2
    cfg = CompareConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        seeds=seeds,
        archs=[a.strip() for a in args.archs.split(",") if a.strip()],
        width=args.width,
        reduction=args.reduction,
        se_init=args.se_init,
        input_size=args.input_size,
        limit=args.limit,
        val_limit=args.val_limit,
        test_limit=args.test_limit,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        val_fraction=args.val_fraction,
        target_acc=args.target_acc,
        device=args.device,
        workers=args.workers,
        cache_dir=args.cache_dir,
        threads=args.threads,
        resume=args.resume,
    )
    compare(cfg)
    print(f"summary: {Path(args.out) / 'summary.json'}, curves: {Path(args.out) / 'curves.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..training.cli_args import MODEL_HELP, add_eval_arguments, add_train_arguments

    p = sub.add_parser(
        "train",
        help="train or fine-tune VGG16-SE (article recipe); DDP under torchrun",
        description="Train VGG16-SE: two learning rates, progressive unfreezing, label smoothing, "
        "clipping; a resumable checkpoint every epoch. Multi-GPU/CPU: torchrun --nproc_per_node=N "
        "-m sevgg_gui.cli train ...",
    )
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "eval",
        help="top-1/top-5, per-class accuracy and confusion matrix of any model on a labelled data set",
        description="Evaluate any model spec on labelled data. " + DATA_MODEL_RULES,
    )
    add_eval_arguments(p)
    add_model_code_argument(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "analyze",
        help="class-wise SE excitation statistics (mean/std per class per block) to NPZ + PNG",
        description="Per-class mean and std of every attention gate of any model whose attention blocks "
        "are found (registered types, or found by their behaviour). " + DATA_MODEL_RULES,
    )
    p.add_argument("--data", required=True, help="KIND:PATH or an ImageFolder DIR")
    p.add_argument("--checkpoint", "-c", help=MODEL_HELP)
    add_model_code_argument(p)
    p.add_argument("--out", "-o", required=True, metavar="STATS.npz")
    p.add_argument("--png", metavar="PLOT.png", help="one panel per block, one line per class")
    p.add_argument("--classes", help="comma-separated class names or indices to plot (default: first 10)")
    p.add_argument(
        "--view",
        choices=["delta", "fitted", "absolute"],
        default="delta",
        help="delta (default): each class minus the all-class mean, axis fitted, so small differences "
        "show; fitted: the mean gates on an axis fitted to them; absolute: on the gate's 0..1",
    )
    p.add_argument("--zoom", action="store_true", help="same as --view fitted (older spelling)")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--limit", type=int, metavar="N", help="use N images (class-balanced)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--input-size", type=int, help="override the model's input size")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "compare", help="train VGG16 and VGG16-SE with identical data/schedule/seeds; mean ± std summary"
    )
    p.add_argument("--data", required=True, help="KIND:PATH or an ImageFolder DIR")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="summary.json, curves.png, runs/")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--archs", default="vgg16,vgg16_se", help="first is the baseline (default vgg16,vgg16_se)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier, e.g. 0.125 for quick runs")
    p.add_argument("--reduction", type=int, default=16)
    p.add_argument(
        "--se-init",
        choices=["default", "neutral"],
        default="default",
        help="neutral: the SE model starts as a pass-through of its SE blocks (gates 0.5, next layer x2)",
    )
    p.add_argument("--input-size", type=int)
    p.add_argument("--limit", type=int, metavar="N", help="training images (class-balanced)")
    p.add_argument("--val-limit", type=int, metavar="N", help="validation images (default: --limit)")
    p.add_argument("--test-limit", type=int, metavar="N", help="test images (default: --val-limit)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="one learning rate for every layer (default 1e-3)")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--augment", choices=["none", "light", "strong"], default="light")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--target-acc", type=float, help="val top-1 for epochs-to-target (default: 0.9 x weaker)")
    p.add_argument("--threads", type=int, help="torch CPU threads (fixed, for comparable timings)")
    p.add_argument("--resume", action="store_true", help="reuse / continue runs already in DIR/runs")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_compare)
