"""The live pipeline per backend (Model → Backend): torch vs onnxruntime vs OpenVINO in the real window.

Set-up: a random-weight VGG16-SE (1000 classes, 224 px) saved as a checkpoint in a temp folder, with
``SEVGG_CACHE`` pointing at another, so each runtime backend opens it exactly as the app does
(:func:`sevgg_gui.app.backend_loader.open_for_app`: export once into the cache, then open). The window
(offscreen, 1280x800, as in bench_pipeline) draws every Result.

* app: a feeder thread hands the worker a new 640x480 frame as soon as it took the last one (no frame
  dropped, the worker never waits), the window drawing every Result, per backend; the worker's
  predictor is swapped between backends without reloading, so all three are measured round by round
  (interleaved, shuffled) in one process and the ratio vs torch is paired within each round.
* bare: ``predictor.predict(frame)`` in a loop, same frames, same rounds.
* yardstick (issue 14's target: live VGG16-SE with every gate recorded >= 2.0x the frames/s of
  torchvision's VGG16, eager, NCHW): torchvision's ``vgg16()`` (no SE, nothing recorded, no fast path),
  same frames and preprocessing, in the same bare loop and rounds; every bare row's ratio to it.
* thumbnails under a runtime: the graph has no feature maps, so showing them would need a torch pass
  as well; the row "onnxruntime + torch pass" measures that price (bare loop doing both per frame).

Also reported: the one-off export (into the empty cache) and open times per backend. No targets: the
point is the side-by-side ratios (issue 14).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, guarded, parser, setup_torch, start  # noqa: E402

YARDSTICK = "torchvision VGG16 eager"


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224, help="model input (crop) size")
    p.add_argument(
        "--backends", default="torch,onnxruntime,openvino", help="comma-separated; torch is the reference"
    )
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="sevgg-bench-backends-"))
    os.environ["SEVGG_CACHE"] = str(tmp / "cache")  # before the export cache is first asked

    import torch
    from _gui import LiveFeed, open_bench_window, sample_frames, spin

    from sevgg_gui.app.backend_loader import open_for_app
    from sevgg_gui.checkpoints import save_checkpoint
    from sevgg_gui.training.models import build_model

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if backends[0] != "torch":
        backends = ["torch", *[b for b in backends if b != "torch"]]
    report = Report("Live pipeline per backend: torch vs onnxruntime vs OpenVINO", args)
    quick = args.quick
    size = 32 if quick else args.size
    torch.manual_seed(0)
    if quick:  # a slim 10-class model: the smoke run exports in seconds
        model = build_model("vgg16_se", 10, width=0.125)
        ckpt = save_checkpoint(model, tmp / "vgg16_se.pth", arch="vgg16_se", width=0.125, input_size=size)
    else:
        model = build_model("vgg16_se", 1000)
        ckpt = save_checkpoint(model, tmp / "vgg16_se.pth", arch="vgg16_se", input_size=size)
    del model

    predictors, infos, opened_s = {}, {}, {}
    for b in backends:
        t0 = time.perf_counter()
        pred, info = open_for_app(str(ckpt), b, device="cpu")
        opened_s[b] = time.perf_counter() - t0
        if info.backend != b:
            print(f"# {b}: {info.backend_note}; left out")
            pred.close()
            continue
        predictors[b], infos[b] = pred, info
    backends = list(predictors)
    for b in backends[1:]:  # a second open: what switching costs once the export is cached
        t0 = time.perf_counter()
        again, _ = open_for_app(str(ckpt), b, device="cpu")
        opened_s[f"{b} (cached)"] = time.perf_counter() - t0
        again.close()

    app, win = open_bench_window()
    worker = win.worker_thread.worker
    worker.set_predictor(predictors["torch"], infos["torch"])
    spin(lambda: win.model_info is not None and worker.idle, what="pipeline")
    frames = sample_frames()
    print(
        f"# {len(frames)} sample frames 640x480; model input {size}x{size}; checkpoint {ckpt.stat().st_size >> 20} MB"
    )

    live = LiveFeed(win, frames)

    def use(b: str) -> None:
        """Swap the worker's predictor (no reload, nothing closed) between frames."""
        pred = predictors[b]
        worker.submit(lambda: setattr(worker, "predictor", pred))
        spin(lambda: worker.predictor is pred and worker.idle, what="swap")

    def run_app(b: str, n: int) -> float:
        use(b)
        return live.fps(n)

    class TorchvisionEager:
        """torchvision's VGG16 as it comes: eager NCHW forward of the same preprocessed frame."""

        def __init__(self, preprocess) -> None:
            from torchvision.models import vgg16

            self.model = vgg16(num_classes=10 if quick else 1000).eval()
            self.preprocess = preprocess

        @torch.inference_mode()
        def predict(self, rgb) -> torch.Tensor:
            return self.model(self.preprocess(rgb).unsqueeze(0)).softmax(1)

    predictors[YARDSTICK] = TorchvisionEager(predictors["torch"].preprocess)

    def run_bare(b: str, n: int, with_torch: bool = False) -> float:
        pred, ref = predictors[b], predictors["torch"]
        t0 = time.perf_counter()
        for i in range(n):
            pred.predict(frames[i % len(frames)])
            if with_torch:
                ref.predict(frames[i % len(frames)])
        return n / (time.perf_counter() - t0)

    runtime = next((b for b in backends if b != "torch"), None)
    rows = [("app", b) for b in backends] + [("bare", b) for b in [*backends, YARDSTICK]]
    if runtime:
        rows.append(("bare+torch", runtime))
    n = 3 if quick else 6
    rounds = args.rounds or (1 if quick else 4)
    for _ in range(8):  # the torch Predictor's first calls time fused vs eager and keep the faster
        predictors["torch"].predict(frames[0])
    print(f"# torch CPU path: {getattr(predictors['torch'], 'fast_path_verdict', None)}")
    for kind, b in rows:  # warm-up: weights packed, primitives created, sessions' first runs
        run_app(b, 2) if kind == "app" else run_bare(b, 1, kind == "bare+torch")
    fps: dict[tuple[str, str], list[float]] = {r: [] for r in rows}
    for _ in range(rounds):
        order = random.sample(rows, len(rows))

        def one_round(order=order) -> dict:
            got = {}
            for kind, b in order:
                got[(kind, b)] = run_app(b, n) if kind == "app" else run_bare(b, n, kind == "bare+torch")
            return got

        got, _clean = guarded(one_round, retries=0 if quick else 2)
        for r, v in got.items():
            fps[r].append(v)

    def ratio(kind: str, b: str) -> float:
        ref = "app" if kind == "app" else "bare"
        return statistics.median(a / t for a, t in zip(fps[(kind, b)], fps[(ref, "torch")], strict=True))

    label = {
        "app": "app worker (window drawing)",
        "bare": "bare predict() loop",
        "bare+torch": "bare: + torch pass (thumbnails)",
    }
    report.print_table(
        ["backend", "path", "frames/s (median)", "vs torch (paired)"],
        [[b, label[k], f"{statistics.median(fps[(k, b)]):.2f}", ratio(k, b)] for k, b in rows],
        "throughput",
    )
    report.print_table(
        ["backend", "bare predict() loop vs torchvision VGG16 eager (paired)"],
        [
            [
                b,
                statistics.median(
                    a / t for a, t in zip(fps[("bare", b)], fps[("bare", YARDSTICK)], strict=True)
                ),
            ]
            for b in backends
        ],
        "yardstick",
    )
    report.print_table(
        ["backend", "open (s)"],
        [[b, f"{s:.1f}"] for b, s in opened_s.items()],
        "open",
    )
    print(
        "# open: torch builds the model; a runtime's first open exports into the empty cache; (cached): opened again"
    )
    win.close()
    app.processEvents()
    for b, pred in predictors.items():
        if b != YARDSTICK:
            pred.close()
    return report.finish()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown of Qt objects (not what is measured)
