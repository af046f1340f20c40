"""Class-wise excitation statistics: the SENet paper's figure of mean gate per channel, per class, per block.

Early blocks should give nearly the same profile for every class (class-agnostic features) and the
last blocks diverge (class-specific): ``sevgg analyze`` measures that on a data set and saves the
per-class mean and standard deviation of every SE gate as NPZ, and draws one panel per block.

The NPZ holds ``classes`` (K,), ``blocks`` (the block names in forward order) and, for every block,
``<block>/mean`` (K, C), ``<block>/std`` (K, C, population std) and ``<block>/count`` (K,).
:func:`load_class_profiles` reads it back with numpy alone, so the app can overlay a class's mean
profile on the live bars without importing the training stack.

Plots use matplotlib when installed, else PIL (:func:`plot_line_panels`, also used by ``sevgg compare``).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


# ----------------------------------------------------------------------------------- accumulation
class _RunningClassStats:
    """Per-class mean and M2 of (N, C) rows, merged batch by batch (Chan et al.), in float64.

    Merging per-batch means avoids the cancellation of E[x^2] - E[x]^2 when a gate barely varies.
    """

    def __init__(self, num_classes: int, channels: int) -> None:
        self.n = np.zeros(num_classes, dtype=np.int64)
        self.mean = np.zeros((num_classes, channels), dtype=np.float64)
        self.m2 = np.zeros((num_classes, channels), dtype=np.float64)

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        for c in np.unique(y):
            rows = x[y == c]
            nb = len(rows)
            mb = rows.mean(axis=0)
            m2b = ((rows - mb) ** 2).sum(axis=0)
            na = self.n[c]
            tot = na + nb
            delta = mb - self.mean[c]
            self.mean[c] += delta * (nb / tot)
            self.m2[c] += m2b + delta**2 * (na * nb / tot)
            self.n[c] = tot

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.n, 1)[:, None])


@dataclass
class ClassProfiles:
    """Per-class gate statistics of every SE block (what ``sevgg analyze`` writes)."""

    classes: list[str]
    mean: OrderedDict[str, np.ndarray]  # block -> (K, C)
    std: OrderedDict[str, np.ndarray]  # block -> (K, C)
    count: OrderedDict[str, np.ndarray]  # block -> (K,)
    accuracy: np.ndarray | None = None  # (K,) top-1 per class, NaN where a class has no image
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> list[str]:
        return list(self.mean)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the NPZ (string metadata as 0-d arrays; loads with ``allow_pickle=False``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "classes": np.asarray(self.classes, dtype=str),
            "blocks": np.asarray(self.blocks, dtype=str),
        }
        for b in self.blocks:
            arrays[f"{b}/mean"] = self.mean[b].astype(np.float32)
            arrays[f"{b}/std"] = self.std[b].astype(np.float32)
            arrays[f"{b}/count"] = self.count[b].astype(np.int64)
        if self.accuracy is not None:
            arrays["accuracy"] = self.accuracy.astype(np.float32)
        for k, v in self.meta.items():
            arrays[f"meta/{k}"] = np.asarray(str(v))
        with open(path, "wb") as f:  # np.savez on a name would append ".npz" to other suffixes
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
        return path


def class_excitation_stats(
    model: nn.Module,
    loader: DataLoader | Iterable[tuple[torch.Tensor, torch.Tensor]],
    class_names: Sequence[str],
    device: str | torch.device = "cpu",
    *,
    columns: Sequence[int] | None = None,
    example_input: torch.Tensor | None = None,
) -> ClassProfiles:
    """Mean and std of every gate per class over ``loader``, read by the recorder during the forwards
    that also give the per-class accuracy (one pass over the data).

    ``columns``: the model output of each data class (a 1000-class model on a 10-class subset), so the
    accuracy is among the data's classes; ``example_input``: two images at the model's input size, for
    the recorder to probe modules of types no registry knows (timm's, a user's inline SE)."""
    import torch

    from .recorder import ExcitationRecorder

    k = len(class_names)
    stats: OrderedDict[str, _RunningClassStats] = OrderedDict()
    hits = np.zeros(k, dtype=np.int64)
    seen = np.zeros(k, dtype=np.int64)
    was_training = model.training
    model.eval().to(device)
    try:
        cols = torch.as_tensor(list(columns), dtype=torch.long) if columns is not None else None
        with ExcitationRecorder(model, example_input=example_input) as rec, torch.inference_mode():
            if not rec.taps:
                raise ValueError(f"{type(model).__name__} has no channel gates to profile")
            for x, y in loader:
                logits = model(x.to(device))
                if cols is not None:
                    logits = logits[:, cols.to(logits.device)]
                if logits.shape[1] != k:
                    raise ValueError(f"model has {logits.shape[1]} outputs, the data {k} classes")
                yn = y.numpy().astype(np.int64)
                np.add.at(seen, yn, 1)
                np.add.at(hits, yn[logits.argmax(1).cpu().numpy() == yn], 1)
                for name, gates in rec.excitations.items():
                    g = gates.double().numpy()
                    if name not in stats:
                        stats[name] = _RunningClassStats(k, g.shape[1])
                    stats[name].update(g, yn)
    finally:
        model.train(was_training)
    if not stats:
        raise ValueError("no images: the data split is empty")
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(seen > 0, hits / np.maximum(seen, 1), np.nan)
    for s in stats.values():  # a class without images has no mean (NaN, as numpy's mean of nothing)
        s.mean[s.n == 0] = np.nan
        s.m2[s.n == 0] = np.nan
    return ClassProfiles(
        classes=[str(c) for c in class_names],
        mean=OrderedDict((n, s.mean) for n, s in stats.items()),
        std=OrderedDict((n, s.std()) for n, s in stats.items()),
        count=OrderedDict((n, s.n.copy()) for n, s in stats.items()),
        accuracy=acc,
        meta={"images": int(seen.sum())},
    )


def load_class_profiles(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an ``sevgg analyze`` NPZ (numpy only, no pickles).

    Returns ``{"classes": [K names], "blocks": {block: {"mean": (K, C), "std": (K, C), "count": (K,)}},
    "accuracy": (K,) or None, "meta": {key: str}}``; blocks in forward order. For the overlay:
    ``p["blocks"][block]["mean"][p["classes"].index(name)]`` is the class's mean gate per channel.
    """
    with np.load(Path(path), allow_pickle=False) as z:
        names = set(z.files)
        if "classes" not in names:
            raise ValueError(f"{Path(path).name}: not a class-profile NPZ (no 'classes' array)")
        classes = [str(c) for c in z["classes"]]
        if "blocks" in names:
            order = [str(b) for b in z["blocks"]]
        else:
            order = sorted({n.rsplit("/", 1)[0] for n in names if n.endswith("/mean")})
        blocks: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        for b in order:
            blocks[b] = {key: np.asarray(z[f"{b}/{key}"]) for key in ("mean", "std", "count")}
        accuracy = np.asarray(z["accuracy"]) if "accuracy" in names else None
        meta = {n.split("/", 1)[1]: str(z[n]) for n in names if n.startswith("meta/")}
    return {"classes": classes, "blocks": blocks, "accuracy": accuracy, "meta": meta}


