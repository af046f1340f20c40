"""Worker side of Model → Backend: open the current model spec in onnxruntime or OpenVINO for the app.

:func:`~sevgg_gui.backends.export_cache.open_backend` exports the model once into the cache and opens
the runtime (or falls back to torch with one line). Exporting can take from seconds to a minute, so
:func:`start_runtime_load` runs it on a helper thread while the worker keeps classifying frames with
the current model; the ready predictor is then handed to the worker as a command, and installed only
if no newer load was asked for meanwhile. No Qt widgets here: the menu is ``backend_menu.py``.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .worker import ModelInfo, _one_line, build_predictor, can_intervene, describe_model

if TYPE_CHECKING:  # pragma: no cover
    from .worker import InferenceWorker

RUNTIME_LIMITS = (
    "{runtime} runs an exported graph: every gate and the top-5, but no squeezes, feature maps, class "
    "evidence or cost table (they need the torch backend)"
)


def open_for_app(
    spec: str | None,
    backend: str,
    *,
    device: str = "auto",
    half: bool = False,
    model_code: str | None = None,
) -> tuple[Any, ModelInfo]:
    """(predictor, ModelInfo) for ``spec`` on ``backend``; ``info.backend`` says what actually runs and
    ``info.backend_note`` why, when that is torch after all (one line)."""
    if backend == "torch":
        return build_predictor(spec, device=device, half=half, with_cost=False)
    if model_code:  # the exporter cache keys model specs; the user's code stays in torch
        predictor, info = build_predictor(
            spec, device=device, half=half, with_cost=False, model_code=model_code
        )
        info.backend_note = (
            f"{backend} backend runs model specs, not model code; {Path(model_code).name} runs in torch"
        )
        return predictor, info
    from ..backends.export_cache import open_backend

    lines: list[str] = []
    opened = open_backend(spec, backend, device=device, half=half, log=lines.append)
    predictor = opened.predictor
    if getattr(predictor, "model", None) is not None:  # the torch fallback
        info = describe_model(predictor, opened.loaded, with_cost=False)
    else:
        info = describe_runtime(opened)
    info.backend_note = "; ".join(lines)
    return predictor, info


def describe_runtime(opened: Any) -> ModelInfo:
    """What the views need about an exported graph run by a runtime: its gate and map outputs stand in
    for the recorder's blocks (same block names as torch's)."""
    pred = opened.predictor
    runtime = str(getattr(pred, "runtime", "runtime"))
    size = pred.preprocess.crop_size
    gates = [(b, c) for b, c in pred.gate_blocks]
    if any(c is None for _b, c in gates):  # channels not static in the graph: one blank frame tells
        probe = pred.predict(np.zeros((size, size, 3), np.uint8)).excitations
        gates = [(b, c if c is not None else int(probe[b].size)) for b, c in gates]
    maps = [o.block for o in pred.layout if o.kind == "map"]
    attention = [_listed(b, "channel gate", c) for b, c in gates] + [_listed(b, "spatial map") for b in maps]
    return ModelInfo(
        name=f"{Path(opened.name).name} (exported graph)",
        provenance=opened.provenance,
        num_classes=len(pred.class_names),
        blocks=[(b, int(c)) for b, c in gates],
        spatial_blocks=maps,
        attention=attention,
        device=str(pred.device),
        half=False,
        warning=opened.warning,
        checkpoint=opened.path,
        sha256=opened.sha256,
        notes=[RUNTIME_LIMITS.format(runtime=runtime), f"input {size}x{size}"],
        preprocess=pred.preprocess,
        class_names=list(pred.class_names),
        backend=runtime,
        interventions=can_intervene(pred),
    )


def _listed(name: str, kind: str, channels: int | None = None) -> dict[str, Any]:
    """A model-panel row (``AttentionBlock.describe()``'s keys) for a graph output."""
    return {
        "name": name,
        "kind": kind,
        "channels": channels,
        "found_by": "graph output",
        "note": "",
        "recorded": True,
    }


def start_runtime_load(
    worker: InferenceWorker, spec: str | None, device: str, half: bool, model_code: str | None
) -> threading.Thread:
    """Open ``spec`` on ``worker.backend`` off the worker thread; the result is installed by the worker
    (between frames) unless a newer load was asked for, in which case it is closed unused."""
    generation, backend = worker.load_generation, worker.backend

    def work() -> None:
        try:
            predictor, info = open_for_app(spec, backend, device=device, half=half, model_code=model_code)
        except Exception as exc:  # a bad spec: one line, the current model keeps running
            if worker.load_generation == generation:
                with contextlib.suppress(RuntimeError):  # the worker object is gone (window closed)
                    worker.modelFailed.emit(_one_line(exc))
            return

        def install() -> None:
            if worker.load_generation == generation:
                worker._install(predictor, info)
            else:
                predictor.close()

        worker.submit(install)

    thread = threading.Thread(target=work, name=f"open-{backend}", daemon=True)
    thread.start()
    return thread
