"""Commands that look at a model or run it over images: info, predict, excite, fetch-weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import CHECKPOINT_HELP, add_model_arguments, add_model_code_argument, err, load, run_batch


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import attention_counts, format_cost_table, model_cost
    from ..models.vgg import VGG16_SE
    from ..taps import attention_blocks, example_input

    reduction: int | None
    if args.checkpoint or args.model_code:
        loaded = load(args)
        model, provenance = loaded.model, loaded.provenance
        num_classes = (
            loaded.info.num_classes
            if loaded.info
            else len(loaded.class_names or []) or getattr(model, "num_classes", None)
        )
        reduction = loaded.info.reduction if loaded.info else getattr(model, "reduction", None)
        size = args.input_size or loaded.preprocess().crop_size
    else:
        with torch.device("meta"):  # shapes only: instant, no 0.5 GB allocation
            model = VGG16_SE(num_classes=args.num_classes, reduction=args.reduction)
        provenance, num_classes, reduction = (
            "architecture only (no weights loaded)",
            args.num_classes,
            args.reduction,
        )
        size = args.input_size or 224
    model.eval()
    meta = any(p.is_meta for p in model.parameters())
    # Unknown module types are probed for gate behaviour with two synthetic images (one forward).
    example = example_input(size, device="meta" if meta else next(model.parameters()).device)
    blocks, probe = attention_blocks(model, example)
    cost = model_cost(model, (size, size), blocks)
    vgg = isinstance(model, VGG16_SE)
    if args.json:
        print(
            json.dumps(
                {
                    "architecture": type(model).__name__,
                    "num_classes": num_classes,
                    "reduction": reduction,
                    "provenance": provenance,
                    "input_size": size,
                    "total_params": cost.total_params,
                    "se_params": cost.attention_params,
                    "se_share": cost.attention_share,
                    "total_macs": cost.total_macs,
                    "se_macs": cost.attention_macs,
                    "attention_kinds": attention_counts(cost),
                    "blocks": [vars(b) for b in cost.blocks],
                    "probe": probe.summary() if probe else None,
                },
                indent=2,
            )
        )
        return 0
    head = f"{type(model).__name__}: {num_classes or '?'} classes"
    print(head + (f", reduction r={reduction}" if reduction else ""))
    print(f"weights: {provenance}")
    base = "torchvision VGG16 + " if vgg else ""
    print(f"parameters: {cost.total_params:,} ({base}{cost.attention_params:,} in attention blocks)")
    kinds = ", ".join(f"{k} x{n}" for k, n in attention_counts(cost).items())
    print(f"attention blocks: {len(cost.blocks)}" + (f" ({kinds})" if kinds else ""))
    if probe is not None and probe.candidates:
        print(probe.summary())
    if not cost.blocks:
        print("no attention block found: nothing to record")
        return 0
    print()
    print(format_cost_table(cost))
    notes = [f"  {b.name}: {b.kind}: {b.note}" for b in cost.blocks if b.note]
    if notes:
        print("\n".join(["notes:", *dict.fromkeys(notes)]))
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

    code = run_batch(args, handle)
    if args.json:
        print(json.dumps(rows, indent=2))
    return code


def cmd_excite(args: argparse.Namespace) -> int:
    from ..export import write_excitations

    out = Path(args.out)
    if out.suffix not in (".csv", ".npz"):
        err(f"{out}: --out must end in .csv or .npz")
        return 2
    names: list[str] = []
    results = []

    def handle(path: str, result) -> None:
        names.append(path)
        results.append(result)

    code = run_batch(args, handle)
    if results:
        write_excitations(out, names, results)
        print(f"wrote {len(results)} image(s) x {len(results[0].excitations)} blocks to {out}")
    return code


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from torchvision.models import VGG16_Weights

    from ..models.vgg import cached_weights_path, load_torchvision_weights

    try:
        load_torchvision_weights(VGG16_Weights.IMAGENET1K_V1, progress=True)
    except RuntimeError as exc:
        err(str(exc))
        return 1
    print(f"ImageNet VGG16 weights cached at {cached_weights_path(VGG16_Weights.IMAGENET1K_V1)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="architecture, the SE parameter table and FLOPs")
    p.add_argument("--checkpoint", "-c", help=CHECKPOINT_HELP)
    add_model_code_argument(p)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--reduction", type=int, default=16)
    p.add_argument("--input-size", type=int, default=None, help="default: the model's own (224)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("predict", help="top-k classes for images or folders")
    p.add_argument("images", nargs="+")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("excite", help="record every SE block's excitation for images to CSV or NPZ")
    p.add_argument("images", nargs="+")
    add_model_arguments(p)
    p.add_argument("--out", "-o", required=True, help="F.csv or F.npz")
    p.set_defaults(func=cmd_excite)

    p = sub.add_parser(
        "fetch-weights", help="download and cache torchvision's ImageNet VGG16 (needs internet once)"
    )
    p.set_defaults(func=cmd_fetch_weights)