def class_profile(profiles: Mapping[str, Any], block: str, cls: str | int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) gate vectors of one class in one block, by class name or index."""
    idx = cls if isinstance(cls, int) else profiles["classes"].index(cls)
    entry = profiles["blocks"][block]
    return entry["mean"][idx], entry["std"][idx]


# ----------------------------------------------------------------------------------- data
def checkpoint_dataset(
    meta: Mapping[str, Any],
    data: str,
    *,
    split: str = "test",
    limit: int | None = None,
    cache_dir: str | None = None,
    input_size: int | None = None,
) -> tuple[Any, list[str]]:
    """The split of ``data`` a checkpoint was made for: its input size, its train/val split (same seed
    and fraction), no augmentation; refuses data whose classes differ from the checkpoint's."""
    from .training.data import DataError, load_datasets

    size = input_size or meta.get("input_size")
    ds = load_datasets(
        data,
        input_size=int(size) if size else None,
        augment="none",
        val_fraction=float(meta.get("val_fraction", 0.1) or 0.1),
        seed=int(meta.get("split_seed", 0) or 0),
        limit=limit,
        val_limit=limit,
        cache_dir=cache_dir,
        splits=(split,),  # type: ignore[arg-type]
    )
    names = list(ds.class_names)
    num_classes = int(meta.get("num_classes") or len(names))
    if num_classes != len(names):
        raise DataError(f"{ds.spec}: {len(names)} classes, but the checkpoint has {num_classes} outputs")
    saved = meta.get("class_names")
    if saved and list(saved) != names:
        raise DataError(
            f"{ds.spec}: class names {names[:3]}... differ from the checkpoint's {list(saved)[:3]}..."
        )
    return ds.split(split), names  # type: ignore[arg-type]


