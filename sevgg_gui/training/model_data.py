"""Any model spec on a labelled data set: what ``sevgg eval``, ``analyze`` and ``distill`` (its teacher) share.

:func:`open_model` opens what :func:`sevgg_gui.zoo.load_model` opens (checkpoints, ``pretrained:``,
``vgg16:``, ``timm:``, model folders, ``--model-code``). A checkpoint written by ``sevgg train`` (or
distill / prune) keeps today's rules: its metadata names the input size, the train/val split (seed and
fraction) and the classes. Every other model is fed through its own preprocessing
(:meth:`LoadedModel.preprocess`: crop, resize, interpolation, mean/std, e.g. timm's data config), and
its outputs are paired with the data's classes by :mod:`.class_match`.

:class:`TeacherInput` lets such a model teach a student that sees other pixels: it turns the student's
batch back into pixels, resizes it to the teacher's size and normalises it the teacher's way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..images import Preprocess
from .class_match import ClassMap, match_classes

# Metadata keys only `sevgg train` (and distill / prune, which carry them) write.
TRAINED_KEYS = ("data", "split_seed")


@dataclass
class OpenedModel:
    """A model ready for a data set. ``preprocess`` None: a `sevgg train` checkpoint, fed VGG16-SE's
    preprocessing at its own input size (``meta["input_size"]``) as training fed it."""

    model: nn.Module
    label: str
    meta: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    preprocess: Preprocess | None = None
    trained: bool = False
    warning: str | None = None

    @property
    def split_known(self) -> bool:
        """Trained here (`sevgg train`, distill, prune): its metadata names the data and the split."""
        return any(k in self.meta for k in TRAINED_KEYS)

    @property
    def strict(self) -> bool:
        """Classes saved by `sevgg train` rule: data with other names is refused, not read by index."""
        return self.trained and self.split_known and bool(self.meta.get("class_names"))

    def data_preprocess(self, input_size: int | None = None) -> Preprocess | None:
        """The model's preprocessing, at ``input_size`` when given (resize kept in proportion)."""
        pre = self.preprocess
        if pre is None or not input_size or input_size == pre.crop_size:
            return pre
        resize = max(input_size, round(input_size * pre.resize_size / pre.crop_size))
        return dataclasses.replace(pre, crop_size=int(input_size), resize_size=resize)

    def outputs(self, size: int) -> int:
        """How many classes the model predicts: from its metadata or names, else one forward at ``size``."""
        n = self.meta.get("num_classes")
        if not n and self.class_names:
            n = len(self.class_names)
        if not n and isinstance(getattr(self.model, "num_classes", None), int):
            n = self.model.num_classes
        if n:
            return int(n)
        from ..taps.probe import example_input

        p = next(iter(self.model.parameters()), None)
        x = example_input(size, device=p.device if p is not None else "cpu")
        with torch.inference_mode():
            return int(self.model.eval()(x).shape[1])


def open_model(spec: str | None, model_code: str | None = None) -> OpenedModel:
    """A `sevgg train` checkpoint (its metadata), else any spec ``zoo.load_model`` opens (its own
    preprocessing and class names). Failures are one line (ModelSpecError, CheckpointError...)."""
    from ..checkpoints import CheckpointError
    from ..zoo import ModelSpecError, load_model

    if spec is None and model_code is None:
        raise ModelSpecError("a model is required: --checkpoint SPEC or --model-code FILE.py:FUNCTION")
    if model_code is None and spec is not None and Path(spec).is_file():
        from .models import load_trained

        try:
            model, meta = load_trained(spec)
        except CheckpointError:
            pass  # a torchvision SE state dict and the like: load_model knows them
        else:
            names = meta.get("class_names")
            return OpenedModel(model, str(spec), dict(meta), list(names) if names else None, trained=True)
    loaded = load_model(spec, model_code=model_code)
    label = (f"{model_code}" + (f" with {Path(spec).name}" if spec else "")) if model_code else str(spec)
    meta = dict(loaded.info.metadata) if loaded.info is not None else {}
    meta.pop("num_classes", None)  # an untrusted count: the names or the model itself say it
    return OpenedModel(
        loaded.model,
        label,
        meta,
        list(loaded.class_names) if loaded.class_names else None,
        loaded.preprocess(),
        warning=loaded.warning,
    )


