"""Runtimes on this CPU: torch fast path vs ONNX Runtime vs OpenVINO, fp32 and static INT8 (issue 14).

Rows (batch 1, model forward only, every attention gate produced): torchvision VGG16 eager NCHW (the
reference), VGG16-SE through the app's torch fast path (``Predictor._forward``, gates recorded), and the
VGG16-SE exported with every gate as an output (``export_onnx(..., with_excitations=True)``) run by ONNX
Runtime and OpenVINO (through the OpenVINO backend's own session: fp32 pinned, H/W static), in fp32, in
OpenVINO's default precision (bf16 on a CPU with AVX512-BF16) and as the static INT8 QDQ model ``sevgg quantize`` writes (same code
path: :func:`~sevgg_gui.deploy.quantize.quantize_file`; OpenVINO runs that QDQ file directly). The same
for MobileNetV3-Small with Google's trained weights (../shared/weights; skipped when absent), whose
own torchvision eager row is given too. All rows run interleaved in ONE loop (see _common.py), so every
ratio is paired within rounds.

INT8 fidelity on real photos (../shared/data/photos): the photos are split by photo, never by view:
the first ``--calib-photos`` (sorted by name) calibrate, the others are held out; each photo gives
``--views`` seeded crops/flips (view 0 = the whole photo, centre-cropped as the app does). Reported:
top-1 agreement of each INT8 model with fp32 and the largest |gate difference| on the held-out views.
VGG16-SE has random weights here (no trained VGG16-SE is available offline), so its agreement says
little; MobileNetV3-Small's is the real figure.

No targets are enforced (issue 14's target is the live app; this script measures the candidates).
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import ROOT, Report, interleave, loadavg, parser, setup_torch, start  # noqa: E402

WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v3_small-tfslim_uint8-distilled.pth"
PHOTOS = ROOT.parent / "shared" / "data" / "photos"


def photo_views(paths: list[Path], views: int, pre: Any, seed: int = 0) -> list[np.ndarray]:
    """``views`` preprocessed (3, S, S) float32 inputs per photo: the whole photo, then seeded square
    crops (50-100% of the short side) with random horizontal flips."""
    from sevgg_gui.images import load_image

    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for p in paths:
        rgb = np.asarray(load_image(p))
        h, w = rgb.shape[:2]
        for v in range(views):
            if v == 0:
                img = rgb
            else:
                s = int(min(h, w) * rng.uniform(0.5, 1.0))
                y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
                img = rgb[y : y + s, x : x + s]
                if rng.random() < 0.5:
                    img = img[:, ::-1]
            out.append(pre(np.ascontiguousarray(img)).numpy().astype(np.float32))
    return out


def ov_runner(path: Path, threads: int, precision: str | None = "f32") -> Any:
    """x -> outputs through the OpenVINO backend's own session (static H/W, one reused request).
    ``precision`` "f32" pins the float parts to fp32 (on a CPU with AVX512-BF16, OpenVINO's default
    runs them in bf16); None keeps OpenVINO's default."""
    from sevgg_gui.backends.openvino_runtime import OpenVinoSession

    sess = OpenVinoSession(path, threads=threads, precision=precision)
    return lambda x: sess.run(None, {"input": x})


