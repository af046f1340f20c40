"""What recording costs on timm SE networks: seresnet50 and efficientnet_b0 (random weights) with the
ExcitationRecorder on every SE block vs without, side by side.

As in bench_recorder: each call attaches the recorder, runs the forward, reads everything back
(gates and squeezes as float32 CPU tensors; one variant also keeps the last block's feature maps) and
detaches, so hook registration is charged to recording. Eager NCHW, batch 1, inference mode.

Target (full run): every recording variant <= 1.01x the model without a recorder.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, interleave, parser, setup_torch, start  # noqa: E402


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="seresnet50,efficientnet_b0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="time this process's CPU time (use with --threads 1 on a busy box)",
    )
    args = p.parse_args()
    start(args)
    import time

    clock = time.process_time if args.cpu_time else time.perf_counter
    setup_torch(args.threads)
    import timm
    import torch

    from sevgg_gui.recorder import ExcitationRecorder

    report = Report("Recording overhead on timm SE networks", args)
    quick = args.quick
    size = 64 if quick else args.size
    names = ["seresnet18", "mobilenetv3_small_050"] if quick else args.models.split(",")
    rows = []
    for arch in names:
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False).eval()
        recorders = {
            "gates + squeezes": ExcitationRecorder(model),
        }
        last = list(recorders["gates + squeezes"].blocks)[-1]
        recorders[f"+ maps {last}"] = ExcitationRecorder(model, feature_maps=[last])
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))

        def plain(x=x, model=model):
            return model(x)

        def recorded(rec: ExcitationRecorder, x=x, model=model):
            rec.attach()
            try:
                out = model(x)
                rec.excitations, rec.squeezes, rec.feature_maps  # noqa: B018 - read back, as the Predictor does
            finally:
                rec.detach()
            return out

        impls = {"no recorder": plain}
        impls.update({name: (lambda rec=rec: recorded(rec)) for name, rec in recorders.items()})
        with torch.inference_mode():
            base = plain()
            for name, fn in impls.items():
                assert torch.equal(fn(), base), f"{name} changed the output"
            rounds = args.rounds or (2 if quick else 25)
            t = interleave(impls, rounds=rounds, reps=1 if quick else 2, clock=clock)
        blocks = len(recorders["gates + squeezes"].blocks)
        for name in impls:
            rows.append(
                [
                    arch,
                    blocks,
                    name,
                    f"{t.median(name) * 1e3:.1f}",
                    t.ratio(name, "no recorder"),
                    "{:.3f}–{:.3f}".format(*t.ratio_spread(name, "no recorder")),
                ]
            )
            if name != "no recorder":
                report.target(f"{arch} {name} / none", t.ratio(name, "no recorder"), 1.01)
    report.print_table(["model", "SE blocks", "recording", "median ms", "ratio vs none", "IQR"], rows, "timm")
    print(
        f"# input 1x3x{size}x{size}, random weights; outputs with and without recording are bit-identical (checked)"
    )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
