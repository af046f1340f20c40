"""What each attention type costs: VGG16 with se / sse / scse / bam / cbam / eca vs plain VGG16, and
SE-ResNet-18/50, SE-Inception, SE-MobileNet vs the same networks without attention.

Parameters and MACs are counted exactly (MACs by a shape-only pass on the meta device); CPU latency is
measured side by side in one process, every model interleaved round by round, ratios are medians of
paired per-round ratios. Random weights: cost does not depend on training. No targets: this is the
table the attention issue asks for, so a user can pick a variant knowing its price.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, interleave, parser, setup_torch, start  # noqa: E402


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)
    import torch
    import torchvision

    from sevgg_gui.analysis import count_params, layer_macs
    from sevgg_gui.models.attention import available_attention
    from sevgg_gui.models.networks import (
        se_inception,
        se_mobilenet,
        se_resnet18,
        se_resnet50,
        vgg16_attention,
    )

    report = Report("Attention variants: parameters, MACs and CPU latency vs the network without", args)
    quick = args.quick
    size = 64 if quick else args.size
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, size, size)

    def macs(model: torch.nn.Module) -> int:
        return layer_macs(model, (size, size)).total_macs

    def measure(
        title: str, baseline: tuple[str, torch.nn.Module], others: dict[str, torch.nn.Module]
    ) -> list:
        models = {baseline[0]: baseline[1].eval(), **{k: m.eval() for k, m in others.items()}}
        impls = {name: (lambda m=m: m(x)) for name, m in models.items()}
        with torch.inference_mode():
            rounds = args.rounds or (1 if quick else 15)
            t = interleave(impls, rounds=rounds, reps=1 if quick else 2)
        base_p, base_m = count_params(baseline[1]), macs(baseline[1])
        rows = []
        for name, m in models.items():
            rows.append(
                [
                    title,
                    name,
                    f"{count_params(m):,}",
                    count_params(m) / base_p,
                    macs(m) / base_m,
                    f"{t.median(name) * 1e3:.1f}",
                    t.ratio(name, baseline[0]),
                ]
            )
        return rows

    rows = []
    names = available_attention()[:2] if quick else available_attention()
    vgg = torchvision.models.vgg16()
    rows += measure("VGG16", ("none", vgg), {n: vgg16_attention(n) for n in names})
    nets = (
        [("ResNet-18", se_resnet18)]
        if quick
        else [
            ("ResNet-18", se_resnet18),
            ("ResNet-50", se_resnet50),
            ("Inception (GoogLeNet)", se_inception),
            ("MobileNetV2", se_mobilenet),
        ]
    )
    for title, build in nets:
        rows += measure(title, ("none", build(attention=None)), {"se": build()})
    report.print_table(
        ["network", "attention", "params", "params ratio", "MACs ratio", "median ms", "latency ratio"],
        rows,
        "attention",
    )
    print(
        f"# input {args.batch}x3x{size}x{size}, fp32, eval, CPU; ratios against the same network without attention"
    )
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
