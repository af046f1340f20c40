"""Export a torch model spec to ONNX once, and open it with the backend asked for.

``--backend onnxruntime|openvino`` on a checkpoint (or ``pretrained:...`` / ``vgg16:...``) runs the
export ``sevgg export --with-excitations`` would write, so every attention gate is a graph output and
the Result carries the same block names as torch's. The file is kept in the user's cache folder
(``$SEVGG_CACHE``, else ``$XDG_CACHE_HOME/sevgg_gui/exports``, else ``~/.cache/sevgg_gui/exports``)
under a key made of the checkpoint's sha256 (the spec string for specs that are not files), the
exporter's version (:data:`EXPORTER_VERSION` and torch's) and the opset: a changed checkpoint or
exporter gets a new entry, an unchanged one is opened without exporting again. (Version 2 added the
gates found by behaviour and the intervention inputs: entries of version 1, which cannot intervene,
are simply no longer looked up.)

A cached file that no longer opens (truncated, overwritten) is exported again, once. A model that
cannot be exported or run by the runtime falls back to torch with one line saying why.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import OpenedPredictor, is_onnx_spec, open_predictor

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
# Bump when export_onnx writes a different graph for the same model (new outputs, other pooling...).
EXPORTER_VERSION = 2  # 2: behaviour-found gates and per-gate intervention inputs
Log = Callable[[str], None]


def cache_dir() -> Path:
    """Where exports are kept: ``$SEVGG_CACHE`` (tests), else the XDG cache folder."""
    env = os.environ.get("SEVGG_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sevgg_gui" / "exports"


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(spec: str, *, opset: int, input_size: int | None = None) -> dict[str, Any]:
    """What an export depends on: the weights (sha256 of the file, or the spec string), the exporter
    (ours and torch's version), the opset and an explicit input size."""
    import torch

    p = Path(spec).expanduser()
    source = {"sha256": file_sha256(p)} if p.is_file() else {"spec": spec}
    return {
        **source,
        "exporter": EXPORTER_VERSION,
        "torch": torch.__version__,
        "opset": int(opset),
        "input_size": input_size,
        "with_excitations": True,
    }


def cache_path(spec: str, *, opset: int | None = None, input_size: int | None = None) -> Path:
    """The cache entry for ``spec`` (which may not exist yet)."""
    from ..deploy.onnx_export import DEFAULT_OPSET

    key = cache_key(spec, opset=opset or DEFAULT_OPSET, input_size=input_size)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(spec).stem)[:40] or "model"
    return cache_dir() / f"{stem}-{digest}.onnx"


def cached_export(
    spec: str, *, opset: int | None = None, input_size: int | None = None, rebuild: bool = False
) -> Path:
    """The cached ``--with-excitations`` export of ``spec``, exported now when missing (or ``rebuild``).

    Written atomically (the exporter writes a temporary file and renames it), with a JSON note beside
    it saying what it was made from and what the spec warned about (e.g. random weights).
    """
    from ..deploy.onnx_export import DEFAULT_OPSET, export_spec

    opset = opset or DEFAULT_OPSET
    path = cache_path(spec, opset=opset, input_size=input_size)
    if path.is_file() and not rebuild:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # check=False: the exporter's own onnxruntime comparison costs several forwards; the runtimes
    # are compared with torch in tests/test_backends.py instead.
    report = export_spec(spec, path, with_excitations=True, opset=opset, input_size=input_size, check=False)
    note = {
        **cache_key(spec, opset=opset, input_size=input_size),
        "source": spec,
        "outputs": report.output_names,
        "warnings": list(report.warnings),
    }
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.json")
    tmp.write_text(json.dumps(note, indent=2))
    os.replace(tmp, path.with_suffix(".json"))
    return path


def _note(path: Path) -> dict[str, Any]:
    try:
        note = json.loads(path.with_suffix(".json").read_text())
        return note if isinstance(note, dict) else {}
    except (OSError, ValueError):
        return {}


def _runtime_predictor(path: Path, backend: str) -> Any:
    if backend == "openvino":
        from .openvino_runtime import OpenVinoPredictor

        return OpenVinoPredictor(path)
    from .onnx_runtime import OnnxPredictor

    return OnnxPredictor(path)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def open_backend(
    spec: str | Path | None,
    backend: str = "torch",
    *,
    device: str = "auto",
    half: bool = False,
    log: Log | None = None,
) -> OpenedPredictor:
    """A predictor for ``spec`` on ``backend``; torch (with one line to ``log``) when the export or
    the runtime fails. An ``.onnx`` spec opens in the runtime asked for (onnxruntime for ``torch``).
    A cache hit opens the runtime alone: the torch model is only built to export it or to fall back."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    if is_onnx_spec(spec):
        if backend != "openvino":
            return open_predictor(spec, device=device, half=half)
        pred = _runtime_predictor(Path(str(spec)), backend)
        return OpenedPredictor(pred, str(spec), pred.provenance, path=str(spec))
    if backend == "torch":
        return open_predictor(spec, device=device, half=half)
    say = log or (lambda line: None)
    if spec is None:
        say(f"{backend} backend needs a model file or spec (--checkpoint); the default model runs in torch")
        return open_predictor(None, device=device, half=half)
    name = str(spec)
    try:
        path = cache_path(name)
        if not path.is_file():
            cached_export(name)
        try:
            pred = _runtime_predictor(path, backend)
        except Exception as first:  # noqa: BLE001 - a corrupt cache entry: export it again, once
            say(f"cached export {path.name} did not open ({_reason(first)}); exporting it again")
            cached_export(name, rebuild=True)
            pred = _runtime_predictor(path, backend)
    except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure: torch still works
        opened = open_predictor(spec, device=device, half=half)  # a bad spec raises its own error here
        say(f"{backend} backend unavailable for {name} ({_reason(exc)}); using torch")
        return opened
    note = _note(path)
    warnings = [str(w) for w in note.get("warnings", []) if w]
    is_file = Path(name).expanduser().is_file()
    return OpenedPredictor(
        pred,
        name,
        f"{Path(name).name if is_file else name} exported for {backend} ({path.name} in {path.parent})",
        warnings[0] if warnings else None,
        note.get("sha256"),
        name if is_file else None,
    )
