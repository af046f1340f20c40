"""How a forward runs: torch (:class:`~sevgg_gui.inference.Predictor`) or onnxruntime (:class:`OnnxPredictor`).

A backend is anything with the Predictor's reading surface: ``predict(image) -> Result`` (and
``predict_batch``), ``block_names``, ``class_names``, ``preprocess``, ``device``, ``close()``, and a
``recorder`` with the torch recorder's intervention surface (``intervene`` / ``undo`` /
``clear_interventions`` / ``interventions``, ``blocks``, ``taps``, ``block_infos``; for an export,
:class:`~.interventions.RuntimeRecorder`). Views, ``sevgg diff`` and compare mode take a Result and
never ask which backend made it.
:func:`open_predictor` is the one place a model spec becomes such a predictor: ``.onnx`` files open in
onnxruntime, everything else through :func:`~sevgg_gui.zoo.load_model` and torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ONNX_SUFFIXES = (".onnx",)


@dataclass
class OpenedPredictor:
    """A ready predictor and what is known about where its model came from."""

    predictor: Any
    name: str  # the spec as the user gave it
    provenance: str
    warning: str | None = None
    sha256: str | None = None
    path: str | None = None
    prune_record: dict[str, Any] | None = None  # `sevgg prune` metadata: kept channels per block
    loaded: Any = None  # the zoo's LoadedModel (torch models only)

    @property
    def identity(self) -> tuple[str | None, str | None, dict[str, Any] | None]:
        return self.sha256, self.path, self.prune_record


def is_onnx_spec(spec: Any) -> bool:
    return isinstance(spec, str | Path) and Path(str(spec)).suffix.lower() in ONNX_SUFFIXES


def open_predictor(spec: str | Path | None, *, device: str = "auto", half: bool = False) -> OpenedPredictor:
    """A predictor for any spec the app and CLI accept, ``.onnx`` files included."""
    if is_onnx_spec(spec):
        from .onnx_runtime import OnnxPredictor

        pred = OnnxPredictor(str(spec))
        return OpenedPredictor(pred, str(spec), pred.provenance, path=str(spec))
    from ..inference import Predictor
    from ..zoo import load_model

    loaded = load_model(None if spec is None else str(spec))
    pred = Predictor(
        loaded.model, device=device, half=half, class_names=loaded.class_names, preprocess=loaded.preprocess()
    )
    info = loaded.info
    return OpenedPredictor(
        pred,
        str(spec) if spec is not None else "default VGG16-SE",
        str(loaded.provenance),
        loaded.warning,
        info.sha256 if info else None,
        info.path if info else None,
        getattr(loaded.model, "prune_record", None),
        loaded,
    )


def as_predictor(x: Any, *, device: str = "auto") -> tuple[Any, tuple, str]:
    """(predictor, (sha256, path, prune record), name) for a spec, a LoadedModel or a ready predictor."""
    if x is None or isinstance(x, str | Path):
        opened = open_predictor(x, device=device)
        return opened.predictor, opened.identity, opened.name
    if isinstance(x, OpenedPredictor):
        return x.predictor, x.identity, x.name
    from ..zoo import LoadedModel

    if isinstance(x, LoadedModel):
        from ..inference import Predictor

        pred = Predictor(x.model, device=device, class_names=x.class_names, preprocess=x.preprocess())
        info = x.info
        ident = (
            info.sha256 if info else None,
            info.path if info else None,
            getattr(x.model, "prune_record", None),
        )
        return pred, ident, str(x.provenance)
    model = getattr(x, "model", None)
    ident = (getattr(x, "sha256", None), getattr(x, "path", None), getattr(model, "prune_record", None))
    return (
        x,
        ident,
        str(getattr(model, "provenance", None) or getattr(x, "provenance", None) or type(x).__name__),
    )
