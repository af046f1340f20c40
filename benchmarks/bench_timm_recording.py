"""What recording costs on timm SE networks: seresnet50 and efficientnet_b0 (random weights) with the
ExcitationRecorder on every SE block vs without, side by side.

As the Predictor records: the recorder attached, and each call reads everything back (gates and
squeezes as float32 CPU tensors; one variant also keeps the last block's feature maps). A third
variant attaches and detaches around every call, as bench_recorder charges VGG16-SE. Eager NCHW,
batch 1, inference mode.

Robust to a shared, noisy 2-core machine: the SAME model object runs with and without the recorder
(its hooks are attached just before and removed just after the recorded calls, untimed, so weights,
memory and caches are shared) in many short A-B-B-A pairs (``_common.abba_pairs``); each pair gives
one ratio (B1 + B2) / (A1 + A2), which cancels load drifting across the pair, and the figure is the
median over pairs with a 95% bootstrap interval and the IQR. Beside it, the ratio of the two
distributions' 10th percentiles (interference only adds time, so the fast end is the least disturbed;
bootstrap interval too). A first variant runs the model against itself (A/A): the method's own bias
and noise floor in the same run. ``--threads 1 --cpu-time`` takes OpenMP barrier stalls and waiting
for a CPU out of the measurement. The load average is sampled after every pair and reported.

A second table measures the same cost where it is paid (each SE block alone on its real input, with
and without hooks, plus the read-back), which stays precise when other processes load the machine.

Target (full run): the attached variants' median ratio <= 1.01x the model without a recorder;
isolated cost <= 1%.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadSampler, Report, abba_pairs, clock_of, parser, setup_torch, start  # noqa: E402


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
    p.add_argument("--pairs", type=int, default=400, help="A-B-B-A pairs per variant (at most; see --budget)")
    p.add_argument("--budget", type=float, default=240.0, metavar="S", help="wall seconds of pairs per model")
    args = p.parse_args()
    start(args)

    clock = clock_of(args)
    # --quick (the smoke test) on one thread: two OpenMP threads on a loaded 2-core box stall at every
    # barrier (a 64 px forward took 0.6 s), and the smoke run checks only that the script works.
    setup_torch(args.threads or (1 if args.quick else None))
    import timm
    import torch

    from sevgg_gui.recorder import ExcitationRecorder

    report = Report("Recording overhead on timm SE networks", args)
    quick = args.quick
    size = 64 if quick else args.size
    names = ["seresnet18", "mobilenetv3_small_050"] if quick else args.models.split(",")
    pairs = 3 if quick else (args.rounds or args.pairs)
    load = LoadSampler()
    rows: list[list] = []
    isolated: list[list] = []
    for arch in names:
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False).eval()
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        gates = ExcitationRecorder(model)
        last = list(gates.blocks)[-1]
        maps = ExcitationRecorder(model, feature_maps=(last,))
        per_call = ExcitationRecorder(model)
        blocks = len(gates.blocks)

        def plain(x=x, model=model):
            return model(x)

        def recorded(rec, x=x, model=model):
            out = model(x)
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

        variants = {
            # A against itself: the method's own bias and noise floor on this machine, in this run.
            "none (A/A control)": plain,
            "gates + squeezes": lambda rec=gates: recorded(rec),
            f"+ maps {last}": lambda rec=maps: recorded(rec),
            "attach + detach every call": attach_per_call,
        }
        # The Predictor keeps its recorder attached for the model's lifetime: attach/detach around the
        # recorded calls are not timed (the third variant pays them).
        around = {
            "gates + squeezes": (gates.attach, gates.detach),
            f"+ maps {last}": (maps.attach, maps.detach),
        }
        with torch.inference_mode():
            base = plain()
            for name, fn in variants.items():
                enter, leave = around.get(name, (None, None))
                if enter:
                    enter()
                assert torch.equal(fn(), base), f"{name} changed the output"
                if leave:
                    leave()
            assert gates.excitations and maps.feature_maps, "the recorders recorded nothing"
            result = abba_pairs(
                plain,
                variants,
                pairs=pairs,
                clock=clock,
                around=around,
                warmup=1 if quick else 3,
                budget_s=None if quick else args.budget,
                after_pair=load.sample,
            )
        iso = isolated_overhead(model, x, clock, quick)
        load.sample()
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
        for name, r in result.items():
            lo, hi = r.ci()
            q1, q3 = r.iqr()
            llo, lhi = r.low_ci()
            a_ms, b_ms = (1e3 * statistics.median(t for pair in v for t in pair) for v in (r.a, r.b))
            rows.append(
                [
                    arch,
                    name,
                    len(r.ratios),
                    f"{a_ms:.2f}",
                    f"{b_ms:.2f}",
                    r.median(),
                    f"{lo:.3f}–{hi:.3f}",
                    f"{q1:.3f}–{q3:.3f}",
                    r.low_ratio(),
                    f"{llo:.3f}–{lhi:.3f}",
                ]
            )
            if name in around:
                report.target(f"{arch} {name} / none (median of pairs)", r.median(), 1.01)
    report.print_table(
        [
            "model",
            "recording",
            "pairs",
            "none ms",
            "recorded ms",
            "median ratio",
            "95% CI",
            "IQR",
            "p10 ratio",
            "p10 95% CI",
        ],
        rows,
        "timm",
    )
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
    report.data["load_during"] = load.samples
    print(
        f"# input 1x3x{size}x{size}, random weights; outputs with and without recording are bit-identical (checked);"
        f" {'CPU' if args.cpu_time else 'wall'} time, {torch.get_num_threads()} thread(s);"
        f" 1-minute load average during the pairs: {load.summary()}"
    )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
