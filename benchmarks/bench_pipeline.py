"""The live pipeline in the real window (offscreen): worker throughput, end-to-end latency, UI stalls,
and the cost of drawing one Result.

Set-up: ``MainWindow(load_model=False)`` shown offscreen, with the app's default Predictor (VGG16-SE,
recorder on every block, maps for the block on screen) installed in its worker thread, exactly as
``tests/app`` do. Frames are 640x480 RGB camera-sized pictures made from the bundled samples.

* throughput: a feeder thread hands the worker a new frame as soon as it took the last one (no frame
  dropped, the worker never waits), while the window draws every Result; vs a bare loop
  ``predictor.predict(frame)`` over the same frames on the same model. Rounds interleave the two.
* latency: a simulated 30 fps camera (a new frame every 33 ms, latest-wins, drops counted); capture
  timestamp -> end of ``draw_result`` (the charts' data set), median and p95.
* UI stalls: a 5 ms timer probe on the UI thread during the latency run; longest gap minus 5 ms.
* drawing: ``MainWindow.draw_result(result)`` alone (5 charts with 1,472 bars, top-5, thumbnails,
  input frame, HUD), and with the repaint it triggers (``processEvents``), per frame.

Targets (full run): throughput >= 0.9x the bare loop; longest UI stall <= 50 ms; draw_result <= 8 ms.
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


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224, help="model input (crop) size")
    args = p.parse_args()
    start(args)
    setup_torch(args.threads)
    import torch
    from _gui import LiveFeed, open_bench_window, pct, sample_frames, spin
    from _reference import fast_build, ours_vgg16_se
    from PySide6.QtCore import Qt, QTimer

    from sevgg_gui.app.worker import describe_model
    from sevgg_gui.images import Preprocess
    from sevgg_gui.inference import Predictor

    report = Report("Live pipeline: worker throughput, latency, UI stalls, drawing", args)
    quick = args.quick
    size = 48 if quick else args.size
    app, win = open_bench_window()
    torch.manual_seed(0)
    model = (fast_build(ours_vgg16_se) if quick else ours_vgg16_se()).eval()
    prep = Preprocess(crop_size=size, resize_size=round(size * 256 / 224))
    predictor = Predictor(
        model, device="cpu", class_names=[f"class {i}" for i in range(1000)], preprocess=prep
    )
    worker = win.worker_thread.worker
    worker.set_predictor(predictor, describe_model(predictor))

    spin(lambda: win.model_info is not None and worker.idle, what="pipeline")
    frames = sample_frames()
    print(
        f"# {len(frames)} sample frames 640x480; model input {size}x{size}; predictor fused={predictor.fused}"
    )

    live = LiveFeed(win, frames)
    frame = live.frame

    # ---------------------------------------------------------------- throughput
    def run_app(n: int) -> float:
        """Frames per second through the worker (lossless feeding), the window drawing every Result."""
        return live.fps(n)

    def run_bare(n: int) -> float:
        start_t = time.perf_counter()
        for i in range(n):
            predictor.predict(frames[i % len(frames)])
        return n / (time.perf_counter() - start_t)

    n = 3 if quick else 8
    rounds = args.rounds or (1 if quick else 6)
    run_app(2)  # warm-up: first calls pack weights, create oneDNN primitives
    run_bare(2)
    app_fps, bare_fps = [], []
    for r in range(rounds):

        def pair(r=r) -> tuple[float, float]:
            if r % 2 == 0:
                a = run_app(n)
                return a, run_bare(n)
            b = run_bare(n)
            return run_app(n), b

        (a, b), _clean = guarded(pair, retries=0 if quick else 3)
        app_fps.append(a)
        bare_fps.append(b)
    ratio = statistics.median(a / b for a, b in zip(app_fps, bare_fps, strict=True))
    report.print_table(
        ["path", "frames/s (median)", "ratio"],
        [
            ["app worker (window drawing)", f"{statistics.median(app_fps):.2f}", ratio],
            ["bare predict() loop", f"{statistics.median(bare_fps):.2f}", 1.0],
        ],
        "throughput",
    )
    report.target("worker fps / bare loop fps", ratio, 0.9, kind=">=")

    # ---------------------------------------------------------------- latency + UI stalls
    latencies: list[float] = []
    ticks: list[float] = []

    def on_drawn(_n: int) -> None:
        lat = getattr(win, "last_latency_ms", float("nan"))
        if lat == lat:
            latencies.append(lat)

    win.resultDrawn.connect(on_drawn)
    probe = QTimer(interval=5)
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))
    camera_frames = 4 if quick else 25
    stop = threading.Event()
    dropped0 = [win.frames.dropped]

    def camera() -> None:
        i, period = 0, 1 / 30
        t_next = time.perf_counter()
        while not stop.is_set():
            win.frames.put(frame(10_000 + i))
            i += 1
            t_next += period
            time.sleep(max(0.0, t_next - time.perf_counter()))

    def live_run() -> None:
        dropped0[0] = win.frames.dropped
        latencies.clear()
        ticks.clear()
        stop.clear()
        probe.start()
        cam = threading.Thread(target=camera)
        cam.start()
        spin(lambda: len(latencies) >= camera_frames, timeout=600, what="pipeline")
        stop.set()
        cam.join()
        probe.stop()
        spin(lambda: worker.idle and not win._draw_scheduled, what="pipeline")

    guarded(live_run, retries=0 if quick else 2)
    gaps = [(b - a) * 1e3 for a, b in zip(ticks, ticks[1:], strict=False)]
    stall = max(gaps) - 5 if gaps else float("nan")
    report.print_table(
        ["end-to-end latency (30 fps camera)", "ms"],
        [
            ["median", f"{statistics.median(latencies):.1f}"],
            ["p95", f"{pct(latencies, 0.95):.1f}"],
            ["frames drawn / dropped", f"{len(latencies)} / {win.frames.dropped - dropped0[0]}"],
            ["UI timer probe: longest stall", f"{stall:.1f}"],
            ["UI timer probe: p99 gap - 5 ms", f"{pct(gaps, 0.99) - 5:.1f}" if gaps else "—"],
        ],
        "latency",
    )
    report.target("UI longest stall (ms)", stall, 50)

    # ---------------------------------------------------------------- drawing
    results = [predictor.predict(f) for f in frames]
    for r in results:
        r.meta.update(crop_box=prep.crop_box(480, 640), captured_at=time.perf_counter())
    draws, paints = [], []
    reps = 4 if quick else 40

    def draw_run() -> None:
        draws.clear()
        paints.clear()
        for i in range(reps):
            r = results[i % len(results)]
            t0 = time.perf_counter()
            win.draw_result(r)
            t1 = time.perf_counter()
            app.processEvents()
            t2 = time.perf_counter()
            draws.append((t1 - t0) * 1e3)
            paints.append((t2 - t0) * 1e3)

    guarded(draw_run, retries=0 if quick else 3)
    bars = sum(c.channels for c in win.charts.charts)
    report.print_table(
        ["drawing one Result", "median ms", "p95 ms"],
        [
            [
                f"draw_result ({len(win.charts.charts)} charts, {bars} bars)",
                statistics.median(draws),
                pct(draws, 0.95),
            ],
            ["draw_result + repaint", statistics.median(paints), pct(paints, 0.95)],
        ],
        "drawing",
    )
    report.target("draw_result median (ms)", statistics.median(draws), 8)
    win.close()
    app.processEvents()
    return report.finish()


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # skip interpreter teardown of Qt objects (not what is measured)
