"""``sevgg eval``: top-1 / top-5, per-class accuracy and the confusion matrix of a checkpoint on a data set.

The same accumulation serves the validation pass of training (summed over DDP ranks), so the numbers
printed while training and by ``sevgg eval --split val`` are the same computation.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from .distributed import DistInfo


@dataclass
class EvalSums:
    """Sums that add up over batches and ranks; the rates are derived."""

    num_classes: int
    n: int = 0
    loss_sum: float = 0.0
    top1_hits: int = 0
    top5_hits: int = 0
    confusion: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.int64))
    seconds: float = 0.0
    # Top-1 over all the model's outputs, when the data's classes are a subset of them (``columns``).
    all_top1_hits: int | None = None

    @property
    def k(self) -> int:
        return min(5, self.num_classes)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.n)

    @property
    def top1(self) -> float:
        return self.top1_hits / max(1, self.n)

    @property
    def top5(self) -> float:
        return self.top5_hits / max(1, self.n)

    def all_reduce(self, info: DistInfo) -> EvalSums:
        if not info.enabled:
            return self
        import torch.distributed as dist

        scalars = torch.tensor(
            [self.n, self.loss_sum, self.top1_hits, self.top5_hits], dtype=torch.float64, device=info.device
        )
        conf = self.confusion.to(info.device)
        dist.all_reduce(scalars)
        dist.all_reduce(conf)
        n, loss, t1, t5 = scalars.tolist()
        return EvalSums(self.num_classes, int(n), loss, int(t1), int(t5), conf.cpu(), self.seconds)


@torch.inference_mode()
def accumulate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    num_classes: int,
    amp_dtype: torch.dtype | None = None,
    columns: torch.Tensor | None = None,
) -> EvalSums:
    """Cross-entropy (no smoothing), top-1/top-k hits and the confusion matrix (rows: true class).

    ``columns``: the model output of each data class (a model with more classes than the data): the
    metrics are over those outputs only, and ``all_top1_hits`` counts top-1 over all of them."""
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    conf = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    t1 = torch.zeros((), dtype=torch.int64, device=device)
    t5 = torch.zeros((), dtype=torch.int64, device=device)
    t1_all = torch.zeros((), dtype=torch.int64, device=device)
    cols = columns.to(device) if columns is not None else None
    n = 0
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if amp_dtype is not None:
            with torch.autocast(device_type=device.type, dtype=amp_dtype):
                logits = model(x)
        else:
            logits = model(x)
        logits = logits.float()
        if cols is not None:
            if logits.shape[1] <= int(cols.max()):
                raise ValueError(f"model has {logits.shape[1]} outputs, fewer than its class map needs")
            t1_all += (logits.argmax(1) == cols[y]).sum()
            logits = logits[:, cols]
        if logits.shape[1] != num_classes:
            raise ValueError(f"model has {logits.shape[1]} outputs, the data {num_classes} classes")
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        topk = logits.topk(k, dim=1).indices
        t1 += (topk[:, 0] == y).sum()
        t5 += (topk == y[:, None]).any(dim=1).sum()
        conf += torch.bincount(y * num_classes + topk[:, 0], minlength=num_classes * num_classes)
        n += len(y)
    model.train(was_training)
    return EvalSums(
        num_classes,
        n,
        float(loss_sum.item()),
        int(t1.item()),
        int(t5.item()),
        conf.view(num_classes, num_classes).cpu(),
        time.perf_counter() - t0,
        int(t1_all.item()) if cols is not None else None,
    )


@dataclass
class EvalReport:
    """What ``sevgg eval`` prints (and ``--json`` writes)."""

    checkpoint: str
    data: str
    split: str
    class_names: list[str]
    sums: EvalSums
    class_map: str | None = None  # how the model's outputs were paired with the data's classes
    model_classes: int | None = None
    warning: str | None = None
    data_note: str | None = None  # which images, when not the split asked for

    def to_dict(self) -> dict[str, Any]:
        s = self.sums
        conf = s.confusion.tolist()
        per_class = []
        for i, name in enumerate(self.class_names):
            total = int(sum(conf[i]))
            per_class.append(
                {
                    "index": i,
                    "class": name,
                    "n": total,
                    "correct": int(conf[i][i]),
                    "accuracy": round(conf[i][i] / total, 6) if total else None,
                }
            )
        return {
            "checkpoint": self.checkpoint,
            "data": self.data,
            "split": self.split,
            "n": s.n,
            "loss": round(s.loss, 6),
            "top1": round(s.top1, 6),
            "top5": round(s.top5, 6),
            "topk": s.k,
            "images_per_s": round(s.n / max(1e-9, s.seconds), 2),
            "model_classes": self.model_classes or len(self.class_names),
            "class_map": self.class_map,
            "data_note": self.data_note,
            "top1_all_outputs": round(s.all_top1_hits / max(1, s.n), 6)
            if s.all_top1_hits is not None
            else None,
            "class_names": self.class_names,
            "per_class": per_class,
            "confusion": conf,
        }

    def format(self) -> str:
        d = self.to_dict()
        lines = [
            f"{d['checkpoint']} on {d['data']} ({d['split']}, {d['n']} images, {d['images_per_s']:.0f} img/s)",
            f"top-1 {d['top1']:.2%}   top-{d['topk']} {d['top5']:.2%}   loss {d['loss']:.4f}",
        ]
        if d["data_note"]:
            lines.append(f"data: {d['data_note']}")
        if d["class_map"]:
            lines.append(f"classes: {d['class_map']}")
        if d["top1_all_outputs"] is not None:
            lines.append(
                f"(top-1 among these {len(self.class_names)} classes; among all {d['model_classes']} "
                f"outputs of the model: {d['top1_all_outputs']:.2%})"
            )
        lines += [
            "",
            f"{'class':<24} {'n':>6} {'accuracy':>9}",
        ]
        for row in d["per_class"]:
            acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.2%}"
            lines.append(f"{row['class'][:24]:<24} {row['n']:>6} {acc:>9}")
        return "\n".join(lines)


def evaluate_checkpoint(
    checkpoint: str | Path | None,
    data: str,
    *,
    split: str = "test",
    batch_size: int = 128,
    limit: int | None = None,
    device: str = "auto",
    workers: int = 0,
    cache_dir: str | None = None,
    input_size: int | None = None,
    model_code: str | None = None,
) -> EvalReport:
    """Evaluate any model spec (:func:`~sevgg_gui.training.model_data.open_model`): a `sevgg train`
    checkpoint at the input size and split stored in it, other models through their own preprocessing,
    their outputs paired with the data's classes (ClassMismatch, one line, when they cannot be)."""
    from .distributed import _pick_device
    from .model_data import open_model, split_for_model

    opened = open_model(str(checkpoint) if checkpoint is not None else None, model_code)
    ms = split_for_model(opened, data, split=split, limit=limit, cache_dir=cache_dir, input_size=input_size)
    dev = _pick_device(device, 0)
    opened.model.to(dev)
    loader = DataLoader(ms.dataset, batch_size=batch_size, num_workers=workers)
    cols = torch.tensor(ms.classes.columns) if ms.classes.columns is not None else None
    sums = accumulate(opened.model, loader, dev, len(ms.class_names), columns=cols)
    return EvalReport(
        opened.label,
        ms.spec,
        split,
        ms.class_names,
        sums,
        class_map=ms.classes.note,
        model_classes=ms.classes.model_classes,
        warning=opened.warning,
        data_note=ms.note,
    )


