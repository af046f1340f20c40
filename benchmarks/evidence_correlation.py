"""Do SE gates boost the channels that carry a class? Mean gate-evidence correlation per SE block.

For every photo (duplicates by content counted once) and each of its top-k classes, the channel evidence
of every SE block (gradient x activation summed over space, ``sevgg_gui.evidence``) is correlated with
that block's gates across channels (Pearson r and Spearman rho); the table gives the mean per block.

    python benchmarks/evidence_correlation.py -c ../shared/weights/mobilenet_v3_small-tfslim_uint8-distilled.pth \
        sevgg_gui/resources/samples ../shared/data/photos [--topk 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", help="images or folders")
    p.add_argument("-c", "--checkpoint", required=True, help="model spec, as for `sevgg explain`")
    p.add_argument("--topk", type=int, default=5, help="explain each photo's top-k classes (default 5)")
    p.add_argument("--json", help="also write the table here")
    args = p.parse_args()

    import numpy as np

    from sevgg_gui.cli.common import expand_inputs
    from sevgg_gui.evidence import explain_image
    from sevgg_gui.images import ImageError, load_image
    from sevgg_gui.inference import Predictor
    from sevgg_gui.zoo import load_model

    loaded = load_model(args.checkpoint)
    pred = Predictor(
        loaded.model, device="cpu", class_names=loaded.class_names, preprocess=loaded.preprocess()
    )
    blocks = list(pred.recorder.taps)
    seen: set[str] = set()
    rows: dict[str, dict[str, list[float]]] = {
        b: {"r1": [], "rho1": [], "rk": [], "rhok": []} for b in blocks
    }
    used = []
    for path in expand_inputs(args.images):
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if digest in seen:
            continue
        try:
            rgb = load_image(path)
        except ImageError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        seen.add(digest)
        used.append(Path(path).name)
        result = pred.predict(rgb, topk=args.topk)
        for rank, top in enumerate(result.topk):
            ev = explain_image(pred, rgb, top.index, blocks=blocks)
            for b in blocks:
                r, rho = ev.correlation(b)
                rows[b]["rk"].append(r)
                rows[b]["rhok"].append(rho)
                if rank == 0:
                    rows[b]["r1"].append(r)
                    rows[b]["rho1"].append(rho)
    channels = {n: t.channels for n, t in pred.recorder.taps.items()}
    print(
        f"# {loaded.provenance}; {len(used)} photos: {', '.join(used)}; Grad-CAM evidence at each block output"
    )
    print(
        f"| block | channels | r (top-1) | rho (top-1) | r (top-{args.topk}) | rho (top-{args.topk}) | sd r (top-{args.topk}) |"
    )
    print("|---|---|---|---|---|---|---|")
    table = []
    for i, b in enumerate(blocks, 1):
        d = {k: np.asarray(v, np.float64) for k, v in rows[b].items()}
        m = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in d.items()}
        sd = float(np.nanstd(d["rk"], ddof=1)) if np.isfinite(d["rk"]).sum() > 1 else float("nan")
        print(
            f"| {i} `{b}` | {channels[b]} | {m['r1']:+.3f} | {m['rho1']:+.3f} | {m['rk']:+.3f} | {m['rhok']:+.3f} | {sd:.3f} |"
        )
        table.append(
            {
                "block": b,
                "channels": channels[b],
                **m,
                "sd_rk": sd,
                "n_top1": len(d["r1"]),
                "n_topk": len(d["rk"]),
            }
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"photos": used, "topk": args.topk, "blocks": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
