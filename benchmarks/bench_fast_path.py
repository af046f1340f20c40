"""The app's default inference path vs torchvision VGG16 in its default eager NCHW form.

"app default" is exactly what the app runs per frame: ``Predictor(model)._forward(x)`` with default
options (CPU: channels_last input and :class:`~sevgg_gui.inference.CpuFastPath`, i.e. packed oneDNN
convolutions fused with their ReLU), the ExcitationRecorder attached to every SE block, and feature
maps kept for one block, as the app does. Alternatives are measured alongside: VGG16-SE eager NCHW
(``SEVGG_FAST=0``), eager channels_last, and (``--compile``) ``torch.compile`` in NCHW and
channels_last, whose compile time is reported separately.

Outputs must match eager NCHW VGG16-SE to float tolerance (same top-5, logits within 1e-4 relative).

Target (full run): app default / VGG16 eager NCHW <= 0.85 at batch 1 (the app's batch) and batch 8.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, interleave, parser, setup_torch, start  # noqa: E402


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    p.add_argument(
        "--other-models",
        default="mobilenet_v3_small,efficientnet_b0,regnet_y_400mf",
        help="torchvision SE models the app can also run: default path vs their eager NCHW (no target)",
    )
    args = p.parse_args()
    start(args)
    os.environ.pop("SEVGG_FAST", None)  # measure the real defaults
    setup_torch(args.threads)
    import torch
    from _reference import fast_build, ours_vgg16_se, torchvision_vgg16

    from sevgg_gui.images import Preprocess
    from sevgg_gui.inference import Predictor

    report = Report("App default inference path vs torchvision VGG16 eager NCHW", args)
    quick = args.quick
    size = 64 if quick else args.size
    batches = [1] if quick else [int(b) for b in args.batches.split(",")]
    build = fast_build if quick else (lambda f: f())
    torch.manual_seed(0)
    vgg16 = build(torchvision_vgg16).eval()
    ours = build(ours_vgg16_se).eval()
    ours_cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
    prep = Preprocess(crop_size=size, resize_size=size)
    names = [str(i) for i in range(1000)]
    app = Predictor(copy.deepcopy(ours), device="cpu", class_names=names, preprocess=prep)
    first_block = app.block_names[0]
    app.set_maps_for([first_block])
    report.data["predictor"] = {"fused": app.fused, "channels_last": app.channels_last}
    print(f"# app default on this machine: fused={app.fused} channels_last={app.channels_last}")
    compiled: dict[str, torch.nn.Module] = {}
    compile_s: dict[str, float] = {}
    if args.compile:
        compiled["compile nchw"] = torch.compile(copy.deepcopy(ours))
        compiled["compile channels_last"] = torch.compile(
            copy.deepcopy(ours).to(memory_format=torch.channels_last)
        )
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, size, size)
        xc = x.contiguous(memory_format=torch.channels_last)
        impls = {
            "vgg16 eager nchw": lambda x=x: vgg16(x),
            "vgg16-se eager nchw": lambda x=x: ours(x),
            "vgg16-se eager channels_last": lambda xc=xc: ours_cl(xc),
            "vgg16-se app default": lambda x=x: app._forward(x),
        }
        for name, model in compiled.items():
            inp = xc if name.endswith("channels_last") else x
            with torch.inference_mode():
                t0 = time.perf_counter()
                model(inp)
                compile_s[f"{name} b{batch}"] = time.perf_counter() - t0
            impls[f"vgg16-se {name}"] = lambda model=model, inp=inp: model(inp)
        with torch.inference_mode():
            ref = ours(x)
            ref_p = torch.softmax(ref, 1)
            for name, fn in impls.items():
                if name.startswith("vgg16 "):
                    continue
                out = fn()
                probs = out if name.endswith("app default") else torch.softmax(out, 1)
                scale = float(ref_p.abs().max())
                ok = torch.allclose(probs, ref_p, rtol=1e-3, atol=1e-4 * scale) and torch.equal(
                    probs.topk(5).indices, ref_p.topk(5).indices
                )
                assert ok, f"{name}: outputs differ from eager NCHW"
            rounds = args.rounds or (2 if quick else (15 if batch == 1 else 8))
            t = interleave(impls, rounds=rounds, reps=1 if batch > 1 or quick else 2)
        base = "vgg16 eager nchw"
        for name in impls:
            rows.append(
                [
                    batch,
                    name,
                    f"{t.median(name) * 1e3:.1f}",
                    t.ratio(name, base),
                    "{:.3f}–{:.3f}".format(*t.ratio_spread(name, base)),
                ]
            )
        report.target(f"app default / vgg16 eager nchw b{batch}", t.ratio("vgg16-se app default", base), 0.85)
    report.print_table(["batch", "path", "median ms", "ratio vs VGG16 NCHW", "IQR"], rows, "fast_path")
    if compile_s:
        report.print_table(
            ["compiled", "first call (compile) s"], [[k, f"{v:.1f}"] for k, v in compile_s.items()], "compile"
        )
    print(f"# input {size}x{size}; all paths match eager NCHW VGG16-SE (top-5 equal, probs within 1e-3 rel)")
    app.close()
    others = [] if quick else [m for m in args.other_models.split(",") if m]
    other_rows = []
    for name in others:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None).eval()
        pred = Predictor(copy.deepcopy(net), device="cpu", class_names=names, preprocess=prep)
        x = torch.randn(1, 3, size, size)
        with torch.inference_mode():
            ref = torch.softmax(net(x), 1)
            diff = float((pred._forward(x) - ref).abs().max() / ref.abs().max())
            t = interleave(
                {"eager": lambda net=net, x=x: net(x), "default": lambda pred=pred, x=x: pred._forward(x)},
                rounds=args.rounds or 10,
                reps=3,
            )
        other_rows.append(
            [
                name,
                f"{t.median('eager') * 1e3:.1f}",
                f"{t.median('default') * 1e3:.1f}",
                t.ratio("default", "eager"),
                diff,
            ]
        )
        pred.close()
    if other_rows:
        report.print_table(
            [
                "other model (batch 1)",
                "eager NCHW ms",
                "app default ms",
                "default/eager",
                "max prob diff (rel)",
            ],
            other_rows,
            "other_models",
        )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
