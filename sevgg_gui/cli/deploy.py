"""Commands that deploy: export (ONNX), prune, distill, quantize (the article's section 9)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from .common import add_model_code_argument, err, refuse_foreign_model


def cmd_export(args: argparse.Namespace) -> int:
    """``--checkpoint`` takes any model spec ``load_model`` does: a checkpoint file, a torchvision SE
    state dict, ``pretrained:<name>``, ``vgg16:<attention>``, ``timm:<name>``, a model folder; or with
    ``--model-code`` the weights of the user's architecture."""
    from ..deploy.onnx_export import export_spec

    if not args.checkpoint and not args.model_code:
        err("--checkpoint is required (or --model-code FILE.py:FUNCTION)")
        return 2
    report = export_spec(
        args.checkpoint,
        args.onnx,
        model_code=args.model_code,
        with_excitations=args.with_excitations,
        opset=args.opset,
        input_size=args.input_size,
        check=not args.no_check,
    )
    for warning in report.warnings:
        err(f"warning: {warning}")
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


def cmd_prune(args: argparse.Namespace) -> int:
    from ..deploy.prune import PruneConfig, prune_checkpoint, write_report

    if refuse_foreign_model(args.checkpoint, "prune"):
        return 2
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
    from ..deploy.distill import DistillConfig, default_out, distill
    from ..training.class_match import ClassMismatch

    if not args.resume and not (args.teacher and args.data):
        err("--teacher and --data are required (or --resume CKPT)")
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
    try:
        result = distill(cfg, explicit=_distill_explicit(args))
    except ClassMismatch as exc:
        err(str(exc))
        return 2
    if result.interrupted:
        return 130
    last = result.history[-1] if result.history else {}
    acc = f", val top-1 {last['val_acc']:.2%}" if last.get("val_acc") is not None else ""
    teacher = f" (teacher {result.teacher_val_acc:.2%})" if result.teacher_val_acc is not None else ""
    print(f"wrote {result.checkpoint}: {result.student_params:,} parameters{acc}{teacher}")
    return 0


def _distill_explicit(args: argparse.Namespace) -> set[str]:
    """The DistillConfig fields a resumed distillation takes from this command line."""
    given = {k for k in ("teacher", "data", "out", "epochs", "cache_dir") if getattr(args, k) is not None}
    return given | {"device", "workers"}


def cmd_quantize(args: argparse.Namespace) -> int:
    """Static INT8 on a flat folder of images goes through the checked path the app uses
    (:func:`~sevgg_gui.deploy.int8_check.calibrate_and_check`: a held-out share never calibrated on,
    refusal below ``--min-agreement``); labelled data sets (their own train/test splits), ``--eval-data``
    and dynamic mode through :func:`~sevgg_gui.deploy.quantize.quantize_onnx`, with the same refusal."""
    from ..deploy.quantize import default_json_path

    if args.mode == "static" and not args.calib_data:
        err("--calib-data is required for static quantization (or --mode dynamic)")
        return 2
    if not 0.0 <= args.min_agreement <= 100.0:
        err(f"--min-agreement is a percentage (0-100), got {args.min_agreement}")
        return 2
    if _is_flat_folder(args.calib_data) and args.mode == "static" and not args.eval_data:
        return _quantize_checked(args)
    report = _quantize_legacy(args)
    print(report.format())
    json_path = args.json_out or default_json_path(args.out)
    if report.agreement is not None and report.agreement < args.min_agreement / 100:
        from pathlib import Path

        Path(args.out).unlink(missing_ok=True)
        err(
            f"INT8 refused: top-1 agreement {report.agreement:.1%} on {report.eval_images} images < "
            f"{args.min_agreement:g}%; no INT8 file installed (report: {json_path})"
        )
        return 1
    print(f"report written to {json_path}")
    return 0


def _is_flat_folder(spec: str | None) -> bool:
    from pathlib import Path

    p = Path(spec).expanduser() if spec else None
    return bool(p and p.is_dir() and not any(c.is_dir() for c in p.iterdir()))


