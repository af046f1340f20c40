"""Which model output stands for which class of a data set, for ``sevgg eval`` / ``analyze`` / ``distill``.

A model brings its own classes (a `sevgg train` checkpoint's saved names, torchvision's or timm's
ImageNet categories, a folder's labels, or none) and the data its own (ImageFolder folder names,
Fashion-MNIST's ten). :func:`match_classes` pairs them, in this order:

1. the same names in the same order: output i is class i;
2. every data class is one of the model's classes, by name (case, ``_`` and ``-`` ignored) or, for a
   1000-class ImageNet model, by any ImageNet synonym or WordNet id (``n02123045``): the data's classes
   are read from those outputs (a 10-folder ImageNet subset on a 1000-class model);
3. the same number of classes, names that do not match (or a model without names): output i is read as
   class i, and the report says so -- except for a `sevgg train` checkpoint with saved names, which
   keeps refusing data whose classes are not its own;
4. anything else: :class:`ClassMismatch`, one line (the CLI exits 2).

Pure Python: timm (for ImageNet's synonyms and WordNet ids) is imported only for a 1000-class model
whose names do not simply match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .data import DataError

IMAGENET_CLASSES = 1000
_WNID = re.compile(r"^n\d{8}$")


class ClassMismatch(DataError):
    """The model's classes and the data's cannot be paired; the message is one line."""


@dataclass(frozen=True)
class ClassMap:
    """``columns[i]``: the model output read as data class i (None: output i is class i).
    ``note``: how they were paired, for the report (None: the same classes)."""

    model_classes: int
    columns: tuple[int, ...] | None = None
    note: str | None = None


def normalise(name: str) -> str:
    """``"Egyptian_cat"`` / ``"egyptian-cat"`` -> ``"egyptian cat"``."""
    return " ".join(re.sub(r"[_\-]+", " ", str(name)).lower().split())


@lru_cache(maxsize=1)
def imagenet_aliases() -> tuple[tuple[str, ...], ...] | None:
    """Per ImageNet-1k index: its WordNet id and every synonym of its description (timm's bundled
    ImageNet info, no download); None without timm."""
    try:
        from timm.data import ImageNetInfo
    except ImportError:
        return None
    info = ImageNetInfo("imagenet-1k")
    wnids, descriptions = info.label_names(), info.label_descriptions()
    return tuple(
        (w.lower(), *(normalise(s) for s in d.split(",") if s.strip()))
        for w, d in zip(wnids, descriptions, strict=True)
    )


def _looks_imagenet(model_names: Sequence[str] | None, n_model: int) -> bool:
    """A 1000-output model whose names (if any) are ImageNet's (torchvision's or timm's short names)."""
    if n_model != IMAGENET_CLASSES:
        return False
    aliases = imagenet_aliases()
    if aliases is None:
        return False
    if model_names is None:
        return True
    same = sum(normalise(n) in a for n, a in zip(model_names, aliases, strict=True))
    return same >= 0.95 * IMAGENET_CLASSES  # torchvision and timm spell a few dozen differently


def _by_name(
    model_names: Sequence[str] | None, n_model: int, data_names: Sequence[str]
) -> tuple[list[int], list[str], bool]:
    """(model index per data class, data classes that match none or several, ImageNet table used)."""
    index: dict[str, set[int]] = {}
    for i, name in enumerate(model_names or ()):
        index.setdefault(normalise(name), set()).add(i)
    imagenet = _looks_imagenet(model_names, n_model)
    if imagenet:
        for i, aliases in enumerate(imagenet_aliases() or ()):
            for a in aliases:
                index.setdefault(a, set()).add(i)
    columns: list[int] = []
    unmatched: list[str] = []
    taken: dict[int, str] = {}
    for name in data_names:
        key = name.lower() if _WNID.match(name.lower()) else normalise(name)
        hits = index.get(key, set())
        if len(hits) != 1:  # no such class, or an ambiguous name (ImageNet has two "crane"s: use the wnid)
            unmatched.append(name if not hits else f"{name} (ambiguous)")
            continue
        col = next(iter(hits))
        if col in taken:  # two folders for one class ("tabby" and "tabby cat")
            unmatched.append(f"{name} (same class as {taken[col]})")
            continue
        taken[col] = name
        columns.append(col)
    return columns, unmatched, imagenet


def _preview(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(str(x) for x in names[:n])
    return shown + (f", ... ({len(names)})" if len(names) > n else "")


def match_classes(
    model_names: Sequence[str] | None,
    n_model: int,
    data_names: Sequence[str],
    *,
    model_label: str,
    data_label: str,
    strict: bool = False,
) -> ClassMap:
    """Pair the model's ``n_model`` outputs with the data's classes (see the module docstring).

    ``strict``: names saved by ``sevgg train`` rule; equal counts with other names are refused."""
    k = len(data_names)
    names = [str(n) for n in model_names] if model_names is not None else None
    if names is not None and len(names) != n_model:
        names = None  # names that do not describe the outputs are no names
    if names is not None and names == list(data_names):
        return ClassMap(n_model)
    if k == 0:
        raise ClassMismatch(f"{model_label}: the data ({data_label}) has no classes")
    columns, unmatched, imagenet = _by_name(names, n_model, data_names)
    if not unmatched:
        if n_model == k and columns == list(range(k)):
            return ClassMap(n_model)
        how = "ImageNet names or WordNet ids" if imagenet else "name"
        if imagenet and names is None:
            how += " (the model names no classes: ImageNet-1k order assumed)"
        note = f"the data's {k} classes matched by {how} to {k} of the model's {n_model} outputs"
        return ClassMap(n_model, tuple(columns), note)
    if n_model == k and not strict:
        why = "the model names no classes" if names is None else f"class names differ ({_preview(unmatched)})"
        return ClassMap(n_model, None, f"{why}: model output i read as data class i (index to index)")
    if strict and names is not None and n_model == k:
        raise ClassMismatch(
            f"{model_label}: trained on classes {_preview(names)}, the data ({data_label}) has "
            f"{_preview(list(data_names))}: not the classes it was trained on"
        )
    if data_label == "imagefolder":
        hint = "name the class folders by the model's class names" + (
            " or ImageNet WordNet ids (n01440764...)" if imagenet else ""
        )
    else:
        hint = f"{data_label} needs a model of its {k} classes (e.g. from `sevgg train`) or {k} outputs"
    known = "" if names is None and not imagenet else f"; not the model's: {_preview(unmatched)}"
    raise ClassMismatch(f"{model_label}: {n_model} classes, data has {k} ({data_label}){known}; {hint}")