def analyze_checkpoint(
    checkpoint: str | os.PathLike[str] | None,
    data: str,
    *,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 128,
    device: str = "auto",
    cache_dir: str | None = None,
    input_size: int | None = None,
    model_code: str | None = None,
) -> ClassProfiles:
    """:func:`class_excitation_stats` of any model spec on a split of ``data``: a `sevgg train`
    checkpoint at its own size and split, other models through their own preprocessing with their
    outputs paired to the data's classes (:func:`~sevgg_gui.training.model_data.split_for_model`)."""
    from torch.utils.data import DataLoader

    from .taps.probe import example_input
    from .training.distributed import _pick_device
    from .training.model_data import open_model, split_for_model

    opened = open_model(str(checkpoint) if checkpoint is not None else None, model_code)
    ms = split_for_model(opened, data, split=split, limit=limit, cache_dir=cache_dir, input_size=input_size)
    dev = _pick_device(device, 0)
    opened.model.eval().to(dev)
    prof = class_excitation_stats(
        opened.model,
        DataLoader(ms.dataset, batch_size=batch_size),
        ms.class_names,
        dev,
        columns=ms.classes.columns,
        example_input=example_input(ms.input_size, device=dev),
    )
    prof.meta.update({"checkpoint": opened.label, "data": str(data), "split": split})
    if ms.classes.note:
        prof.meta["class_map"] = ms.classes.note
    if ms.note:
        prof.meta["data_note"] = ms.note
    if opened.warning:
        prof.meta["warning"] = opened.warning
    return prof


# ----------------------------------------------------------------------------------- plotting
@dataclass
class Series:
    """One line of a panel; ``band`` draws mean +- band as a shaded area."""

    label: str
    y: Sequence[float]
    x: Sequence[float] | None = None
    band: Sequence[float] | None = None


@dataclass
class Panel:
    title: str
    series: list[Series]
    xlabel: str = ""
    ylabel: str = ""
    ylim: tuple[float, float] | None = None
    hline: float | None = None  # a reference level drawn across the panel (e.g. 0 for differences)


