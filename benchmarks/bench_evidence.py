"""What the class-evidence overlay costs the live loop: frames/s with it on vs off, side by side.

"off" is what the worker does per frame: ``Predictor.predict`` (inference mode, the CPU fast path). "on"
adds what the worker's extra does on the same frame: ``LiveEvidence`` (one forward with autograd from the
first explained layer on, one ``autograd.grad``, the Grad-CAM / Eigen-CAM map and the block's evidence).
The map is at the default layer (the last convolutional block); the evidence block is the last or the first
attention block (the first one needs a backward through nearly the whole network).

Target (full run, VGG16-SE 224 px, Grad-CAM, last block): on >= 0.45x the frames/s of off.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, clock_of, interleave, parser, setup_torch, start  # noqa: E402


def main() -> int:
    p = parser(__doc__.splitlines()[0], cpu_time=True)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)

    import numpy as np
    import torch

    from sevgg_gui.evidence import EvidenceRequest, LiveEvidence
    from sevgg_gui.images import Preprocess
    from sevgg_gui.inference import Predictor
    from sevgg_gui.sources import Frame

    report = Report("Class evidence overlay: frames/s on vs off", args)
    quick = args.quick
    size = 64 if quick else args.size
    torch.manual_seed(0)
    if quick:
        from sevgg_gui.training.models import build_model

        model = build_model("vgg16_se", 10, width=0.125).eval()
    else:
        from sevgg_gui.models.vgg import VGG16_SE

        model = VGG16_SE().eval()
    pred = Predictor(model, device="cpu", preprocess=Preprocess(size, round(size * 256 / 224)))
    rgb = np.random.default_rng(0).integers(0, 256, (round(size * 1.4), round(size * 1.2), 3), dtype=np.uint8)
    frame = Frame(rgb=rgb, index=0, timestamp=0.0, origin="bench", capture_ms=0.0)
    blocks = pred.block_names
    cases = [("gradcam", blocks[-1]), ("eigencam", blocks[-1]), ("gradcam", blocks[0])]
    if quick:
        cases = cases[:1]

    def off():
        return pred.predict(frame.rgb)

    def on(live: LiveEvidence):
        result = pred.predict(frame.rgb)
        live(pred, frame, result)
        assert result.evidence is not None
        return result

    rows = []
    for method, block in cases:
        live = LiveEvidence(EvidenceRequest(method=method, block=block))
        on(live)  # warm up (first import of pytorch-grad-cam, default-layer trace)
        t = interleave(
            {"off": off, "on": lambda live=live: on(live)},
            rounds=args.rounds or (2 if quick else 8),
            clock=clock_of(args),
        )
        ratio = t.median("off") / t.median("on")
        rows.append(
            [
                method,
                block,
                f"{1 / t.median('off'):.2f}",
                f"{1 / t.median('on'):.2f}",
                f"{ratio:.2f}x",
                f"{(t.median('on') - t.median('off')) * 1e3:.0f}",
            ]
        )
        if method == "gradcam" and block == blocks[-1]:
            report.target(f"fps on / off ({method}, {block})", ratio, 0.45, kind=">=")
    report.print_table(
        ["method", "evidence block", "frames/s off", "frames/s on", "on / off", "extra ms"], rows, "evidence"
    )
    print(f"# {type(model).__name__} at {size}x{size}, map at the last conv block, CPU, batch 1")
    print(f"# clock: {'process CPU time' if args.cpu_time else 'wall'}; threads {torch.get_num_threads()}")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