@dataclass
class ModelSplit:
    """A split of a data set prepared for a model, and how its classes pair with the model's outputs."""

    dataset: Any
    class_names: list[str]
    classes: ClassMap
    spec: str
    input_size: int
    note: str | None = None  # which images, when not the split asked for


def split_for_model(
    opened: OpenedModel,
    data: str,
    *,
    split: str = "test",
    limit: int | None = None,
    cache_dir: str | None = None,
    input_size: int | None = None,
) -> ModelSplit:
    """``split`` of ``data`` through the model's preprocessing (a `sevgg train` checkpoint: its input
    size and its own train/val split), classes paired by :func:`match_classes` (ClassMismatch: one line).

    A model not trained here (no split in its metadata) on a flat ImageFolder (class folders, no
    train/val/test): every image, whatever the split, since no part of the folder was held out from it."""
    from .data import _folder_layout, load_datasets, parse_data_spec

    pre = opened.data_preprocess(input_size)
    size = (input_size or opened.meta.get("input_size")) if pre is None else None
    spec = parse_data_spec(data)
    whole = not opened.split_known and spec.kind == "imagefolder" and "all" in _folder_layout(spec.path)
    ds = load_datasets(
        spec,
        input_size=int(size) if size else None,
        augment="none",
        val_fraction=0.0 if whole else float(opened.meta.get("val_fraction", 0.1) or 0.1),
        seed=int(opened.meta.get("split_seed", 0) or 0),
        limit=limit,
        val_limit=limit,
        cache_dir=cache_dir,
        splits=("train",) if whole else (split,),  # type: ignore[arg-type]
        preprocess=pre,
    )
    names = list(ds.class_names)
    classes = match_classes(
        opened.class_names,
        opened.outputs(ds.input_size),
        names,
        model_label=opened.label,
        data_label=ds.spec.kind,
        strict=opened.strict,
    )
    if whole:
        note = f"every image of the folder (no train/val/test folders; {opened.label} was not trained on it)"
        return ModelSplit(ds.split("train"), names, classes, str(ds.spec), ds.input_size, note)
    return ModelSplit(ds.split(split), names, classes, str(ds.spec), ds.input_size)  # type: ignore[arg-type]


class TeacherInput(nn.Module):
    """A teacher fed the student's batches: undo the student's normalisation, resize to the teacher's
    crop (its interpolation, anti-aliased when shrinking), apply the teacher's mean/std, and return the
    logits of the data's classes only (``columns``). The student's crop is what the teacher sees: a
    teacher trained with another crop fraction sees a slightly wider or narrower field of view."""

    def __init__(
        self,
        teacher: nn.Module,
        student_mean: tuple[float, ...],
        student_std: tuple[float, ...],
        teacher_pre: Preprocess,
        columns: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.size = int(teacher_pre.crop_size)
        self.mode = (
            teacher_pre.interpolation if teacher_pre.interpolation in ("bilinear", "bicubic") else "bilinear"
        )
        view = (1, 3, 1, 1)
        self.register_buffer("s_mean", torch.tensor(student_mean).view(view), persistent=False)
        self.register_buffer("s_std", torch.tensor(student_std).view(view), persistent=False)
        self.register_buffer("t_mean", torch.tensor(teacher_pre.mean).view(view), persistent=False)
        self.register_buffer("t_std", torch.tensor(teacher_pre.std).view(view), persistent=False)
        cols = torch.tensor(columns if columns is not None else [], dtype=torch.long)
        self.register_buffer("columns", cols, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x * self.s_std + self.s_mean
        if pixels.shape[-2:] != (self.size, self.size):
            shrink = min(pixels.shape[-2:]) > self.size
            pixels = F.interpolate(
                pixels, size=(self.size, self.size), mode=self.mode, align_corners=False, antialias=shrink
            )
        logits = self.teacher((pixels - self.t_mean) / self.t_std)
        return logits[:, self.columns] if self.columns.numel() else logits


def needs_adapter(
    pre: Preprocess, size: int, mean: tuple[float, ...], std: tuple[float, ...], classes: ClassMap
) -> bool:
    """False when the teacher takes the student's batches as they are (same size, statistics, classes)."""
    same_pixels = pre.crop_size == size and tuple(pre.mean) == tuple(mean) and tuple(pre.std) == tuple(std)
    return not same_pixels or classes.columns is not None
