"""Probe for bench_startup.py: run ``sevgg-gui`` headless on one sample and print stage timestamps.

Prints one JSON line: wall-clock (``time.time()``) instants of interpreter start (this file's first
line), imports done, window shown, model loaded (the worker installs its Predictor), the first
``draw_result`` finished, and exit. The parent subtracts its own spawn instant.
"""

import time

T_START = time.time()

import json  # noqa: E402
import sys  # noqa: E402


def main() -> int:
    stamps: dict[str, float] = {"start": T_START}
    from sevgg_gui.app import main as app_main
    from sevgg_gui.app import window, worker

    stamps["imports"] = time.time()
    win_cls, worker_cls = window.MainWindow, worker.InferenceWorker
    orig_draw, orig_show, orig_install = win_cls.draw_result, win_cls.show, worker_cls._install

    def draw_result(self, result) -> None:
        orig_draw(self, result)
        stamps.setdefault("first_draw", time.time())
        stamps.setdefault("model_ms", result.timings.get("model", float("nan")))

    def install(self, predictor, info) -> None:  # worker thread: model built, Predictor ready
        stamps.setdefault("model_loaded", time.time())
        orig_install(self, predictor, info)

    def show(self) -> None:
        orig_show(self)
        stamps.setdefault("window_shown", time.time())

    win_cls.draw_result, win_cls.show, worker_cls._install = draw_result, show, install
    code = app_main.main(sys.argv[1:])
    stamps["exit"] = time.time()
    print(json.dumps(stamps), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
