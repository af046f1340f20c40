"""Helpers every `sevgg` command shares: one-line errors, input expansion, loading a model spec."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path


def err(msg: str) -> None:
    print(f"sevgg: {msg}", file=sys.stderr)


def expand_inputs(items: Sequence[str]) -> Iterator[str]:
    """Files as given; folders expanded to their images (sorted, not recursive)."""
    from ..images import is_image_path

    for item in items:
        p = Path(item)
        if p.is_dir():
            yield from (str(c) for c in sorted(p.iterdir()) if c.is_file() and is_image_path(c))
        else:
            yield item


def refuse_foreign_model(spec: str | None, command: str) -> bool:
    """prune removes VGG16-SE channels structurally (a conv's filters, its SE block's channels and the
    next conv's inputs together, widths recorded in the checkpoint's metadata): a timm / torchvision /
    attention spec or a model folder gets one line saying so, not a misleading "no such file". True
    when refused."""
    from ..model_specs import is_model_folder

    if spec and (spec.startswith(("timm:", "pretrained:", "vgg16:")) or is_model_folder(spec)):
        err(
            f"{command}: {spec}: prunes VGG16-SE structurally (each conv's filters with its SE block and the "
            "next conv's inputs) and only rebuilds VGG16-SE widths; give a `sevgg train` checkpoint "
            "(other architectures: export and `sevgg quantize`, or `sevgg distill --teacher` it)"
        )
        return True
    return False


def load(args: argparse.Namespace):
    from ..zoo import load_model

    loaded = load_model(args.checkpoint, model_code=getattr(args, "model_code", None))
    if loaded.warning:
        err(f"warning: {loaded.warning}")
    return loaded


def predictor_for(args: argparse.Namespace, loaded):
    from ..inference import Predictor

    return Predictor(
        loaded.model,
        device=args.device,
        class_names=loaded.class_names,
        half=args.half,
        preprocess=loaded.preprocess(),
    )


def run_batch(args: argparse.Namespace, handle) -> int:
    from ..images import ImageError
    from ..inference import InferenceError

    if getattr(args, "backend", "torch") != "torch":  # an exported copy run by onnxruntime / OpenVINO
        from ..backends.export_cache import open_backend

        opened = open_backend(args.checkpoint, args.backend, device=args.device, half=args.half, log=err)
        if opened.warning:
            err(f"warning: {opened.warning}")
        predictor = opened.predictor
    else:
        predictor = predictor_for(args, load(args))
    failed: list[str] = []
    total = 0
    for path in expand_inputs(args.images):
        total += 1
        try:
            handle(path, predictor.predict(path, topk=args.topk))
        except (ImageError, InferenceError) as exc:
            failed.append(path)
            err(str(exc) if str(exc).startswith(Path(path).name) else f"{path}: {exc}")
    return batch_exit_code(total, failed)


def batch_exit_code(total: int, failed: list[str]) -> int:
    """0 when every input went through; 1 (with a summary line) when some failed; 2 when there were none."""
    if total == 0:
        err("no images found in the given inputs")
        return 2
    if failed:
        err(f"{len(failed)} of {total} inputs failed: {', '.join(failed)}")
        return 1
    return 0


CHECKPOINT_HELP = (
    ".pth / .safetensors checkpoint, a Hugging Face model folder, pretrained:NAME, vgg16:ATTENTION or "
    "timm:NAME[.TAG][:random], timm:hf-hub:ORG/NAME[@REVISION] (default: ImageNet VGG16 transfer if cached, "
    "else random)"
)


def add_model_code_argument(p: argparse.ArgumentParser) -> None:
    """``--model-code``: the user's own architecture (the one place user code runs, by their choice)."""
    p.add_argument(
        "--model-code",
        metavar="FILE.py:FUNCTION",
        help="build the model by calling FUNCTION in FILE.py (or package.module:FUNCTION); -c then "
        "names its weights (a state dict)",
    )


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The options of every command that runs a model over images."""
    p.add_argument("--checkpoint", "-c", help=CHECKPOINT_HELP)
    add_model_code_argument(p)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--half", action="store_true", help="half precision (GPU only)")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "openvino"),
        default="torch",
        help="run the model in torch (default) or an ONNX export of it (made once, cached) "
        "in onnxruntime / OpenVINO; falls back to torch with one line when that fails",
    )
    p.add_argument("--topk", type=int, default=5)