def ort_session(path: Path, threads: int) -> Any:
    """onnxruntime CPU session whose worker threads sleep between runs: spinning ones (onnxruntime's
    default) take the CPUs from whichever implementation runs next in the interleaved loop."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(0, int(threads))
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def fidelity(fp32: Any, int8: Any, xs: list[np.ndarray], n_gates: int) -> tuple[float, float, float]:
    """(top-1 agreement, max |gate diff|, max |logit diff|) of int8 vs fp32 runners over ``xs``."""
    agree, gate, logit = 0, 0.0, 0.0
    for x in xs:
        a, b = fp32(x[None]), int8(x[None])
        agree += int(a[0].argmax() == b[0].argmax())
        logit = max(logit, float(np.abs(a[0] - b[0]).max()))
        for k in range(1, 1 + n_gates):
            gate = max(gate, float(np.abs(a[k] - b[k]).max()))
    return agree / max(1, len(xs)), gate, logit


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--calib-photos", type=int, default=2, help="photos (by sorted name) used to calibrate")
    p.add_argument("--views", type=int, default=12, help="views per photo (whole photo + seeded crops)")
    p.add_argument("--ort-threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    p.add_argument("--ov-threads", type=int, default=0, help="OpenVINO inference threads (0: default)")
    p.add_argument("--no-mobilenet", action="store_true")
    p.add_argument("--per-channel", action="store_true", help="also INT8 with per-channel weights")
    args = p.parse_args()
    start(args)
    os.environ.pop("SEVGG_FAST", None)
    setup_torch(args.threads)
    import onnxruntime as ort
    import openvino as ov
    import torch
    import torchvision
    from _reference import fast_build, ours_vgg16_se, torchvision_vgg16

    from sevgg_gui.deploy.onnx_export import export_onnx
    from sevgg_gui.deploy.quantize import ImageSource, _CalibrationReader, calibration_batch, quantize_file
    from sevgg_gui.images import Preprocess
    from sevgg_gui.inference import Predictor

    report = Report("Runtimes: torch fast path vs ONNX Runtime vs OpenVINO, fp32 and INT8", args)
    quick = args.quick
    size = 64 if quick else args.size
    views = 2 if quick else args.views
    build = fast_build if quick else (lambda f: f())
    pre = Preprocess(crop_size=size, resize_size=round(size * 256 / 224))
    report.data["versions"] = {"onnxruntime": ort.__version__, "openvino": ov.__version__}
    print(
        f"# onnxruntime {ort.__version__}, openvino {ov.__version__}, torch threads {torch.get_num_threads()}"
    )

    photos = (
        sorted(q for q in PHOTOS.iterdir() if q.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if (PHOTOS.is_dir())
        else []
    )
    if quick:
        photos = photos[:3]
    calib_p, held_p = photos[: args.calib_photos], photos[args.calib_photos :]
    calib_x = photo_views(calib_p, views, pre, seed=1)
    held_x = photo_views(held_p, views, pre, seed=2)
    if not calib_x:  # no photos: calibrate on noise so the speed rows still run (fidelity not reported)
        calib_x = [np.random.default_rng(0).standard_normal((3, size, size)).astype(np.float32)]
    split = (
        f"calibration: {len(calib_x)} views of {len(calib_p)} photos ({', '.join(q.name for q in calib_p)}); "
        f"held out: {len(held_x)} views of {len(held_p)} photos ({', '.join(q.name for q in held_p)})"
    )
    print(f"# {split}")
    report.data["split"] = split

    torch.manual_seed(0)
    models: dict[str, tuple[torch.nn.Module, torch.nn.Module | None]] = {
        "VGG16-SE": (build(ours_vgg16_se).eval(), None),
    }
    if not args.no_mobilenet and WEIGHTS.is_file():
        mnv3 = torchvision.models.mobilenet_v3_small()
        mnv3.load_state_dict(torch.load(WEIGHTS, weights_only=True))
        models["MobileNetV3-Small"] = (mnv3.eval(), mnv3)
    else:
        print(f"# MobileNetV3-Small skipped: {WEIGHTS} not found" if not args.no_mobilenet else "")
    vgg16 = build(torchvision_vgg16).eval()

    x1 = torch.from_numpy((held_x or calib_x)[0][None].copy())
    xn = x1.numpy()
    impls: dict[str, Any] = {"torchvision VGG16 eager NCHW": lambda: vgg16(x1)}
    group: dict[str, str] = {"torchvision VGG16 eager NCHW": "VGG16"}
    fid_rows: list[list[Any]] = []
    check_rows: list[list[Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="sevgg-bench-rt.")
    keep: list[Any] = []
    torch.set_grad_enabled(False)  # not inference_mode: the fast path packs weights it version-tracks
    if True:
        for label, (model, eager) in models.items():
            names = [str(i) for i in range(1000)]
            pred = Predictor(copy.deepcopy(model), device="cpu", class_names=names, preprocess=pre)
            keep.append(pred)
            fp32_path = Path(tmp.name) / f"{label}.onnx"
            rep = export_onnx(model, fp32_path, input_size=size, with_excitations=True, check=False)
            n_gates = sum(1 for o in rep.excitations if o.kind == "gate")
            s32 = ort_session(fp32_path, args.ort_threads)
            ort32 = lambda x, s=s32: s.run(None, {"input": x})  # noqa: E731
            ov32 = ov_runner(fp32_path, args.ov_threads)
            ovdef = ov_runner(fp32_path, args.ov_threads, None)
            int8: dict[str, tuple[Any, Any]] = {}  # variant -> (onnxruntime runner, openvino runner)
            for variant in ("per-tensor", "per-channel") if args.per_channel else ("per-tensor",):
                int8_path = Path(tmp.name) / f"{label}.{variant}.int8.onnx"
                reader = _CalibrationReader(
                    ImageSource([(x, -1) for x in calib_x], None, split), "input", calibration_batch(size)
                )
                quantize_file(
                    fp32_path, int8_path, mode="static", reader=reader, per_channel=variant == "per-channel"
                )
                s8 = ort_session(int8_path, args.ort_threads)
                int8[variant] = (
                    lambda x, s=s8: s.run(None, {"input": x}),
                    ov_runner(int8_path, args.ov_threads),
                )
                keep.append(s8)
            keep += [s32, ov32, ovdef]
            # Correctness: the fp32 runtimes give torch's gates (the fast path's recorder) and top-1.
            probs = pred._forward(x1)
            ref_gates = [v[0].numpy() for v in pred.recorder.excitations.values()]
            for rt, run in (
                ("onnxruntime fp32", ort32),
                ("openvino fp32", ov32),
                ("openvino default (bf16 here)", ovdef),
            ):
                out = run(xn)
                gd = max(float(np.abs(out[k].reshape(-1) - g).max()) for k, g in enumerate(ref_gates, 1))
                check_rows.append(
                    [label, rt, len(ref_gates), f"{gd:.2g}", bool(out[0].argmax() == int(probs.argmax()))]
                )
            for variant, (ort8, ov8) in int8.items():
                for rt, f32, i8 in (("onnxruntime", ort32, ort8), ("openvino", ov32, ov8)):
                    if held_x:
                        agree, gd, ld = fidelity(f32, i8, held_x, n_gates)
                        fid_rows.append(
                            [
                                label,
                                f"{rt} int8 {variant} vs fp32",
                                len(held_x),
                                f"{agree:.2%}",
                                f"{gd:.2g}",
                                f"{ld:.2g}",
                            ]
                        )
            if eager is not None:
                ref = copy.deepcopy(eager).eval()
                impls[f"{label}: torchvision eager NCHW"] = lambda m=ref: m(x1)
            impls[f"{label}: torch fast path (gates)"] = lambda pr=pred: pr._forward(x1)
            impls[f"{label}: onnxruntime fp32"] = lambda r=ort32: r(xn)
            impls[f"{label}: openvino fp32"] = lambda r=ov32: r(xn)
            impls[f"{label}: openvino default (bf16 here)"] = lambda r=ovdef: r(xn)
            for variant, (ort8, ov8) in int8.items():
                impls[f"{label}: onnxruntime int8 {variant}"] = lambda r=ort8: r(xn)
                impls[f"{label}: openvino int8 {variant}"] = lambda r=ov8: r(xn)
            for k in impls:
                group.setdefault(k, label)
        load0 = loadavg()
        rounds = args.rounds or (2 if quick else 15)
        t = interleave(impls, rounds=rounds, reps=1 if quick else 2)
        load1 = loadavg()
    base = "torchvision VGG16 eager NCHW"
    rows = []
    for name in impls:
        own = f"{group[name]}: torchvision eager NCHW"
        rows.append(
            [
                name,
                f"{t.median(name) * 1e3:.1f}",
                f"{1.0 / t.median(name):.1f}",
                t.ratio(base, name),
                "{:.2f}–{:.2f}".format(*(1 / v for v in reversed(t.ratio_spread(name, base)))),
                t.ratio(own, name) if own in impls and own != name else float("nan"),
            ]
        )
    print(
        f"# input {size}x{size}, batch 1; load average during the timed loop {load0[0]:.2f} -> {load1[0]:.2f}"
    )
    report.data["timed_load"] = [load0, load1]
    report.print_table(
        [
            "row (batch 1)",
            "median ms",
            "frames/s",
            "speed vs VGG16 eager",
            "IQR",
            "speed vs own torchvision eager",
        ],
        rows,
        "runtimes",
    )
    report.print_table(
        ["model", "fp32 runtime", "gates", "max |gate - torch|", "same top-1 as torch"],
        check_rows,
        "fp32_check",
    )
    if fid_rows:
        report.print_table(
            ["model", "INT8", "held-out views", "top-1 agreement", "max |gate diff|", "max |logit diff|"],
            fid_rows,
            "int8_fidelity",
        )
    print(
        "# speed = frames/s ratio (VGG16 eager time / row time, median of paired rounds); IQR of that ratio"
    )
    for pr in keep:
        if isinstance(pr, Predictor):
            pr.close()
    tmp.cleanup()
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
