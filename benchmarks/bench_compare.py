"""Compare mode in the real window (offscreen): frames/s with model B beside A vs the two models run one
after the other, UI stalls while comparing, and the cost of drawing one compared Result.

Set-up: ``MainWindow(load_model=False)`` shown offscreen; A = the app's default VGG16-SE Predictor (as
in bench_pipeline), B installed as compare mode's B on the worker thread: ``--b vgg16_se`` (default) a
second, independently initialised VGG16-SE ("two seeds": all five blocks pair, 1,472 channels drawn
mirrored, the heaviest drawing), or ``--b mobilenet`` MobileNetV3-Small (Google's trained weights from
../shared when present, else torchvision's random init; nothing pairs with VGG16-SE).
Frames are 640x480 pictures made from the bundled samples; each model preprocesses for itself.

* throughput: a feeder thread hands the worker a new frame as soon as it took the last one, the window
  draws every Result (top-5 of both, mirrored charts of the paired blocks, HUD); vs the sum of the
  two single-model latencies (each model alone over the same frames) and vs a bare loop
  ``a.predict(frame); b.predict(frame)``. Each round measures all four, in alternating order.
* UI stalls: a 5 ms timer probe on the UI thread while a simulated 30 fps camera feeds compare mode.
* drawing: ``draw_result`` of a compared Result (charts + compare view).

Targets (full run): compare-mode fps >= 0.9x 1 / (A's latency + B's latency), each model timed alone in
the same round; longest UI stall <= 50 ms. The back-to-back loop is reported beside it.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Report, guarded, parser, setup_torch, start  # noqa: E402

MOBILENET = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "weights"
    / "mobilenet_v3_small-tfslim_uint8-distilled.pth"
)


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224, help="model input (crop) size of both models")
    p.add_argument("--b", choices=["vgg16_se", "mobilenet"], default="vgg16_se", help="model B")
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)
    import torch
    import torchvision
    from _gui import open_bench_window, pct, sample_frames, spin
    from _reference import fast_build, ours_vgg16_se
    from PySide6.QtCore import QObject, Qt, QTimer, Signal

    from sevgg_gui.app.worker import describe_model
    from sevgg_gui.images import Preprocess
    from sevgg_gui.inference import Predictor

    report = Report("Compare mode: two models per frame in the window vs the pair run back to back", args)
    quick = args.quick
    size = 48 if quick else args.size
    app, win = open_bench_window()
    torch.manual_seed(0)
    model_a = (fast_build(ours_vgg16_se) if quick else ours_vgg16_se()).eval()
    prep = Preprocess(crop_size=size, resize_size=round(size * 256 / 224))
    names = [f"class {i}" for i in range(1000)]
    a = Predictor(model_a, device="cpu", class_names=names, preprocess=prep)
    if args.b == "mobilenet":
        model_b = torchvision.models.mobilenet_v3_small()
        b_name, b_from = "MobileNetV3-Small", "random init"
        if MOBILENET.is_file() and not quick:
            model_b.load_state_dict(torch.load(MOBILENET, weights_only=True))
            b_from = MOBILENET.name
    else:
        torch.manual_seed(1)
        model_b = fast_build(ours_vgg16_se) if quick else ours_vgg16_se()
        b_name, b_from = "VGG16-SE", "another seed"
    b = Predictor(model_b.eval(), device="cpu", class_names=names, preprocess=prep)
    worker = win.worker_thread.worker
    worker.set_predictor(a, describe_model(a))
    worker.submit(lambda: win.compare.slot.install(b, b_name, f"{b_name} ({b_from})"))

    spin(lambda: win.model_info is not None and win.compare.active and worker.idle, what="compare pipeline")
    frames = sample_frames()
    print(
        f"# {len(frames)} sample frames 640x480; both models at {size}x{size}; A VGG16-SE, B {b_name} ({b_from})"
    )

    class Counter(QObject):
        hit = Signal()

        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.compared = 0
            self.t_last = 0.0

        def on_result(self, r) -> None:
            self.n += 1
            self.compared += "compare" in r.meta
            self.t_last = time.perf_counter()

    counter = Counter()
    worker.resultReady.connect(counter.on_result, Qt.ConnectionType.QueuedConnection)
    from sevgg_gui.sources import Frame

    def frame(i: int) -> Frame:
        return Frame(
            rgb=frames[i % len(frames)],
            index=i,
            timestamp=time.perf_counter(),
            origin="bench",
            capture_ms=0.0,
        )

    # ---------------------------------------------------------------- throughput
    def run_app(n: int) -> float:
        counter.n = 0
        start_t = time.perf_counter()

        def feed() -> None:
            for i in range(n):
                win.frames.wait_empty()
                win.frames.put(frame(i))

        th = threading.Thread(target=feed)
        th.start()
        spin(lambda: counter.n >= n, what="compare pipeline")
        th.join()
        elapsed = counter.t_last - start_t
        spin(lambda: worker.idle and not win._draw_scheduled, what="compare pipeline")
        return n / elapsed

    def run_pair(n: int) -> float:
        start_t = time.perf_counter()
        for i in range(n):
            a.predict(frames[i % len(frames)])
            b.predict(frames[i % len(frames)])
        return n / (time.perf_counter() - start_t)

    def run_one(p, n: int) -> float:
        """Seconds per frame of one model alone (its single-model latency)."""
        start_t = time.perf_counter()
        for i in range(n):
            p.predict(frames[i % len(frames)])
        return (time.perf_counter() - start_t) / n

    n = 3 if quick else 8
    rounds = args.rounds or (1 if quick else 6)
    run_app(2)  # warm-up: packed weights, oneDNN primitives, the compare view's charts
    run_pair(2)
    app_fps, pair_fps, sum_fps, t_as, t_bs = [], [], [], [], []
    for r in range(rounds):

        def one_round(r=r) -> tuple[float, float, float, float]:
            # The four measurements of a round, in an order that alternates between rounds.
            out: dict[str, float] = {}
            steps = [
                ("app", lambda: run_app(n)),
                ("pair", lambda: run_pair(n)),
                ("a", lambda: run_one(a, n)),
                ("b", lambda: run_one(b, n)),
            ]
            for name, fn in steps if r % 2 == 0 else steps[::-1]:
                out[name] = fn()
            return out["app"], out["pair"], out["a"], out["b"]

        (x, y, ta, tb), _clean = guarded(one_round, retries=0 if quick else 3)
        app_fps.append(x)
        pair_fps.append(y)
        t_as.append(ta)
        t_bs.append(tb)
        sum_fps.append(1.0 / (ta + tb))
    ratio = statistics.median(x / y for x, y in zip(app_fps, sum_fps, strict=True))
    ratio_pair = statistics.median(x / y for x, y in zip(app_fps, pair_fps, strict=True))
    t_a, t_b = statistics.median(t_as) * 1e3, statistics.median(t_bs) * 1e3
    report.print_table(
        ["path", "frames/s (median)", "compare mode / this (paired rounds)"],
        [
            [
                "compare mode in the window (A + B + similarity + drawing)",
                f"{statistics.median(app_fps):.2f}",
                1.0,
            ],
            [
                f"1 / (A alone {t_a:.1f} ms + B alone {t_b:.1f} ms)",
                f"{statistics.median(sum_fps):.2f}",
                ratio,
            ],
            ["bare loop: A.predict then B.predict", f"{statistics.median(pair_fps):.2f}", ratio_pair],
        ],
        "throughput",
    )
    report.target("compare fps / 1/(tA + tB)", ratio, 0.9, kind=">=")
    assert counter.compared > 0, "compare mode produced no compared Result"

    # ---------------------------------------------------------------- UI stalls
    ticks: list[float] = []
    drawn: list[int] = []
    win.resultDrawn.connect(lambda k: drawn.append(k))
    probe = QTimer(interval=5)
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    camera_frames = 4 if quick else 25
    stop = threading.Event()

    def camera() -> None:
        i, period = 0, 1 / 30
        t_next = time.perf_counter()
        while not stop.is_set():
            win.frames.put(frame(10_000 + i))
            i += 1
            t_next += period
            time.sleep(max(0.0, t_next - time.perf_counter()))

    def live_run() -> None:
        drawn.clear()
        ticks.clear()
        stop.clear()
        probe.start()
        cam = threading.Thread(target=camera)
        cam.start()
        spin(lambda: len(drawn) >= camera_frames, timeout=600, what="compare pipeline")
        stop.set()
        cam.join()
        probe.stop()
        spin(lambda: worker.idle and not win._draw_scheduled, what="compare pipeline")

    guarded(live_run, retries=0 if quick else 2)
    live_drawn = len(drawn)  # before the drawing phase below, whose draws emit resultDrawn too
    gaps = [(y - x) * 1e3 for x, y in zip(ticks, ticks[1:], strict=False)]
    stall = max(gaps) - 5 if gaps else float("nan")

    # ---------------------------------------------------------------- drawing
    last = win.last_result
    draws = []
    for _ in range(4 if quick else 40):
        t0 = time.perf_counter()
        win.draw_result(last)
        draws.append((time.perf_counter() - t0) * 1e3)
        app.processEvents()
    win.compare.view.set_mode("diff")
    diff_draws = []
    for _ in range(4 if quick else 40):
        t0 = time.perf_counter()
        win.draw_result(last)
        diff_draws.append((time.perf_counter() - t0) * 1e3)
        app.processEvents()
    cmp = last.meta.get("compare")
    report.print_table(
        ["compare mode, 30 fps camera", "value"],
        [
            ["frames drawn", f"{live_drawn}"],
            ["paired blocks / unpaired", f"{len(cmp.blocks)} / {len(cmp.unpaired)}" if cmp else "—"],
            ["UI timer probe: longest stall (ms)", f"{stall:.1f}"],
            ["UI timer probe: p99 gap - 5 ms", f"{pct(gaps, 0.99) - 5:.1f}" if gaps else "—"],
            ["draw_result of a compared Result, median ms", f"{statistics.median(draws):.2f}"],
            ["  the same in the B − A view, median ms", f"{statistics.median(diff_draws):.2f}"],
        ],
        "ui",
    )
    report.target("UI longest stall (ms)", stall, 50)
    win.close()
    app.processEvents()
    return report.finish()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown of Qt objects (not what is measured)
