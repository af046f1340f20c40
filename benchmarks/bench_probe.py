"""What finding attention blocks by behaviour costs at load time: the whole scan (registry, the
probe's forward with its hooks, the meta pass for channel counts) vs one plain forward of the model.

Models: timm efficientnet_b0 (50 modules of types no registry knows), timm seresnet50, and a
user-style network whose SE blocks are written inline (found only by the probe); random weights.
Each call runs ``attention_blocks(model, example_input(size))`` from scratch.

Target (full run): scan <= 2.0x one forward at batch 1 (the issue's "at most two extra forwards").
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, clock_of, interleave, parser, setup_torch, start  # noqa: E402


def user_network():
    """ResNet-ish stages with an SE computed inline, as users write it (no submodule is the gate)."""
    import torch
    from torch import nn

    class InlineSE(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(c, c // 4), nn.Linear(c // 4, c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))[:, :, None, None]

    layers: list[nn.Module] = []
    c_in = 3
    for c in (64, 128, 256, 512):
        layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True), InlineSE(c)]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 1000)]
    return nn.Sequential(*layers)


def main() -> int:
    p = parser(__doc__.splitlines()[0], cpu_time=True)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    start(args)

    clock = clock_of(args)
    setup_torch(args.threads)
    import timm
    import torch

    from sevgg_gui.taps import attention_blocks, example_input

    report = Report("Behaviour probe: scan cost vs one forward", args)
    quick = args.quick
    size = 64 if quick else args.size
    models = {
        "efficientnet_b0": lambda: timm.create_model("efficientnet_b0", pretrained=False),
        "seresnet50": lambda: timm.create_model("seresnet50", pretrained=False),
        "user inline SE": user_network,
    }
    if quick:
        models = {
            "mobilenetv3_small_050": lambda: timm.create_model("mobilenetv3_small_050", pretrained=False),
            "user inline SE": user_network,
        }
    rows = []
    for name, build in models.items():
        torch.manual_seed(0)
        model = build().eval()
        x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        ex = example_input(size)
        found = {}

        def forward(model=model, x1=x1):
            with torch.no_grad():
                return model(x1)

        def scan(model=model, ex=ex, found=found):
            blocks, rep = attention_blocks(model, ex)
            found["blocks"] = sum(b.found_by == "behaviour" for b in blocks), len(blocks), rep

        t = interleave(
            {"forward": forward, "scan": scan}, rounds=args.rounds or (2 if quick else 9), reps=1, clock=clock
        )
        by_probe, total, rep = found["blocks"]
        ratio = t.ratio("scan", "forward")
        rows.append(
            [
                name,
                total,
                by_probe,
                rep.candidates,
                rep.forwards,
                f"{t.median('forward') * 1e3:.1f}",
                f"{t.median('scan') * 1e3:.1f}",
                ratio,
                "{:.3f}–{:.3f}".format(*t.ratio_spread("scan", "forward")),
            ]
        )
        report.target(f"{name} scan / forward", ratio, 2.0)
    report.print_table(
        [
            "model",
            "blocks",
            "by behaviour",
            "probed modules",
            "probe forwards",
            "forward ms",
            "scan ms",
            "scan / forward",
            "IQR",
        ],
        rows,
        "probe",
    )
    print(f"# clock: {'process CPU time' if args.cpu_time else 'wall'}")
    print(f"# forward: batch 1 at {size}x{size}; the probe runs 2 images at min({size}, 128) px")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
