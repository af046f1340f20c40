"""`sevgg diff A B IMAGES|DIR|--data D`: two models over the same images, attention compared block by block."""

from __future__ import annotations

import argparse
import json
import sys

from .common import err, expand_inputs


def cmd_diff(args: argparse.Namespace) -> int:
    from ..model_diff import diff_models, format_diff

    if args.limit is not None and args.limit < 1:
        err(f"--limit must be >= 1, got {args.limit}")
        return 2
    if bool(args.images) == bool(args.data):
        err(
            "give images (files or folders) or --data D, not both"
            if args.images
            else "no images: give IMAGES or --data D"
        )
        return 2
    class_names = None
    if args.data:
        items, class_names = _dataset(args)
    else:
        items = list(expand_inputs(args.images))
        if not items:
            err("no images found in the given inputs")
            return 2
    failed: list[str] = []

    def progress(n: int) -> None:
        if not args.json and sys.stderr.isatty():
            print(f"\r{n} images", end="", file=sys.stderr, flush=True)

    def on_error(message: str) -> None:
        failed.append(message)
        err(message)

    d = diff_models(
        args.a,
        args.b,
        items,
        limit=args.limit,
        class_names=class_names,
        device=args.device,
        progress=progress,
        on_error=on_error,
    )
    if not args.json and sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        print(format_diff(d))
    if args.png:
        from ..diff_plot import save_diff_png

        save_diff_png(d, args.png)
        if not args.json:
            print(f"figure: {args.png}")
    if failed:
        err(f"{len(failed)} input(s) were not images and were skipped")
        return 1
    return 0


def _dataset(args: argparse.Namespace):
    """The labelled split of ``--data`` as (PIL image, label) pairs: each model preprocesses for itself."""
    from ..training.data import load_datasets

    ds = load_datasets(
        args.data,
        augment="none",
        limit=args.limit,
        val_limit=args.limit,
        cache_dir=args.cache_dir,
        splits=(args.split,),
    )
    subset = ds.split(args.split)
    if len(subset) == 0:
        raise ValueError(f"{args.data}: no images in the {args.split} split")
    subset.transform = None  # raw images (the trainer's transform is for one model only)
    return subset, list(ds.class_names)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff",
        help="compare two models' predictions and attention gates on the same images",
        description="Run models A and B over the same images (each with its own preprocessing) and report "
        "top-1/top-5 agreement and, per paired attention block, cosine similarity, Spearman correlation, "
        "mean |B - A| and top-10 channel overlap of the gates. A and B: checkpoints, pretrained:<name>, "
        "vgg16:<attention> or exported .onnx files (sevgg export --with-excitations).",
    )
    p.add_argument("a", metavar="A", help="model A")
    p.add_argument("b", metavar="B", help="model B (differences are reported as B - A)")
    p.add_argument("images", nargs="*", metavar="IMAGES", help="image files or folders")
    p.add_argument("--data", help="a labelled data set instead of images: KIND:PATH or an ImageFolder DIR")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split of --data (test)")
    p.add_argument("--limit", type=int, default=None, help="at most N images (class-balanced with --data)")
    p.add_argument("--cache-dir", default=None, help="where --data archives are unpacked")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (torch models)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument(
        "--png", metavar="OUT.png", help="save a figure: per-block similarity, most changed channels"
    )
    p.set_defaults(func=cmd_diff)
