"""`sevgg`: the command-line face of the core.

Imports are lazy so ``sevgg --help`` answers instantly; bad inputs give one line on stderr naming the
file and the reason, a batch goes on past a bad file, and the exit code says whether all went well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


def _err(msg: str) -> None:
    print(f"sevgg: {msg}", file=sys.stderr)


def expand_inputs(items: Sequence[str]) -> Iterator[str]:
    """Files as given; folders expanded to their images (sorted, not recursive)."""
    from .images import is_image_path

    for item in items:
        p = Path(item)
        if p.is_dir():
            yield from (str(c) for c in sorted(p.iterdir()) if c.is_file() and is_image_path(c))
        else:
            yield item


def _load(args: argparse.Namespace):
    from .zoo import load_model

    loaded = load_model(args.checkpoint)
    if loaded.warning:
        _err(f"warning: {loaded.warning}")
    return loaded


def _predictor(args: argparse.Namespace, loaded):
    from .inference import Predictor

    return Predictor(
        loaded.model,
        device=args.device,
        class_names=loaded.class_names,
        half=args.half,
        preprocess=loaded.preprocess(),
    )


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from .analysis import format_cost_table, model_cost
    from .models.vgg import VGG16_SE

    if args.checkpoint:
        loaded = _load(args)
        model, provenance = loaded.model, loaded.provenance
        num_classes = loaded.info.num_classes if loaded.info else 1000
        reduction = loaded.info.reduction if loaded.info else 16
    else:
        with torch.device("meta"):  # shapes only: instant, no 0.5 GB allocation
            model = VGG16_SE(num_classes=args.num_classes, reduction=args.reduction)
        provenance, num_classes, reduction = (
            "architecture only (no weights loaded)",
            args.num_classes,
            args.reduction,
        )
    cost = model_cost(model, (args.input_size, args.input_size))
    if args.json:
        print(
            json.dumps(
                {
                    "architecture": type(model).__name__,
                    "num_classes": num_classes,
                    "reduction": reduction,
                    "provenance": provenance,
                    "total_params": cost.total_params,
                    "se_params": cost.attention_params,
                    "se_share": cost.attention_share,
                    "total_macs": cost.total_macs,
                    "se_macs": cost.attention_macs,
                    "blocks": [vars(b) for b in cost.blocks],
                },
                indent=2,
            )
        )
        return 0
    print(f"{type(model).__name__}: {num_classes} classes, reduction r={reduction}")
    print(f"weights: {provenance}")
    print(f"parameters: {cost.total_params:,} (torchvision VGG16 + {cost.attention_params:,} in SE blocks)")
    print()
    print(format_cost_table(cost))
    return 0


def _run_batch(args: argparse.Namespace, handle) -> int:
    from .images import ImageError
    from .inference import InferenceError

    loaded = _load(args)
    predictor = _predictor(args, loaded)
    failed: list[str] = []
    total = 0
    for path in expand_inputs(args.images):
        total += 1
        try:
            handle(path, predictor.predict(path, topk=args.topk))
        except (ImageError, InferenceError) as exc:
            failed.append(path)
            _err(str(exc) if str(exc).startswith(Path(path).name) else f"{path}: {exc}")
    if total == 0:
        _err("no images found in the given inputs")
        return 2
    if failed:
        _err(f"{len(failed)} of {total} inputs failed: {', '.join(failed)}")
        return 1
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    rows: list[dict] = []

    def handle(path: str, result) -> None:
        if args.json:
            rows.append(
                {
                    "image": path,
                    "topk": [
                        {"index": p.index, "label": p.label, "prob": round(p.prob, 6)} for p in result.topk
                    ],
                    "ms": {k: round(v, 2) for k, v in result.timings.items()},
                }
            )
        else:
            print(path)
            for rank, p in enumerate(result.topk, 1):
                print(f"  {rank}. {p.label:<30} {p.prob:7.2%}")

    code = _run_batch(args, handle)
    if args.json:
        print(json.dumps(rows, indent=2))
    return code


def cmd_excite(args: argparse.Namespace) -> int:
    from .export import write_excitations

    out = Path(args.out)
    if out.suffix not in (".csv", ".npz"):
        _err(f"{out}: --out must end in .csv or .npz")
        return 2
    names: list[str] = []
    results = []

    def handle(path: str, result) -> None:
        names.append(path)
        results.append(result)

    code = _run_batch(args, handle)
    if results:
        write_excitations(out, names, results)
        print(f"wrote {len(results)} image(s) x {len(results[0].excitations)} blocks to {out}")
    return code


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from torchvision.models import VGG16_Weights

    from .models.vgg import cached_weights_path, load_torchvision_weights

    try:
        load_torchvision_weights(VGG16_Weights.IMAGENET1K_V1, progress=True)
    except RuntimeError as exc:
        _err(str(exc))
        return 1
    print(f"ImageNet VGG16 weights cached at {cached_weights_path(VGG16_Weights.IMAGENET1K_V1)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training.cli_args import explicit_train_options
    from .training.train import TrainConfig, train

    opts = explicit_train_options(args)
    if not opts.get("data") and not opts.get("resume"):
        _err("--data is required (or --resume CKPT)")
        return 2
    result = train(TrainConfig(**opts), explicit=opts.keys())
    return 130 if result.interrupted else 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .training.evaluate import evaluate_checkpoint, save_confusion_png, write_json

    report = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        limit=args.limit,
        device=args.device,
        workers=args.workers,
        cache_dir=args.cache_dir,
        input_size=args.input_size,
    )
    text = write_json(report, args.json_out)
    print(text if args.json else report.format())
    if args.confusion:
        path = save_confusion_png(report, args.confusion)
        print(f"confusion matrix written to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy.onnx_export import export_checkpoint

    report = export_checkpoint(
        args.checkpoint,
        args.onnx,
        with_excitations=args.with_excitations,
        opset=args.opset,
        input_size=args.input_size,
        check=not args.no_check,
    )
    print(f"wrote {report.path} (opset {report.opset}; outputs {', '.join(report.output_names)})")
    if report.max_abs_diff:
        sizes = sorted({k.split("@")[1] for k in report.max_abs_diff})
        print(f"onnxruntime vs PyTorch at {', '.join(sizes)}: max abs diff {report.worst:.3g}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sevgg", description="VGG16-SE: inspect the model, classify images, record SE excitations."
    )
    parser.add_argument("--version", action="version", version=f"sevgg_gui {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--checkpoint",
            "-c",
            help=".pth / .safetensors checkpoint (default: ImageNet VGG16 transfer if cached, else random)",
        )
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
        p.add_argument("--half", action="store_true", help="half precision (GPU only)")
        p.add_argument("--topk", type=int, default=5)

    p = sub.add_parser("info", help="architecture, the SE parameter table and FLOPs")
    p.add_argument("--checkpoint", "-c")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--reduction", type=int, default=16)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("predict", help="top-k classes for images or folders")
    p.add_argument("images", nargs="+")
    common(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("excite", help="record every SE block's excitation for images to CSV or NPZ")
    p.add_argument("images", nargs="+")
    common(p)
    p.add_argument("--out", "-o", required=True, help="F.csv or F.npz")
    p.set_defaults(func=cmd_excite)

    p = sub.add_parser(
        "fetch-weights", help="download and cache torchvision's ImageNet VGG16 (needs internet once)"
    )
    p.set_defaults(func=cmd_fetch_weights)

    from .training.cli_args import add_eval_arguments, add_export_arguments, add_train_arguments

    p = sub.add_parser(
        "train",
        help="train or fine-tune VGG16-SE (article recipe); DDP under torchrun",
        description="Train VGG16-SE: two learning rates, progressive unfreezing, label smoothing, "
        "clipping; a resumable checkpoint every epoch. Multi-GPU/CPU: torchrun --nproc_per_node=N "
        "-m sevgg_gui.cli train ...",
    )
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and confusion matrix of a checkpoint")
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX (dynamic batch/H/W), checked with onnxruntime"
    )
    add_export_arguments(p)
    p.set_defaults(func=cmd_export)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:  # a last resort: one line, never a traceback
        from .checkpoints import CheckpointError

        if isinstance(exc, CheckpointError | ValueError | RuntimeError | OSError):
            _err(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        else:
            _err(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        if os.environ.get("SEVGG_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