def _quantize_checked(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..deploy.int8_check import Int8Config, calibrate_and_check
    from ..deploy.quantize import QuantizeError, read_onnx_info
    from ..images import is_image_path

    read_onnx_info(args.onnx)  # the model's own errors first (missing, not ONNX, already quantized)
    folder = Path(args.calib_data).expanduser()
    images = sorted(c for c in folder.iterdir() if c.is_file() and is_image_path(c))
    if not images:
        raise QuantizeError(f"{folder}: no calibration images (no image files in the folder)")
    if args.calib_images is not None and len(images) > args.calib_images:  # seeded, like the data sets
        keep = np.random.default_rng(args.seed).permutation(len(images))[: args.calib_images]
        images = [images[i] for i in sorted(keep)]
    cfg = Int8Config(
        fmt=args.format,
        per_channel=not args.per_tensor,
        calib_method=args.calib_method,
        keep_float=args.keep_float,
        op_types=tuple(t.strip() for t in args.op_types.split(",") if t.strip()),
    )
    report = calibrate_and_check(
        args.onnx,
        images,
        args.out,
        held_out_fraction=args.held_out,
        min_agreement=args.min_agreement / 100,
        max_gate_diff=args.max_gate_diff if args.max_gate_diff < 1 else None,
        config=cfg,
        seed=args.seed,
        latency_runs=args.latency_runs,
        threads=args.threads,
        progress=lambda _f, text: print(text, file=sys.stderr),
    )
    print(report.format())
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.installed else 1


def _quantize_legacy(args: argparse.Namespace) -> Any:
    from ..deploy.quantize import QuantizeConfig, quantize_onnx

    cfg = QuantizeConfig(
        onnx=args.onnx,
        out=args.out,
        calib_data=args.calib_data,
        calib_images=args.calib_images or 256,
        calib_split=args.calib_split,
        calib_method=args.calib_method,
        mode=args.mode,
        per_channel=not args.per_tensor,
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
    return quantize_onnx(cfg, log=lambda m: print(m, file=sys.stderr))


def register(sub: argparse._SubParsersAction) -> None:
    from ..training.cli_args import add_export_arguments

    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX (dynamic batch/H/W), checked with onnxruntime"
    )
    add_export_arguments(p)
    add_model_code_argument(p)
    p.set_defaults(func=cmd_export)

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
    p.add_argument(
        "--teacher",
        metavar="SPEC",
        help="required unless --resume; a `sevgg train` checkpoint or any model spec (timm:NAME, "
        "pretrained:NAME, a model folder...): only its logits are used; a model not trained here gets "
        "the student's batches resized to its input size and renormalised with its mean/std, its "
        "classes paired with the data's as `sevgg eval` pairs them",
    )
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
    p.add_argument(
        "--calib-images",
        type=int,
        metavar="N",
        help="images to use (a folder: all, seeded pick of N, held-out share included; a data set: 256)",
    )
    p.add_argument("--calib-split", choices=["train", "val", "test"], default="train")
    p.add_argument("--calib-method", choices=["minmax", "percentile", "entropy"], default="minmax")
    p.add_argument(
        "--mode",
        choices=["static", "dynamic"],
        default="static",
        help="static: int8 activations, calibrated (default); dynamic: int8 weights only, no calibration",
    )
    p.add_argument(
        "--per-channel", action="store_true", help="one weight scale per output channel (the default)"
    )
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor")
    p.add_argument(
        "--op-types",
        default="Conv,Gemm",
        help="ONNX ops to quantize (default Conv,Gemm: the SE gate MLPs stay float)",
    )
    p.add_argument(
        "--held-out",
        type=float,
        default=0.25,
        metavar="F",
        help="a folder of images: share held out of calibration to check the INT8 model on (default 0.25)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=99.0,
        metavar="PCT",
        help="refuse the INT8 file (delete it, exit 1) when top-1 agreement with fp32 is below PCT%% "
        "(default 99; 0 keeps any)",
    )
    p.add_argument(
        "--max-gate-diff",
        type=float,
        default=0.01,
        metavar="D",
        help="a folder of images: also refuse when an SE gate moves more than D (default 0.01, the issue's "
        "bar; 1 switches it off)",
    )
    p.add_argument(
        "--keep-float",
        choices=["none", "logits", "attention+logits"],
        default="attention+logits",
        help="a folder of images: sub-graphs left in float (default: attention gates and the logit layer)",
    )
    p.add_argument("--format", choices=["qdq", "qoperator"], default="qdq", help="onnxruntime's int8 format")
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
