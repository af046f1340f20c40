"""INT8 settings for a network with SE gates, on held-out real photos (issue 14 items 2-3).

MobileNetV3-Small with Google's trained weights (../shared/weights), exported with its 9 gates as outputs,
quantized by each configuration through the same functions ``sevgg quantize`` and the app's "Optimize
for this CPU…" use (:func:`~sevgg_gui.deploy.int8_check.quantize_to` and
:func:`~sevgg_gui.deploy.int8_check.compare`). Reported per configuration: top-1 agreement with fp32,
largest and mean |gate difference|, and the paired INT8/fp32 latency ratio (batch 1, onnxruntime CPU).

Photos: ../shared/data/photos plus the real photos that installed packages ship (scikit-learn's
china.jpg and flower.jpg, matplotlib's grace_hopper.jpg) when present. Split by PHOTO, never by view:
two folds (photos alternate by sorted name); each fold calibrates on the views of its calibration
photos and is evaluated on the views of the other photos only; the table adds both folds, so every
photo is held out exactly once. Each photo gives ``--views`` seeded crops/flips (view 0 = the whole
photo, centre-cropped as the app does). ``--calib-views`` also reruns the default configuration
with other numbers of calibration views per photo (more calibration images).

``--quick`` (CI smoke): a random-weight MobileNetV3-Small at 64 px, two configurations, no targets.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import Report, parser, start  # noqa: E402
from bench_runtimes import PHOTOS, WEIGHTS, ort_session, photo_views  # noqa: E402


def extra_photos() -> list[Path]:
    """Real photos shipped inside installed packages (no download)."""
    out = []
    for pkg, rel in (
        ("sklearn", "datasets/images/china.jpg"),
        ("sklearn", "datasets/images/flower.jpg"),
        ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ):
        spec = importlib.util.find_spec(pkg)
        if spec and spec.origin:
            p = Path(spec.origin).parent / rel
            if p.is_file():
                out.append(p)
    return out


def configs(quick: bool, nncf: bool) -> list[tuple[str, Any]]:
    from sevgg_gui.deploy.int8_check import Int8Config

    old = Int8Config(per_channel=False, calib_method="minmax", keep_float="logits", op_types=("Conv", "Gemm"))
    best = Int8Config()
    rows = [("previous default (per-tensor, SE quantized)", old), ("new default", best)]
    if quick:
        return rows
    rows += [
        ("percentile 99.9", replace(best, calib_method="percentile", percentile=99.9)),
        (
            "percentile 99.999 (onnxruntime's default cut)",
            replace(best, calib_method="percentile", percentile=99.999),
        ),
        ("entropy calibration", replace(best, calib_method="entropy")),
        ("MinMax, moving average", replace(best, moving_average=True)),
        ("SE quantized (logits float)", replace(best, keep_float="logits")),
        ("everything quantized", replace(best, keep_float="none")),
        ("per-tensor weights", replace(best, per_channel=False)),
        ("QOperator format", replace(best, fmt="qoperator")),
        ("8-bit weights (reduce_range off)", replace(best, reduce_range=False)),
        ("symmetric int8 activations", replace(best, symmetric_activations=True)),
    ]
    if nncf:
        rows += [
            ("NNCF PTQ, SE + logits float", Int8Config(engine="nncf")),
            ("NNCF PTQ, everything quantized", Int8Config(engine="nncf", keep_float="none")),
        ]
    return rows


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=16, help="views per photo (whole photo + seeded crops)")
    p.add_argument(
        "--calib-views", default="4,32", help="also run the default with these calibration views per photo"
    )
    p.add_argument("--latency-runs", type=int, default=40, help="interleaved fp32/int8 pairs per config")
    p.add_argument("--ort-threads", type=int, default=0)
    p.add_argument("--no-extra-photos", action="store_true", help="only ../shared/data/photos")
    args = p.parse_args()
    start(args)
    import onnxruntime as ort
    import torch
    import torchvision

    from sevgg_gui.deploy.int8_check import compare, quantize_to
    from sevgg_gui.deploy.onnx_export import export_onnx
    from sevgg_gui.deploy.quantize import paired_latency_ms, read_onnx_info

    report = Report("INT8 settings on MobileNetV3-Small, held-out real photos", args)
    quick = args.quick
    size = 64 if quick else 224
    views = 2 if quick else args.views
    have_nncf = importlib.util.find_spec("nncf") is not None
    report.data["versions"] = {"onnxruntime": ort.__version__, "nncf": have_nncf}
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small()
    trained = WEIGHTS.is_file() and not quick
    if trained:
        model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    print(
        f"# model: MobileNetV3-Small, {'trained ' + WEIGHTS.name if trained else 'random weights'}, {size}px"
    )
    print(
        f"# onnxruntime {ort.__version__}; nncf {'installed' if have_nncf else 'not installed (rows skipped)'}"
    )
    photos = (
        sorted(q for q in PHOTOS.iterdir() if q.suffix.lower() in (".png", ".jpg")) if PHOTOS.is_dir() else []
    )
    if not args.no_extra_photos and not quick:
        photos += extra_photos()
    if quick:
        photos = photos[:4]
    if len(photos) < 2:
        print("# fewer than two photos: nothing to hold out")
        return 0
    folds = [(photos[0::2], photos[1::2]), (photos[1::2], photos[0::2])]
    tmp = tempfile.TemporaryDirectory(prefix="sevgg-bench-int8.")
    src = Path(tmp.name) / "fp32.onnx"
    export_onnx(model.eval(), src, input_size=size, with_excitations=True, check=False)
    info = read_onnx_info(src)
    fp32 = ort_session(src, args.ort_threads)
    held = [np.stack(photo_views(h, views, info.preprocess, seed=2)) for _, h in folds]
    for (c, h), hx in zip(folds, held, strict=True):
        line = f"calibration {', '.join(q.name for q in c)}; held out {len(hx)} views of {', '.join(q.name for q in h)}"
        print(f"# fold: {line}")
        report.data.setdefault("folds", []).append(line)

    def run(label: str, cfg: Any, calib_views: int) -> list[Any]:
        agree = total = 0
        worst, means, ratios = 0.0, [], []
        for k, ((c, _), hx) in enumerate(zip(folds, held, strict=True)):
            cx = np.stack(photo_views(c, calib_views, info.preprocess, seed=1))
            dst = Path(tmp.name) / f"int8-{k}.onnx"
            quantize_to(src, dst, cx, info.input_name, cfg)
            int8 = ort_session(dst, args.ort_threads)
            a, _, gates, mean = compare(fp32, int8, hx, info)
            agree, total = agree + a, total + len(hx)
            worst = max([worst, *gates.values()])
            means.append(mean)
            ratios.append(paired_latency_ms(fp32, int8, {info.input_name: hx[:1]}, runs=args.latency_runs)[2])
        row = [
            label,
            cfg.label(),
            calib_views * len(folds[0][0]),
            f"{agree / total:.2%} ({agree}/{total})",
            f"{worst:.4f}",
            f"{float(np.mean(means)):.5f}",
            f"{statistics.median(ratios):.3f}",
        ]
        print("# " + " | ".join(str(v) for v in row), flush=True)
        return row

    rows = [run(label, cfg, views) for label, cfg in configs(quick, have_nncf)]
    if not quick:
        best = configs(False, False)[1][1]
        for n in (int(v) for v in args.calib_views.split(",") if v.strip()):
            rows.append(run(f"new default, {n} calibration views per photo", best, n))
    report.print_table(
        [
            "configuration",
            "settings",
            "calibration images (per fold)",
            "top-1 agreement (held out)",
            "max |gate diff|",
            "mean |gate diff|",
            "int8/fp32 latency",
        ],
        rows,
        "int8",
    )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
