"""Throughput of VGG16-SE on this CPU vs batch size (at 224x224) and vs input resolution (batch 1).

Two paths side by side: the app's default (channels_last + packed, fused oneDNN convolutions, via
``CpuFastPath``) and plain eager NCHW; images/s from the median of interleaved rounds. Writes a PNG plot
next to ``--plot`` if matplotlib is installed (``pip install -e .[bench]``), otherwise only the table.
No target: this is the capacity table (what batch size to use offline, what a bigger input costs).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, interleave, parser, setup_torch, start  # noqa: E402


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,2,4,8,16")
    p.add_argument("--sizes", default="112,160,224,320,448")
    p.add_argument(
        "--plot",
        default=None,
        help="PNG to write (default: benchmarks/results/scaling.png in full runs, none with --quick)",
    )
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)
    import torch
    from _reference import fast_build, ours_vgg16_se

    from sevgg_gui.inference import CpuFastPath, cpu_fusion_available

    report = Report("Scaling: VGG16-SE throughput vs batch size and input resolution", args)
    quick = args.quick
    batches = [1, 2] if quick else [int(b) for b in args.batches.split(",")]
    sizes = [32, 64] if quick else [int(s) for s in args.sizes.split(",")]
    base_size = 64 if quick else 224
    torch.manual_seed(0)
    model = (fast_build(ours_vgg16_se) if quick else ours_vgg16_se()).eval()
    fast = CpuFastPath(model) if cpu_fusion_available() else None
    paths = {"app default": fast, "eager NCHW": None}

    def measure(batch: int, size: int) -> dict[str, float]:
        x = torch.randn(batch, 3, size, size)
        xc = x.contiguous(memory_format=torch.channels_last)

        def runner(fp):
            def run():
                with fp.active() if fp is not None else contextlib.nullcontext():
                    return model(xc if fp is not None else x)

            return run

        impls = {name: runner(fp) for name, fp in paths.items() if name == "eager NCHW" or fp is not None}
        work = batch * size * size / (224 * 224)
        rounds = args.rounds or (1 if quick else max(3, min(8, round(8 / work))))
        with torch.inference_mode():
            t = interleave(impls, rounds=rounds, reps=1, budget_s=None if quick else 60)
        return {name: batch / t.median(name) for name in impls}

    rows_b, rows_s = [], []
    series: dict[str, dict[str, list[tuple[int, float]]]] = {"batch": {}, "size": {}}
    for b in batches:
        ips = measure(b, base_size)
        rows_b.append([b, base_size, *(ips.get(n, float("nan")) for n in paths)])
        for n, v in ips.items():
            series["batch"].setdefault(n, []).append((b, v))
    for s in sizes:
        ips = measure(1, s)
        rows_s.append([1, s, *(ips.get(n, float("nan")) for n in paths)])
        for n, v in ips.items():
            series["size"].setdefault(n, []).append((s, v))
    heads = ["batch", "input", *(f"{n} img/s" for n in paths)]
    report.print_table(heads, rows_b, "by_batch")
    report.print_table(heads, rows_s, "by_size")
    if args.plot is None and not args.quick:
        args.plot = str(Path(__file__).resolve().parent / "results" / "scaling.png")
    if args.plot is None:
        return report.finish()
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib not installed: no plot (pip install -e .[bench])")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, xlabel in (
            (axes[0], "batch", "batch size (224x224)"),
            (axes[1], "size", "input side (batch 1)"),
        ):
            for n, pts in series[key].items():
                ax.plot([a for a, _ in pts], [v for _, v in pts], marker="o", label=n)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("images / s")
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle("VGG16-SE on this CPU")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"# plot written to {args.plot}")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
