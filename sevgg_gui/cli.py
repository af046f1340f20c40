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
    """``--checkpoint`` takes any model spec ``load_model`` does: a checkpoint file, a torchvision SE
    state dict, ``pretrained:<name>`` or ``vgg16:<attention>``."""
    from .deploy.onnx_export import export_spec

    report = export_spec(
        args.checkpoint,
        args.onnx,
        with_excitations=args.with_excitations,
        opset=args.opset,
        input_size=args.input_size,
        check=not args.no_check,
    )
    for warning in report.warnings:
        _err(f"warning: {warning}")
    print(f"wrote {report.path} (opset {report.opset}; outputs {', '.join(report.output_names)})")
    if report.excitations:
        print(
            "excitation outputs: " + ", ".join(f"{o.name}={o.block} ({o.kind})" for o in report.excitations)
        )
    if report.max_abs_diff:
        shapes = ", ".join(s.replace("x", "x3x", 1) for s in report.checked_shapes)
        print(
            f"onnxruntime vs PyTorch at {shapes}: max abs diff {report.worst:.3g} "
            f"({report.worst_relative:.3g} relative to the largest output)"
        )
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis_classwise import analyze_checkpoint, plot_class_profiles, spread_summary

    prof = analyze_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=args.cache_dir,
        input_size=args.input_size,
    )
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
        print(f"plot written to {plot_class_profiles(prof, args.png, classes=picked, zoom=args.zoom)}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from .deploy.prune import PruneConfig, prune_checkpoint, write_report

    cfg = PruneConfig(
        checkpoint=args.checkpoint,
        out=args.out,
        ratio=args.ratio,
        criterion=args.criterion,
        scope=args.scope,
        allocation=args.allocation,
        data=args.data,
        split=args.split,
        limit=args.limit,
        calib_limit=args.calib_limit,
        finetune_epochs=args.finetune_epochs,
        finetune_limit=args.finetune_limit,
        finetune_lr=args.finetune_lr,
        finetune_distill=args.finetune_distill,
        batch_size=args.batch_size,
        latency_runs=args.latency_runs,
        cache_dir=args.cache_dir,
        device=args.device,
    )
    report = prune_checkpoint(cfg)
    print(report.format())
    if args.json_out:
        write_report(report, args.json_out)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .deploy.distill import DistillConfig, default_out, distill

    if not args.resume and not (args.teacher and args.data):
        _err("--teacher and --data are required (or --resume CKPT)")
        return 2
    cfg = DistillConfig(
        teacher=args.teacher,
        data=args.data,
        out=args.out or (args.resume if args.resume else default_out(args.teacher)),
        student_arch=args.student_arch,
        student_width=args.student_width,
        student_init=args.student_init,
        temperature=args.temperature,
        alpha=args.alpha,
        epochs=args.epochs if args.epochs is not None else 5,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        dropout=args.dropout,
        augment=args.augment,
        input_size=args.input_size,
        limit=args.limit,
        val_limit=args.val_limit,
        cache_dir=args.cache_dir,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
        resume=args.resume,
    )
    result = distill(cfg, explicit=_distill_explicit(args))
    if result.interrupted:
        return 130
    last = result.history[-1] if result.history else {}
    acc = f", val top-1 {last['val_acc']:.2%}" if last.get("val_acc") is not None else ""
    teacher = f" (teacher {result.teacher_val_acc:.2%})" if result.teacher_val_acc is not None else ""
    print(f"wrote {result.checkpoint}: {result.student_params:,} parameters{acc}{teacher}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .training.compare import CompareConfig, compare

    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        _err(f"--seeds wants integers like 0,1,2, got {args.seeds!r}")
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


def _add_analysis_parsers(sub: argparse._SubParsersAction) -> None:
    """analyze / prune / distill / compare: argparse only (the work is imported by the handlers)."""
    p = sub.add_parser(
        "analyze", help="class-wise SE excitation statistics (mean/std per class per block) to NPZ + PNG"
    )
    p.add_argument("--data", required=True, help="KIND:PATH or an ImageFolder DIR")
    p.add_argument("--checkpoint", "-c", required=True)
    p.add_argument("--out", "-o", required=True, metavar="STATS.npz")
    p.add_argument("--png", metavar="PLOT.png", help="one panel per block, one line per class")
    p.add_argument("--classes", help="comma-separated class names or indices to plot (default: first 10)")
    p.add_argument("--zoom", action="store_true", help="y axis spans the data instead of the gate's 0..1")
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--limit", type=int, metavar="N", help="use N images (class-balanced)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--input-size", type=int, help="override the checkpoint's input size")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "prune",
        help="structured channel pruning that keeps SE blocks consistent; params/MACs/latency/accuracy",
    )
    p.add_argument("--checkpoint", "-c", required=True)
    p.add_argument("--out", "-o", required=True, metavar="PRUNED.pth")
    p.add_argument(
        "--ratio", type=float, default=0.25, help="share of each conv's channels removed (default 0.25)"
    )
    p.add_argument(
        "--criterion",
        choices=["l1", "excitation"],
        default="l1",
        help="l1: filter L1 norm; excitation: mean SE gate over --data (inner convs: L1)",
    )
    p.add_argument(
        "--scope", choices=["all", "se"], default="all", help="prune all convs or only SE-gated ones"
    )
    p.add_argument(
        "--allocation",
        choices=["uniform", "global"],
        default="uniform",
        help="uniform: RATIO of every conv; global: RATIO of all channels, the weakest across layers "
        "(scores normalised per conv), so widths become non-uniform",
    )
    p.add_argument("--data", help="KIND:PATH: accuracy before/after, excitation criterion, fine-tuning")
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="accuracy split")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="evaluation images (default 1000)")
    p.add_argument(
        "--calib-limit", type=int, default=512, metavar="N", help="images for the excitation means"
    )
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N")
    p.add_argument("--finetune-limit", type=int, metavar="N", help="training images for the fine-tune")
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--finetune-distill", action="store_true", help="fine-tune against the unpruned model")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--latency-runs", type=int, default=7, help="timed CPU forwards, median reported")
    p.add_argument("--json-out", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("distill", help="knowledge distillation into a slimmer student (KL x T^2 + CE)")
    p.add_argument("--teacher", metavar="CKPT", help="required unless --resume")
    p.add_argument("--data", help="KIND:PATH or an ImageFolder DIR (required unless --resume)")
    p.add_argument("--out", "-o", metavar="STUDENT.pth", help="default: TEACHER.student.pth (--resume: CKPT)")
    p.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue a distillation exactly, with its saved settings; only --epochs, --out, --teacher, "
        "--data, --device, --workers and --cache-dir may change",
    )
    p.add_argument(
        "--student-width", type=float, help="student width multiplier (default: half the teacher's)"
    )
    p.add_argument("--student-arch", choices=["vgg16_se", "vgg11_se", "vgg16"], help="default: the teacher's")
    p.add_argument("--student-init", metavar="CKPT", help="start from this checkpoint (e.g. a pruned model)")
    p.add_argument("--temperature", "-T", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the soft (teacher) term (default 0.5)")
    p.add_argument("--epochs", type=int, help="default 5 (--resume: the saved number)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--augment", choices=["none", "light", "strong"], default="light")
    p.add_argument("--input-size", type=int, help="default: the teacher's")
    p.add_argument("--limit", type=int, metavar="N", help="training images (class-balanced)")
    p.add_argument("--val-limit", type=int, metavar="N", help="validation images (default: --limit)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_distill)

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


def _distill_explicit(args: argparse.Namespace) -> set[str]:
    """The DistillConfig fields a resumed distillation takes from this command line."""
    given = {k for k in ("teacher", "data", "out", "epochs", "cache_dir") if getattr(args, k) is not None}
    return given | {"device", "workers"}


def cmd_quantize(args: argparse.Namespace) -> int:
    from .deploy.quantize import QuantizeConfig, default_json_path, quantize_onnx

    if args.mode == "static" and not args.calib_data:
        _err("--calib-data is required for static quantization (or --mode dynamic)")
        return 2
    cfg = QuantizeConfig(
        onnx=args.onnx,
        out=args.out,
        calib_data=args.calib_data,
        calib_images=args.calib_images,
        calib_split=args.calib_split,
        calib_method=args.calib_method,
        mode=args.mode,
        per_channel=args.per_channel,
        op_types=tuple(t.strip() for t in args.op_types.split(",") if t.strip()),
        eval_data=args.eval_data,
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        latency_runs=args.latency_runs,
        threads=args.threads,
        json_out=args.json_out,
        cache_dir=args.cache_dir,
        seed=args.seed,
    )
    report = quantize_onnx(cfg, log=lambda m: print(m, file=sys.stderr))
    print(report.format())
    print(f"report written to {args.json_out or default_json_path(args.out)}")
    return 0


def _add_quantize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="INT8 post-training quantization of an exported ONNX model (onnxruntime); size, latency, "
        "agreement, SE gate drift",
    )
    p.add_argument("--onnx", required=True, metavar="IN.onnx", help="a float model from sevgg export")
    p.add_argument("--out", "-o", required=True, metavar="OUT.onnx")
    p.add_argument(
        "--calib-data",
        metavar="DATA",
        help="calibration images: a folder of images, an ImageFolder DIR or KIND:PATH (static mode)",
    )
    p.add_argument("--calib-images", type=int, default=256, metavar="N", help="default 256 (class-balanced)")
    p.add_argument("--calib-split", choices=["train", "val", "test"], default="train")
    p.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default="minmax")
    p.add_argument(
        "--mode",
        choices=["static", "dynamic"],
        default="static",
        help="static: int8 activations, calibrated (default); dynamic: int8 weights only, no calibration",
    )
    p.add_argument("--per-channel", action="store_true", help="one weight scale per output channel")
    p.add_argument(
        "--op-types",
        default="Conv,Gemm",
        help="ONNX ops to quantize (default Conv,Gemm: the SE gate MLPs stay float)",
    )
    p.add_argument(
        "--eval-data", metavar="DATA", help="images to compare fp32 and int8 on (default: --calib-data)"
    )
    p.add_argument("--split", choices=["test", "val", "train"], default="test", help="evaluation split")
    p.add_argument("--limit", type=int, default=1000, metavar="N", help="evaluation images (default 1000)")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch")
    p.add_argument("--latency-runs", type=int, default=20, help="interleaved fp32/int8 pairs at batch 1")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default: its own)")
    p.add_argument("--json-out", metavar="FILE", help="default: OUT with .json")
    p.add_argument("--seed", type=int, default=0, help="which images the limits pick")
    p.add_argument("--cache-dir")
    p.set_defaults(func=cmd_quantize)


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
    _add_analysis_parsers(sub)
    _add_quantize_parser(sub)
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