def plot_line_panels(panels: Sequence[Panel], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """A grid of line plots as PNG: matplotlib when installed, else drawn with PIL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _panels_pil(panels, path, title)
    else:  # pragma: no cover - matplotlib is optional and absent in CI
        _panels_matplotlib(panels, path, title)
    return path


def _grid(n: int) -> tuple[int, int]:
    cols = 1 if n == 1 else 2 if n <= 4 else 3
    return cols, -(-n // cols)


def _xs(s: Series) -> np.ndarray:
    return np.asarray(s.x if s.x is not None else range(len(s.y)), dtype=float)


def _panels_matplotlib(panels: Sequence[Panel], path: Path, title: str) -> None:  # pragma: no cover
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols, rows = _grid(len(panels))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), dpi=100, squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, s in enumerate(panel.series):
            color = tuple(c / 255 for c in PALETTE[i % len(PALETTE)])
            x, y = _xs(s), np.asarray(s.y, dtype=float)
            ax.plot(x, y, color=color, lw=1.0, label=s.label)
            if s.band is not None:
                b = np.asarray(s.band, dtype=float)
                ax.fill_between(x, y - b, y + b, color=color, alpha=0.2, lw=0)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.xlabel, fontsize=8)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="0.45", lw=0.8, ls="--", zorder=0)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if title:
        fig.suptitle(title, y=0.995, fontsize=10)
    # The legend goes below the title (both at "upper center" they overprinted each other).
    legend_top = 0.955 if title else 0.995
    fig.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, legend_top), ncol=min(10, len(labels)),
        fontsize=7, frameon=False,
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, legend_top - 0.04))
    fig.savefig(path)
    plt.close(fig)


def _font(size: int = 11) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def _panels_pil(panels: Sequence[Panel], path: Path, title: str) -> None:
    from PIL import Image, ImageDraw

    font, small = _font(12), _font(10)
    cols, rows = _grid(len(panels))
    pw, ph = 460, 280
    labels = [s.label for s in panels[0].series] if panels else []
    legend_rows = -(-len(labels) // 5)
    top = 30 + 18 * legend_rows
    img = Image.new("RGB", (cols * pw + 10, top + rows * ph + 10), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 6), title, fill="black", font=font)
    bands: list[tuple[list[tuple[float, float]], tuple[int, int, int]]] = []
    lines: list[tuple[list[tuple[float, float]], tuple[int, int, int]]] = []
    for i, label in enumerate(labels):  # legend: colour swatch + label, five per row
        x0, y0 = 10 + (i % 5) * 180, 26 + 18 * (i // 5)
        draw.rectangle([x0, y0 + 3, x0 + 14, y0 + 11], fill=PALETTE[i % len(PALETTE)])
        draw.text((x0 + 20, y0), label[:24], fill="black", font=small)
    for p, panel in enumerate(panels):
        ox, oy = 10 + (p % cols) * pw, top + (p // cols) * ph
        left, right, ptop, bottom = ox + 52, ox + pw - 14, oy + 22, oy + ph - 36
        draw.text((ox + 52, oy + 4), panel.title[:60], fill="black", font=font)
        xs = [_xs(s) for s in panel.series]
        ys = [np.asarray(s.y, dtype=float) for s in panel.series]
        finite = [v for s, y in zip(panel.series, ys, strict=True) for v in _extent(y, s.band)]
        xall = np.concatenate(xs) if xs else np.zeros(1)
        xmin, xmax = (float(xall.min()), float(xall.max())) if xall.size else (0.0, 1.0)
        ymin, ymax = panel.ylim or ((min(finite), max(finite)) if finite else (0.0, 1.0))
        if xmax == xmin:
            xmax = xmin + 1
        if ymax == ymin:
            ymin, ymax = ymin - 0.5, ymax + 0.5
        to_px = _mapper((xmin, xmax), (ymin, ymax), (left, right), (bottom, ptop))
        for frac in (0.0, 0.5, 1.0):  # y ticks with light grid lines
            yv = ymin + frac * (ymax - ymin)
            _, py = to_px(xmin, yv)
            draw.line([left, py, right, py], fill=(232, 232, 232))
            draw.text((ox + 4, py - 6), _fmt(yv), fill="black", font=small)
        if panel.hline is not None and ymin <= panel.hline <= ymax:
            _, py = to_px(xmin, panel.hline)
            draw.line([left, py, right, py], fill=(150, 150, 150))
        draw.rectangle([left, ptop, right, bottom], outline=(90, 90, 90))
        for frac in (0.0, 0.5, 1.0):
            xv = xmin + frac * (xmax - xmin)
            px, _ = to_px(xv, ymin)
            draw.text((px - 8, bottom + 4), _fmt(xv), fill="black", font=small)
        draw.text((left + (right - left) // 2 - 30, bottom + 18), panel.xlabel[:40], fill="black", font=small)
        if panel.ylabel:
            draw.text((left + 4, ptop + 2), panel.ylabel[:40], fill=(90, 90, 90), font=small)
        for i, (s, x, y) in enumerate(zip(panel.series, xs, ys, strict=True)):
            color = PALETTE[i % len(PALETTE)]
            if s.band is not None:  # mean +- band: translucent, so overlapping bands stay visible
                b = np.asarray(s.band, dtype=float)
                ok = [j for j in range(len(y)) if np.isfinite(y[j]) and np.isfinite(b[j])]
                upper = [to_px(x[j], y[j] + b[j]) for j in ok]
                lower = [to_px(x[j], y[j] - b[j]) for j in ok]
                if len(upper) > 1:
                    bands.append((upper + lower[::-1], color))
            pts = [to_px(a, v) for a, v in zip(x, y, strict=True) if np.isfinite(v)]
            lines.append((pts, color))
    if bands:
        overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
        odraw = ImageDraw.Draw(overlay)
        for poly, color in bands:
            odraw.polygon(poly, fill=(*color, 56))
        img = Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")
        draw = ImageDraw.Draw(img)
    for pts, color in lines:  # lines last: on top of every band
        if len(pts) > 1:
            draw.line(pts, fill=color, width=1 if len(pts) > 40 else 2)
        elif pts:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=color)
    img.save(path)


def _mapper(
    xr: tuple[float, float], yr: tuple[float, float], px: tuple[float, float], py: tuple[float, float]
) -> Any:
    """Data -> pixel coordinates for one panel."""

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            px[0] + (x - xr[0]) / (xr[1] - xr[0]) * (px[1] - px[0]),
            py[0] + (y - yr[0]) / (yr[1] - yr[0]) * (py[1] - py[0]),
        )

    return to_px


def _extent(y: np.ndarray, band: Sequence[float] | None) -> list[float]:
    b = np.asarray(band, dtype=float) if band is not None else np.zeros_like(y)
    vals = np.concatenate([y - b, y + b])
    return [float(v) for v in vals[np.isfinite(vals)]]


PROFILE_VIEWS: tuple[str, ...] = ("delta", "fitted", "absolute")


def class_profile_panels(
    profiles: ClassProfiles | Mapping[str, Any],
    *,
    classes: Sequence[str | int] | None = None,
    max_classes: int = 10,
    view: str = "delta",
) -> tuple[list[Panel], str]:
    """The panels (one per block, one line per class) and the figure title of a class-profile plot.

    ``view``: ``delta`` (default) draws each class's mean gate minus the mean over all classes, on a
    symmetric axis fitted to the data, so classes that differ by 0.01 show apart instead of as one flat
    line at 0.5; ``fitted`` the mean gates on an axis fitted to them; ``absolute`` on the gate's 0..1.
    """
    if view not in PROFILE_VIEWS:
        raise ValueError(f"unknown view {view!r}: use {', '.join(PROFILE_VIEWS)}")
    if isinstance(profiles, ClassProfiles):
        names, blocks = profiles.classes, {b: {"mean": profiles.mean[b]} for b in profiles.blocks}
    else:
        names, blocks = profiles["classes"], profiles["blocks"]
    if classes is None:
        idx = list(range(min(max_classes, len(names))))
    else:
        idx = [c if isinstance(c, int) else names.index(c) for c in classes]
    panels: list[Panel] = []
    for i, (b, entry) in enumerate(blocks.items(), 1):
        mean = np.asarray(entry["mean"], dtype=float)
        title = f"SE{i} {b} ({mean.shape[1]} channels)"
        if view == "delta":
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a channel no class has seen: NaN
                delta = mean - np.nanmean(mean, axis=0, keepdims=True)  # classes absent: NaN rows
            shown = delta[idx]
            half = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 0.0
            half = max(half, 1e-6) * 1.1
            panels.append(
                Panel(
                    title=f"{title}, spread ±{half / 1.1:.2g}",
                    series=[Series(names[k], delta[k]) for k in idx],
                    xlabel="channel",
                    ylabel="gate - all-class mean",  # ASCII minus: PIL's default font has no U+2212
                    ylim=(-half, half),
                    hline=0.0,
                )
            )
        else:
            panels.append(
                Panel(
                    title=title,
                    series=[Series(names[k], mean[k]) for k in idx],
                    xlabel="channel",
                    ylabel="mean gate (axis fitted)" if view == "fitted" else "mean gate",
                    ylim=None if view == "fitted" else (0.0, 1.0),
                )
            )
    title = {
        "delta": "Mean excitation per class minus the mean over all classes (y axis fitted per block)",
        "fitted": "Mean excitation per class and block (y axis fitted to the data)",
        "absolute": "Mean excitation per class and block (y axis: the gate's 0..1)",
    }[view]
    return panels, title


def plot_class_profiles(
    profiles: ClassProfiles | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    classes: Sequence[str | int] | None = None,
    max_classes: int = 10,
    view: str = "delta",
    zoom: bool = False,
) -> Path:
    """One panel per block, one line per class, drawn as :func:`class_profile_panels` describes
    (``zoom=True`` is the older spelling of ``view="fitted"``)."""
    panels, title = class_profile_panels(
        profiles, classes=classes, max_classes=max_classes, view="fitted" if zoom else view
    )
    return plot_line_panels(panels, path, title=title)


def spread_summary(profiles: ClassProfiles) -> list[tuple[str, float]]:
    """Per block, the mean over channels of the std across classes of the class means: how
    class-specific the block's gates are (the paper: small early, large late)."""
    return [(b, float(profiles.mean[b].std(axis=0).mean())) for b in profiles.blocks]
