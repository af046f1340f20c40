"""What the SE blocks cost inside the whole model: VGG16-SE vs torchvision VGG16, side by side.

Eval mode, ``torch.inference_mode``, 224x224, batch 1 and 8, in three execution modes:
``nchw`` (eager, default layout), ``channels_last`` (eager, model and input converted) and ``fast``
(the Predictor's CPU default: channels_last input, packed oneDNN convolutions fused with their ReLU;
both models get the same treatment). The article's VGG16_SE (out-of-place ``x * y.expand_as(x)``)
is measured alongside for reference.

Peak memory = parameters (+ the packed weight copies in ``fast`` mode) + the peak of live tensor
bytes during one forward, from the profiler's allocator events (exact and deterministic: what the
CPU allocator holds at the worst moment).

Targets (full run): ours/VGG16 latency <= 1.01 and peak memory <= 1.005 at batch 1 and 8, in every mode.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's start/stop chatter
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, interleave, parser, setup_torch, start  # noqa: E402

MODES = ("nchw", "channels_last", "fast")


def peak_bytes(fn) -> int:
    """Peak of live CPU tensor bytes allocated during ``fn()`` (profiler allocator events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        if str(e.device_type()).endswith("CPU"):
            live += e.nbytes()
            peak = max(peak, live)
    return peak


def se_seconds(model, run, calls: int) -> float:
    """Median time per forward spent inside the SE blocks themselves (timed by pre/post hooks)."""
    import time

    from _reference import ArticleSEBlock

    from sevgg_gui.models.se import SEBlock

    spent = [0.0]
    start: dict[int, float] = {}

    def pre(m, _i):
        start[id(m)] = time.perf_counter()

    def post(m, _i, _o):
        spent[0] += time.perf_counter() - start[id(m)]

    handles = []
    for m in model.modules():
        if isinstance(m, SEBlock | ArticleSEBlock):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    per = []
    try:
        for _ in range(calls):
            spent[0] = 0.0
            run()
            per.append(spent[0])
    finally:
        for h in handles:
            h.remove()
    per.sort()
    return per[len(per) // 2]


def param_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)
    import torch
    from _reference import article_vgg16_se, fast_build, ours_vgg16_se, torchvision_vgg16

    from sevgg_gui.inference import CpuFastPath, cpu_fusion_available

    report = Report("SE overhead in the whole model: VGG16-SE vs torchvision VGG16", args)
    quick = args.quick
    size = 64 if quick else args.size
    batches = [1] if quick else [int(b) for b in args.batches.split(",")]
    modes = [m for m in args.modes.split(",") if m != "fast" or cpu_fusion_available()]
    build = fast_build if quick else (lambda f: f())
    torch.manual_seed(0)
    models = {
        "vgg16": build(torchvision_vgg16).eval(),
        "ours": build(ours_vgg16_se).eval(),
        "article": build(article_vgg16_se).eval(),
    }
    models["article"].load_state_dict(models["ours"].state_dict())  # same keys: same numbers expected
    fast = {name: CpuFastPath(m) for name, m in models.items()}
    rows, mem_rows = [], []
    # nchw and fast use the models as built; channels_last converts them, so it runs last.
    for mode in sorted(modes, key=lambda m: m == "channels_last"):
        if mode == "channels_last":
            for m in models.values():
                m.to(memory_format=torch.channels_last)
        for batch in batches:
            x = torch.randn(batch, 3, size, size)
            if mode != "nchw":
                x = x.contiguous(memory_format=torch.channels_last)

            def runner(name: str, x=x, mode=mode):
                model = models[name]
                ctx = fast[name].active if mode == "fast" else contextlib.nullcontext

                def run():
                    with ctx():
                        return model(x)

                return run

            impls = {name: runner(name) for name in models}
            with torch.inference_mode():
                ref = impls["ours"]()
                assert torch.allclose(impls["article"](), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
                rounds = args.rounds or (2 if quick else (30 if batch == 1 else 12))
                t = interleave(impls, rounds=rounds, reps=1 if batch > 1 or quick else 2)
                peaks = {name: peak_bytes(impls[name]) for name in models}
                calls = 1 if quick else (7 if batch == 1 else 3)
                se_share = {
                    n: se_seconds(models[n], impls[n], calls) / t.median(n) for n in ("ours", "article")
                }
            rows.append(
                [
                    mode,
                    batch,
                    f"{t.median('vgg16') * 1e3:.1f}",
                    f"{t.median('ours') * 1e3:.1f}",
                    t.ratio("ours", "vgg16"),
                    "{:.3f}–{:.3f}".format(*t.ratio_spread("ours", "vgg16")),
                    f"{100 * se_share['ours']:.2f}%",
                    t.ratio("article", "vgg16"),
                    f"{100 * se_share['article']:.2f}%",
                ]
            )
            packed = {n: fast[n].packed_bytes if mode == "fast" else 0 for n in models}
            total = {n: param_bytes(models[n]) + packed[n] + peaks[n] for n in models}
            mem_rows.append(
                [
                    mode,
                    batch,
                    f"{total['vgg16'] / 2**20:.1f}",
                    f"{total['ours'] / 2**20:.1f}",
                    total["ours"] / total["vgg16"],
                    peaks["ours"] / peaks["vgg16"],
                    total["article"] / total["vgg16"],
                    peaks["article"] / peaks["vgg16"],
                ]
            )
            tag = f"{mode} b{batch}"
            report.target(f"latency ours/vgg16 {tag}", t.ratio("ours", "vgg16"), 1.01)
            report.target(f"peak memory ours/vgg16 {tag}", total["ours"] / total["vgg16"], 1.005)
    report.print_table(
        [
            "mode",
            "batch",
            "VGG16 ms",
            "VGG16-SE ms",
            "ours/VGG16",
            "IQR",
            "time in SE blocks",
            "article/VGG16",
            "article: time in SE",
        ],
        rows,
        "latency",
    )
    report.print_table(
        [
            "mode",
            "batch",
            "VGG16 MiB",
            "VGG16-SE MiB",
            "ours/VGG16 total",
            "ours/VGG16 activations",
            "article/VGG16 total",
            "article/VGG16 activations",
        ],
        mem_rows,
        "memory",
    )
    print(f"# input {size}x{size}; memory = parameters + peak live tensor bytes during one forward")
    print(
        "# time in SE blocks = their own time per forward (pre/post hooks, median) / the model's median "
        "forward. Hooks on a block make it run as a module, so for ours this times the SE blocks "
        "*unpaired*; in the timed forwards each block runs paired with its max-pool (gate applied to "
        "the pooled map, models.se.se_then_max_pool), which the end-to-end ratio includes"
    )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
