"""`sevgg explain`: a class activation map and every attention block's channel evidence per image."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_arguments, batch_exit_code, err, expand_inputs, load, predictor_for

METHOD_NAMES = ("gradcam", "gradcam++", "layercam", "eigencam", "scorecam")  # evidence.METHODS, unimported


def cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np

    from ..evidence import (
        EvidenceError,
        cam_in_image,
        class_index_of,
        explain_image,
        overlay_image,
        resolve_module,
    )
    from ..images import ImageError, load_image
    from ..inference import InferenceError

    out = Path(args.out)
    loaded = load(args)
    predictor = predictor_for(args, loaded)
    try:
        wanted = None if args.class_ is None else class_index_of(args.class_, predictor.class_names)
        if args.layer not in (None, "auto"):
            resolve_module(predictor.model, args.layer)
    except EvidenceError as exc:
        err(str(exc))
        return 2
    out.mkdir(parents=True, exist_ok=True)
    blocks = list(predictor.recorder.blocks)
    failed: list[str] = []
    used: set[str] = set()
    total = 0
    for path in expand_inputs(args.images):
        total += 1
        name = Path(path).stem
        if name in used:  # cat.jpg and cat.png in one batch: keep both
            name = Path(path).name.replace(".", "_")
        try:
            rgb = load_image(path)
            result = predictor.predict(rgb, topk=args.topk)
            c = result.top1.index if wanted is None else wanted
            ev = explain_image(predictor, rgb, c, method=args.method, layer=args.layer, blocks=blocks)
        except (ImageError, InferenceError, EvidenceError) as exc:
            failed.append(path)
            err(str(exc) if str(exc).startswith(Path(path).name) else f"{path}: {exc}")
            continue
        used.add(name)
        label = predictor.class_names[c] if c < len(predictor.class_names) else str(c)
        cam = cam_in_image(ev.cam, rgb.shape[:2], predictor.preprocess)
        arrays = {
            "cam": cam,
            "class_index": np.int64(c),
            "class_name": np.str_(label),
            "score": np.float32(ev.score),
            "method": np.str_(ev.method),
            "layer": np.str_(ev.layer),
        }
        for b in blocks:
            if b in ev.evidence:
                arrays[f"{b}/evidence"] = ev.evidence[b]
            if b in ev.gates:
                arrays[f"{b}/gate"] = ev.gates[b]
        np.savez_compressed(out / f"{name}.npz", **arrays)
        caption = f"{label} ({c}) - {ev.method} @ {ev.layer}"
        from PIL import Image

        Image.fromarray(overlay_image(rgb, cam, caption=caption)).save(out / f"{name}.png")
        corr = [ev.correlation(b)[0] for b in blocks if b in ev.gates]
        mean_r = float(np.nanmean(corr)) if corr and not np.all(np.isnan(corr)) else float("nan")
        print(
            f"{path}: {label} ({c}) score {ev.score:.3f} · mean gate-evidence r {mean_r:+.2f} -> {out / name}.png/.npz"
        )
    return batch_exit_code(total, failed)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="class activation map (PNG overlay) and every attention block's channel evidence (NPZ) per image",
    )
    p.add_argument("images", nargs="+")
    add_model_arguments(p)
    p.add_argument(
        "--class", dest="class_", metavar="NAME|INDEX", help="class to explain (default: the top-1)"
    )
    p.add_argument("--method", choices=METHOD_NAMES, default="gradcam", help="map method (default gradcam)")
    p.add_argument(
        "--layer",
        default="auto",
        help="module whose output the map is computed at (default: last conv block)",
    )
    p.add_argument("--out", "-o", required=True, help="output folder: NAME.png and NAME.npz per image")
    p.set_defaults(func=cmd_explain)
