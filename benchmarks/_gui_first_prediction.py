"""Probe for bench_startup.py: run ``sevgg-gui`` headless on one sample and print stage timestamps.

Prints one JSON line: wall-clock (``time.time()``) instants of interpreter start (this file's first
line), imports done, window shown, model loaded (the worker installs its Predictor), the first
``draw_result`` finished, and exit. The parent subtracts its own spawn instant.
"""

import time

T_START = time.time()

import json  # noqa: E402
import sys  # noqa: E402


def prototype_lazy_startup() -> None:
    """What-if for the start-up proposals (not shipped). Three things on the way to the first
    prediction each import torch._dynamo (~1 s on this machine): (1) building a checkpoint's model
    on the meta device runs the weight init (``kaiming_normal_`` on meta tensors goes through
    torch._refs); (2) recorder.py imports torchvision at import time, whose ops import torch._dynamo;
    (3) the model panel's cost table (analysis.model_cost) runs a meta forward whose
    ``adaptive_avg_pool2d`` decomposes through torch._refs. The prototype skips the init on meta,
    blocks torchvision (as if recorder.py registered torchvision's SqueezeExcitation lazily), and
    leaves the cost table out (as if computed after the first frame). Only valid for a VGG16-SE
    checkpoint, which needs no torchvision module."""
    import importlib.abc
    import importlib.machinery
    import importlib.util

    def patch_vgg(vgg) -> None:
        orig_init = vgg.VGGSE._init_weights

        def init_weights(self) -> None:
            if not next(self.parameters()).is_meta:
                orig_init(self)

        vgg.VGGSE._init_weights = init_weights

    def patch_analysis(analysis) -> None:
        def deferred_cost(*_a, **_k):
            raise RuntimeError("cost table deferred by the start-up prototype")

        analysis.model_cost = deferred_cost

    patches = {"sevgg_gui.models.vgg": patch_vgg, "sevgg_gui.analysis": patch_analysis}

    class Blocked(importlib.abc.Loader):
        def create_module(self, spec):
            raise ImportError(f"{spec.name} is not imported at start-up in this prototype")

        def exec_module(self, module) -> None:  # pragma: no cover - create_module raised
            raise ImportError(module.__name__)

    class Patching(importlib.abc.Loader):
        def __init__(self, real, patch) -> None:
            self.real, self.patch = real, patch

        def create_module(self, spec):
            return self.real.create_module(spec)

        def exec_module(self, module) -> None:
            self.real.exec_module(module)
            self.patch(module)

    class Finder(importlib.abc.MetaPathFinder):
        """torchvision: found (importlib.util.find_spec works) but not importable; the patched
        modules: imported as usual (same order as the real app), then patched."""

        def find_spec(self, name, path, target=None):
            blocked = name == "torchvision" or name.startswith("torchvision.")
            if not blocked and name not in patches:
                return None
            real = importlib.machinery.PathFinder.find_spec(name, path)
            if real is None:
                return None
            if blocked:
                return importlib.util.spec_from_file_location(
                    name,
                    real.origin,
                    loader=Blocked(),
                    submodule_search_locations=real.submodule_search_locations,
                )
            real.loader = Patching(real.loader, patches[name])
            return real

    sys.meta_path.insert(0, Finder())


def main() -> int:
    stamps: dict[str, float] = {"start": T_START}
    if "--prototype-lazy" in sys.argv:
        sys.argv.remove("--prototype-lazy")
        prototype_lazy_startup()
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
