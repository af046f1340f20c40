"""SE block alone vs the memory-bandwidth bound and vs the article's, timm's and torchvision's SE.

The block reads its input twice (squeeze, scale) and writes it once, so its floor is
``3 x bytes(x) / bandwidth``; bandwidth is measured in the same rounds by copying a tensor much larger
than the last-level cache (``2 x bytes / time``). Inputs rotate through a pool larger than the cache.
"fresh" inputs are written by an in-place ReLU just before each (untimed) call, the state the block
finds them in inside VGG16-SE; "cold" inputs come straight from DRAM (pessimistic for small maps).
Ours runs as VGG16-SE runs it: ``inplace=True`` under ``inference_mode`` (its input is the dead output
of the preceding ReLU); "ours out-of-place" is the training / standalone path, for reference.

Targets (full run, fresh inputs): ours <= 1.2x the bound, and faster than the article's, timm's and
torchvision's SE, at each of VGG16's five SE shapes, batch 1 and 8, in NCHW and channels_last.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, interleave, parser, setup_torch, start  # noqa: E402

SHAPES = [(64, 224, 224), (128, 112, 112), (256, 56, 56), (512, 28, 28), (512, 14, 14)]
COMPARED = ("article", "timm", "torchvision")


def l3_bytes() -> int:
    try:
        text = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
        return (
            int(text[:-1]) * (1024 if text.endswith("K") else 1024 * 1024) if text[-1] in "KM" else int(text)
        )
    except (OSError, ValueError):
        return 32 << 20


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,8")
    p.add_argument("--layouts", default="nchw,channels_last")
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)
    import torch
    from _reference import se_implementations

    report = Report("SE block vs bandwidth bound and other SE implementations", args)
    quick = args.quick
    batches = [1] if quick else [int(b) for b in args.batches.split(",")]
    layouts = ["nchw", "channels_last"] if quick else args.layouts.split(",")
    shapes = SHAPES[-2:] if quick else SHAPES
    rounds = args.rounds or (2 if quick else 15)
    cache = l3_bytes()
    pool_bytes = 2 * cache if quick else 3 * cache
    big = torch.empty(max(cache * 4, 64 << 20) // 4 if not quick else cache // 2)
    big.uniform_()
    big_dst = torch.empty_like(big)
    report.data["l3_bytes"] = cache
    rows = []
    all_impls = None
    for layout, batch, (c, h, w) in itertools.product(layouts, batches, shapes):
        shape = (batch, c, h, w)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        nbytes = batch * c * h * w * 4
        count = max(2, -(-pool_bytes // nbytes))
        pool = [torch.rand(shape).contiguous(memory_format=fmt) for _ in range(count)]
        factories = se_implementations(c)
        all_impls = [n for n, f in factories.items() if f is not None]
        blocks = {n: f().eval() for n, f in factories.items() if f is not None}
        # Same weights wherever the parameter layout allows (article / ours share keys).
        blocks["ours"].load_state_dict(blocks["article"].state_dict())
        blocks["ours out-of-place"].load_state_dict(blocks["article"].state_dict())
        check = torch.rand(shape).contiguous(memory_format=fmt)
        with torch.inference_mode():
            expect = blocks["article"](check)
            got = blocks["ours"](check.clone())
        assert torch.allclose(got, expect, rtol=1e-5, atol=1e-6), f"ours != article at {shape} {layout}"
        pos = {"i": 0}

        def prepare(name: str, pos=pos, count=count, pool=pool) -> None:
            pos["i"] = (pos["i"] + 1) % count
            if not name.endswith("(cold)") and name != "copy":
                pool[pos["i"]].relu_()  # as the preceding ReLU leaves it: just written, partly cached

        impls = {"copy": lambda: big_dst.copy_(big)}
        for name, block in blocks.items():
            impls[name] = lambda block=block, pool=pool, pos=pos: block(pool[pos["i"]])
        for name in ("ours", "article"):
            impls[f"{name} (cold)"] = impls[name]
        reps = 3 if nbytes > (4 << 20) else 9
        with torch.inference_mode():
            t = interleave(impls, rounds=rounds, reps=reps, before_call=prepare)
        bound = [3 * nbytes * tc / (2 * big.numel() * 4) for tc in t.rounds["copy"]]
        t.rounds["bound"] = bound
        bw = 2 * big.numel() * 4 / t.median("copy") / 1e9
        row = [layout, batch, f"{c}x{h}x{w}", f"{bw:.1f}", f"{t.median('bound') * 1e6:.0f}"]
        row.append(f"{t.median('ours') * 1e6:.0f}")
        row.append(t.ratio("ours", "bound"))
        row.append(t.ratio("ours (cold)", "bound"))
        row.append(t.ratio("ours out-of-place", "bound"))
        for other in COMPARED:
            row.append(t.ratio(other, "bound") if other in t.rounds else float("nan"))
        row.append(t.ratio("article (cold)", "bound"))
        rows.append(row)
        tag = f"{layout} b{batch} {c}x{h}x{w}"
        report.target(f"ours/bound {tag}", t.ratio("ours", "bound"), 1.2)
        for other in COMPARED:
            if other in t.rounds:
                report.target(f"ours/{other} {tag}", t.ratio("ours", other), 1.0, kind="<")
        del pool, blocks
    headers = ["layout", "batch", "shape", "copy GB/s", "bound µs", "ours µs", "ours/bound"]
    headers += ["ours cold/bound", "ours oop/bound", *(f"{o}/bound" for o in COMPARED), "article cold/bound"]
    report.print_table(headers, rows, "se_block")
    if all_impls is not None and "timm" not in all_impls:
        print("# timm not installed: `pip install -e .[bench]` to compare against it")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