# ------------------------------------------------------------------------------ confusion image
def save_confusion_png(report: EvalReport, path: str | Path) -> Path:
    """Row-normalised confusion matrix with counts; matplotlib when installed, else drawn with PIL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _confusion_pil(report, path)
    else:
        _confusion_matplotlib(report, path)
    return path


def _row_normalised(conf: torch.Tensor) -> torch.Tensor:
    c = conf.double()
    return c / c.sum(dim=1, keepdim=True).clamp_min(1)


def confusion_title(report: EvalReport) -> str:
    """ "test split: top-1 accuracy 35.9% on 300 images": a word between "top-1" and the value, which
    otherwise read as one number ("top-1 35.9%" looked like "top-135.9%" in a small title font)."""
    return f"{report.split} split: top-1 accuracy {report.sums.top1:.1%} on {report.sums.n} images"


def _confusion_matplotlib(report: EvalReport, path: Path) -> None:  # pragma: no cover - optional
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = report.sums.confusion
    n = conf.shape[0]
    frac = _row_normalised(conf).numpy()
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), report.class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), report.class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(confusion_title(report))
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(conf[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _confusion_pil(report: EvalReport, path: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    conf = report.sums.confusion
    n = conf.shape[0]
    frac = _row_normalised(conf)
    cell = 36 if n <= 20 else 18 if n <= 60 else 6
    try:
        font = ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    label_w = 12 + 7 * min(24, max((len(c) for c in report.class_names), default=4))
    top = 44
    w, h = label_w + n * cell + 10, top + n * cell + 30
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.text(
        (8, 6),
        f"{confusion_title(report)}  (rows true, cols predicted)",
        fill="black",
        font=font,
    )
    for j in range(n):
        if cell >= 18:
            draw.text((label_w + j * cell + 4, top - 16), str(j), fill="black", font=font)
    for i in range(n):
        y0 = top + i * cell
        if cell >= 18:
            draw.text((6, y0 + cell // 2 - 6), f"{i} {report.class_names[i][:22]}", fill="black", font=font)
        for j in range(n):
            v = float(frac[i, j])
            color = (int(255 - 222 * v), int(255 - 160 * v), int(255 - 75 * v))
            x0 = label_w + j * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=color, outline=(220, 220, 220))
            if cell >= 36:
                draw.text(
                    (x0 + 3, y0 + cell // 2 - 6),
                    str(int(conf[i, j])),
                    fill="white" if v > 0.5 else "black",
                    font=font,
                )
    img.save(path)


def write_json(report: EvalReport, path: str | Path | None = None) -> str:
    text = json.dumps(report.to_dict(), indent=2)
    if path:
        Path(path).write_text(text + "\n")
    return text
