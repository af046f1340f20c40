"""What recording costs on timm SE networks: seresnet50 and efficientnet_b0 (random weights) with the
ExcitationRecorder on every SE block vs without, side by side.

As the Predictor records: the recorder stays attached and each call reads everything back (gates and
squeezes as float32 CPU tensors; one variant also keeps the last block's feature maps). A third row
(no target) attaches and detaches around every call, as bench_recorder charges VGG16-SE. Eager NCHW,
batch 1, inference mode.

A second table measures the same cost where it is paid (each SE block alone on its real input, with
and without hooks, plus the read-back), which stays precise when other processes load the machine.

Target (full run): the attached variants <= 1.01x the model without a recorder; isolated cost <= 1%.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, clock_of, interleave, parser, setup_torch, start  # noqa: E402


def isolated_overhead(model, x, clock, quick: bool) -> dict[str, float]:
    """Recording's cost measured where it is paid, precise even on a busy machine: every SE block run
    alone on its real input (taken from one forward), with and without the recorder's hooks (best of
    many calls each), plus reading the results back; as 1 + that cost / one forward."""
    import torch

    from sevgg_gui.recorder import ExcitationRecorder

    rec = ExcitationRecorder(model)
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        b.register_forward_pre_hook(lambda m, i, n=n: inputs.__setitem__(n, i[0]))
        for n, b in rec.blocks.items()
    ]
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()

    def best(fn, calls: int, repeats: int) -> float:
        out = float("inf")
        for _ in range(repeats):
            t0 = clock()
            for _ in range(calls):
                fn()
            out = min(out, (clock() - t0) / calls)
        return out

    calls, repeats = (20, 3) if quick else (200, 15)
    with torch.inference_mode():
        forward = best(lambda: model(x), 1 if quick else 3, 3 if quick else 10)
        plain = sum(best(lambda b=b, n=n: b(inputs[n]), calls, repeats) for n, b in rec.blocks.items())
        rec.attach()
        hooked = sum(best(lambda b=b, n=n: b(inputs[n]), calls, repeats) for n, b in rec.blocks.items())
        readback = best(lambda: (rec.excitations, rec.squeezes), calls, repeats)
        rec.detach()
    cost = max(0.0, hooked - plain) + readback
    return {
        "forward": forward,
        "blocks": plain,
        "hooked": hooked,
        "readback": readback,
        "ratio": 1 + cost / forward,
    }


def main() -> int:
    p = parser(__doc__.splitlines()[0], cpu_time=True)
    p.add_argument("--models", default="seresnet50,efficientnet_b0")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    start(args)

    clock = clock_of(args)
    setup_torch(args.threads)
    import timm
    import torch

    from sevgg_gui.recorder import ExcitationRecorder

    report = Report("Recording overhead on timm SE networks", args)
    quick = args.quick
    size = 64 if quick else args.size
    names = ["seresnet18", "mobilenetv3_small_050"] if quick else args.models.split(",")
    rows: list[list] = []
    isolated: list[list] = []
    for arch in names:
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False).eval()
        # The Predictor keeps its recorder attached for the model's lifetime: the recorded variants run
        # identical copies of the model with a recorder attached once, and read everything back per call.
        recorders = {}
        copies = {}
        last = list(ExcitationRecorder(model).blocks)[-1]
        for name, maps in (("gates + squeezes", ()), (f"+ maps {last}", (last,))):
            copies[name] = copy.deepcopy(model)
            recorders[name] = ExcitationRecorder(copies[name], feature_maps=maps).attach()
        per_call = ExcitationRecorder(model)
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))

        def plain(x=x, model=model):
            return model(x)

        def recorded(name: str, x=x, copies=copies, recorders=recorders):
            out = copies[name](x)
            rec = recorders[name]
            rec.excitations, rec.squeezes, rec.feature_maps  # noqa: B018 - read back, as the Predictor does
            return out

        def attach_per_call(x=x, model=model, rec=per_call):
            rec.attach()
            try:
                out = model(x)
                rec.excitations, rec.squeezes  # noqa: B018
            finally:
                rec.detach()
            return out

        impls = {"no recorder": plain}
        impls.update({name: (lambda name=name: recorded(name)) for name in recorders})
        impls["attach + detach every call"] = attach_per_call
        with torch.inference_mode():
            base = plain()
            for name, fn in impls.items():
                assert torch.equal(fn(), base), f"{name} changed the output"
            rounds = args.rounds or (2 if quick else 25)
            t = interleave(impls, rounds=rounds, reps=1 if quick else 2, clock=clock)
        blocks = len(recorders["gates + squeezes"].blocks)
        for rec in recorders.values():
            rec.detach()
        iso = isolated_overhead(model, x, clock, quick)
        isolated.append(
            [
                arch,
                blocks,
                f"{iso['forward'] * 1e3:.2f}",
                f"{iso['blocks'] * 1e3:.3f}",
                f"{iso['hooked'] * 1e3:.3f}",
                f"{iso['readback'] * 1e3:.3f}",
                iso["ratio"],
            ]
        )
        report.target(f"{arch} isolated recording cost / forward + 1", iso["ratio"], 1.01)
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
            if name in recorders:
                report.target(f"{arch} {name} / none", t.ratio(name, "no recorder"), 1.01)
    report.print_table(["model", "SE blocks", "recording", "median ms", "ratio vs none", "IQR"], rows, "timm")
    report.print_table(
        [
            "model",
            "SE blocks",
            "forward ms",
            "SE blocks alone ms",
            "with hooks ms",
            "read-back ms",
            "1 + cost/fwd",
        ],
        isolated,
        "isolated",
    )
    print(
        f"# input 1x3x{size}x{size}, random weights; outputs with and without recording are bit-identical (checked)"
    )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
