"""``--model-code FILE.py:FUNCTION`` (or ``package.module:FUNCTION``): the user's own code builds the
architecture; ``-c WEIGHTS`` then loads a state dict into it.

This is the one place where sevgg_gui runs code it did not ship, and only because the user named it;
checkpoints are still read as data only (``weights_only=True`` / safetensors). Every failure is one
line: a missing file or function, an exception in the user's code (with its file:line), a result that
is not an ``nn.Module``, weights that do not fit it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from ..checkpoints import CheckpointInfo, read_state_dict, sha256_file
from . import fit
from .loaded import LoadedModel, ModelSpecError

USAGE = "--model-code wants FILE.py:FUNCTION or package.module:FUNCTION"


def parse(code: str) -> tuple[str, str]:
    """``models/net.py:build`` -> (``models/net.py``, ``build``); the last colon splits, so a Windows
    drive letter stays with the path."""
    target, sep, func = code.rpartition(":")
    if not sep or not target or not func.isidentifier():
        raise ModelSpecError(f"{code}: {USAGE}")
    return target, func


def _is_path(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or "/" in target or Path(target).exists()


def _where(exc: BaseException, files: set[str]) -> str:
    """``file:line`` of the deepest frame in the user's files (else the deepest frame at all)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_show(exc.filename)}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if os.path.realpath(f.filename) in files]
    frame = (mine or frames or [None])[-1]
    return f"{_show(frame.filename)}:{frame.lineno}" if frame else "?"


def _show(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return rel if not rel.startswith("..") else filename


def _failure(what: str, exc: BaseException, files: set[str]) -> ModelSpecError:
    msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    detail = exc.msg if isinstance(exc, SyntaxError) else msg
    kind = type(exc).__name__
    return ModelSpecError(f"{what} failed at {_where(exc, files)}: {kind}{': ' + detail if detail else ''}")


def import_target(target: str, code: str) -> tuple[ModuleType, set[str]]:
    """Import the user's file or module; returns it and the real paths counted as the user's files."""
    if _is_path(target):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"{code}: no such file {path}")
        real = os.path.realpath(path)
        digest = hashlib.sha1(real.encode()).hexdigest()[:10]
        name = f"sevgg_user_model_{path.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(name, real)
        if spec is None or spec.loader is None:
            raise ModelSpecError(f"{code}: {path} cannot be imported as Python")
        module = importlib.util.module_from_spec(spec)
        folder = str(Path(real).parent)
        sys.path.insert(0, folder)  # its sibling modules import as they do when the user runs it
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # sys.exit() in it must not end the app's worker
            sys.modules.pop(name, None)
            raise _failure(f"importing {path.name}", exc, {real}) from None
        finally:
            if folder in sys.path:
                sys.path.remove(folder)
        return module, {real}
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise ModelSpecError(f"{code}: no module named {exc.name!r} (not on sys.path)") from None
        raise _failure(f"importing {target}", exc, set()) from None
    except (Exception, SystemExit) as exc:
        raise _failure(f"importing {target}", exc, set()) from None
    real = os.path.realpath(module.__file__) if getattr(module, "__file__", None) else ""
    return module, {real} if real else set()


def build(code: str) -> tuple[nn.Module, str]:
    """Call the user's function; returns (model, ``file.py:function`` for the provenance)."""
    target, func = parse(code)
    module, files = import_target(target, code)
    fn = getattr(module, func, None)
    if fn is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:6]
        raise ModelSpecError(
            f"{code}: {target} has no {func!r} (it defines: {', '.join(public) or 'nothing'})"
        )
    if not callable(fn):
        raise ModelSpecError(f"{code}: {func} is a {type(fn).__name__}, not a function")
    required = _required_parameters(fn)
    if required:
        raise ModelSpecError(
            f"{code}: {func}() needs arguments ({', '.join(required)}); --model-code calls it with none"
        )
    try:
        model = fn()
    except (Exception, SystemExit) as exc:
        raise _failure(f"{func}()", exc, files) from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"{code}: {func}() returned a {type(model).__name__}, not a torch nn.Module")
    return model, f"{Path(target).name if _is_path(target) else target}:{func}"


def _required_parameters(fn: Any) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: just call them
        return []
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    return [p.name for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


def _outputs(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


def load(code: str, weights: str | os.PathLike[str] | None = None) -> LoadedModel:
    model, origin = build(code)
    notes: list[str] = []
    meta: dict[str, Any] = {}
    info = None
    if weights is not None:
        path = Path(weights)
        sd, meta, read_notes = read_state_dict(path)  # a missing / pickled-code file: one line
        notes = read_notes + fit.load_into(model, sd, f"{path.name} does not fit {origin}")
        sha = sha256_file(path)
        provenance = f"{origin} with weights {path.name}, sha256 {sha[:12]}"
        info = CheckpointInfo(
            path=str(path),
            sha256=sha,
            format="safetensors" if "safetensors" in read_notes else "pytorch",
            architecture=type(model).__name__,
            provenance=provenance,
            notes=notes,
            metadata={k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
        )
    else:
        provenance = f"{origin} (weights as the function left them)"
    model.eval()
    n = _outputs(model)
    names = meta.get("class_names") or meta.get("classes") or getattr(model, "class_names", None)
    names = [str(c) for c in names] if isinstance(names, list | tuple) else None
    if names is not None and n is not None and len(names) != n:
        notes.append(f"ignored {len(names)} class names for {n} outputs")
        names = None
    if info is not None:
        info.class_names, info.num_classes = names, n or 0
    model.provenance = provenance  # type: ignore[assignment]
    own = getattr(model, "input_size", None)  # a model may say which crop it was trained on
    size = int(meta.get("input_size", 0) or (own if isinstance(own, int) else 0) or 224)
    pre = None
    if getattr(model, "pretrained_cfg", None) and "timm" in sys.modules:  # the user built a timm model
        from .timm_models import preprocess_for

        pre, more = preprocess_for(model)
        notes += more
    return LoadedModel(model, provenance, names, info, None, notes, size, pre)
