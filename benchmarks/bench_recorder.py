"""What recording costs: VGG16-SE with the ExcitationRecorder on every SE block vs without.

Each call attaches the recorder, runs the forward, reads everything back (gates, squeezes and, where
asked, the downsampled feature maps as float32 CPU tensors) and detaches, so hook registration is
charged to recording too. Feature maps are kept for one block only, as the app does for the block on
screen: ``features.4`` (64x224x224, the most expensive) and ``features.34`` (512x14x14).
Measured in the app's default path (``fast``: channels_last + packed, fused convolutions) and eager NCHW.

Target (full run): every recording variant <= 1.01x the model without a recorder.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, interleave, parser, setup_torch, start  # noqa: E402


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--modes", default="fast,nchw")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)
    import torch
    from _reference import fast_build, ours_vgg16_se

    from sevgg_gui.inference import CpuFastPath, cpu_fusion_available
    from sevgg_gui.recorder import ExcitationRecorder

    report = Report("Recording overhead: ExcitationRecorder on every SE block", args)
    quick = args.quick
    size = 64 if quick else args.size
    batches = [1] if quick else [int(b) for b in args.batches.split(",")]
    modes = [m for m in args.modes.split(",") if m != "fast" or cpu_fusion_available()][
        : 1 if quick else None
    ]
    torch.manual_seed(0)
    model = (fast_build(ours_vgg16_se) if quick else ours_vgg16_se()).eval()
    blocks = [n for n, _ in model.se_blocks()]
    fast = CpuFastPath(model)
    variants = {
        "no recorder": None,
        "gates + squeezes": (),
        f"+ maps {blocks[0]}": (blocks[0],),
        f"+ maps {blocks[-1]}": (blocks[-1],),
    }
    recorders = {
        name: ExcitationRecorder(model, feature_maps=maps, map_size=28)
        for name, maps in variants.items()
        if maps is not None
    }
    rows = []
    for mode in modes:
        for batch in batches:
            x = torch.randn(batch, 3, size, size)
            if mode == "fast":
                x = x.contiguous(memory_format=torch.channels_last)
            ctx = fast.active if mode == "fast" else contextlib.nullcontext

            def plain(x=x, ctx=ctx):
                with ctx():
                    return model(x)

            def recorded(rec: ExcitationRecorder, x=x, ctx=ctx):
                rec.attach()
                try:
                    with ctx():
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
                rounds = args.rounds or (2 if quick else (25 if batch == 1 else 10))
                t = interleave(impls, rounds=rounds, reps=1 if batch > 1 or quick else 2)
            for name in impls:
                rows.append(
                    [
                        mode,
                        batch,
                        name,
                        f"{t.median(name) * 1e3:.1f}",
                        t.ratio(name, "no recorder"),
                        "{:.3f}–{:.3f}".format(*t.ratio_spread(name, "no recorder")),
                    ]
                )
                if name != "no recorder":
                    report.target(f"{name} / none {mode} b{batch}", t.ratio(name, "no recorder"), 1.01)
    report.print_table(["mode", "batch", "recording", "median ms", "ratio vs none", "IQR"], rows, "recorder")
    print(f"# input {size}x{size}; outputs with and without recording are bit-identical (checked)")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
