"""``sevgg compare``: plain VGG16 against VGG16-SE under identical data, schedule and seeds (article 7.1).

The article claims +1.5-2 % top-1 and ~20 % faster convergence on ImageNet. This runs the controlled
version of that experiment at whatever scale the machine allows: for every seed, each architecture is
trained by the same :class:`~sevgg_gui.training.train.Trainer` with the same configuration (so the
same train/val split, the same image subset, the same data order and augmentation stream), from
scratch, with one learning rate for all layers (the trainer's backbone/head split would otherwise
give VGG16-SE's SE blocks the head's rate and VGG16 nothing comparable).

Reported per architecture, mean +- sample std over seeds: final validation top-1/top-5, test top-1/
top-5 (official test split, or the held-out split where there is none), epochs to reach a target
validation accuracy, training seconds per epoch; and the paired per-seed differences (SE - plain),
which cancel the split-to-split variation that both architectures share. Runs execute interleaved
(seed 0: plain, SE; seed 1: ...), so a machine whose load drifts slows both alike.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Log = Callable[[str], None]


@dataclass
class CompareConfig:
    data: str
    out: str = "sevgg_compare"
    epochs: int = 5
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    archs: list[str] = field(default_factory=lambda: ["vgg16", "vgg16_se"])
    width: float = 1.0
    reduction: int = 16
    se_init: str = "default"  # "neutral": SE blocks start as pass-throughs (models.vgg.neutralise_se)
    input_size: int | None = None
    limit: int | None = None
    val_limit: int | None = None
    test_limit: int | None = None  # default: val_limit
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    dropout: float = 0.5
    label_smoothing: float = 0.1
    augment: str = "light"
    val_fraction: float = 0.1
    target_acc: float | None = None  # default: 90% of the weaker architecture's mean best val top-1
    device: str = "auto"
    workers: int = 0
    cache_dir: str | None = None
    threads: int | None = None  # torch CPU threads (a fixed count keeps timings comparable)
    resume: bool = False  # continue / reuse runs whose checkpoints exist in OUT/runs


def _mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (n-1) of the values that exist."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"mean": round(mean, 6), "std": round(std, 6), "n": len(xs), "values": list(values)}


def epochs_to_reach(history: Sequence[dict[str, Any]], target: float) -> int | None:
    """The first epoch (1-based) whose validation top-1 is at least ``target``; None if never."""
    for row in history:
        if row.get("val_acc") is not None and row["val_acc"] >= target:
            return int(row["epoch"])
    return None


def _run_config(cfg: CompareConfig, arch: str, seed: int, path: Path) -> Any:
    from .train import TrainConfig

    return TrainConfig(
        data=cfg.data,
        out=str(path),
        epochs=cfg.epochs,
        arch=arch,
        width=cfg.width,
        reduction=cfg.reduction,
        init="random",
        se_init=cfg.se_init,
        input_size=cfg.input_size,
        augment=cfg.augment,
        val_fraction=cfg.val_fraction,
        limit=cfg.limit,
        val_limit=cfg.val_limit,
        cache_dir=cfg.cache_dir,
        batch_size=cfg.batch_size,
        optimizer=cfg.optimizer,
        lr_backbone=cfg.lr,
        lr_head=cfg.lr,
        weight_decay=cfg.weight_decay,
        dropout=cfg.dropout,
        label_smoothing=cfg.label_smoothing,
        device=cfg.device,
        workers=cfg.workers,
        seed=seed,
        resume=str(path) if cfg.resume and path.is_file() else None,
    )


def compare(cfg: CompareConfig, *, log: Log = print) -> dict[str, Any]:
    """Train every (seed, arch), evaluate, summarise; writes OUT/summary.json and OUT/curves.png."""
    import torch

    from ..analysis import count_params, layer_macs
    from .evaluate import evaluate_checkpoint
    from .models import ARCHS, load_trained
    from .train import train

    unknown = [a for a in cfg.archs if a not in ARCHS]
    if unknown or len(cfg.archs) < 2:
        raise ValueError(f"--archs needs two or more of {', '.join(ARCHS)}, got {cfg.archs}")
    if not cfg.seeds:
        raise ValueError("--seeds needs at least one seed")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    test_limit = cfg.test_limit if cfg.test_limit is not None else cfg.val_limit
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for seed in cfg.seeds:
        for arch in cfg.archs:
            path = out / "runs" / f"{arch}-seed{seed}.pth"
            tag = f"[{arch} seed {seed}]"
            result = train(_run_config(cfg, arch, seed, path), log=lambda m, tag=tag: log(f"{tag} {m}"))
            if result.interrupted:
                raise KeyboardInterrupt
            hist = result.history
            rep = evaluate_checkpoint(
                path, cfg.data, split="test", limit=test_limit, cache_dir=cfg.cache_dir, device=cfg.device
            )
            last = hist[-1]
            seconds = [r["seconds"] for r in hist]
            runs.append(
                {
                    "arch": arch,
                    "seed": seed,
                    "checkpoint": str(path),
                    "val_top1": last["val_acc"],
                    "val_top5": last["val_top5"],
                    "best_val_top1": max((r["val_acc"] or 0.0) for r in hist),
                    "test_top1": round(rep.sums.top1, 6),
                    "test_top5": round(rep.sums.top5, 6),
                    "test_images": rep.sums.n,
                    "sec_per_epoch": round(sum(seconds) / len(seconds), 3),
                    "history": hist,
                }
            )
            log(
                f"{tag} val top-1 {last['val_acc']:.2%}  test top-1 {rep.sums.top1:.2%} "
                f"top-5 {rep.sums.top5:.2%}  {runs[-1]['sec_per_epoch']:.1f} s/epoch"
            )
    by_arch = {a: [r for r in runs if r["arch"] == a] for a in cfg.archs}
    target = cfg.target_acc
    if target is None:
        weakest = min(_mean_std([r["best_val_top1"] for r in rs])["mean"] for rs in by_arch.values())
        target = round(0.9 * weakest, 4)
    for r in runs:
        r["epochs_to_target"] = epochs_to_reach(r["history"], target)

    summary: dict[str, Any] = {}
    size = None
    for arch, rs in by_arch.items():
        model, meta = load_trained(rs[0]["checkpoint"])
        size = int(meta.get("input_size") or 224)
        reached = [r["epochs_to_target"] for r in rs]
        summary[arch] = {
            "params": count_params(model),
            "macs": layer_macs(model, (size, size)).total_macs,
            **{
                k: _mean_std([r[k] for r in rs])
                for k in ("val_top1", "val_top5", "test_top1", "test_top5", "sec_per_epoch")
            },
            "epochs_to_target": {**_mean_std(reached), "reached": sum(e is not None for e in reached)},
            "curve_val_top1": _curve(rs, "val_acc"),
            "curve_train_loss": _curve(rs, "train_loss"),
        }
    base, other = cfg.archs[0], cfg.archs[1]
    paired: dict[str, Any] = {}
    for k in ("val_top1", "test_top1", "test_top5", "sec_per_epoch"):
        diffs = [b[k] - a[k] for a, b in zip(by_arch[base], by_arch[other], strict=True)]
        paired[k] = _mean_std([round(d, 6) for d in diffs])
    result = {
        "config": asdict(cfg),
        "input_size": size,
        "target_acc": target,
        "target_rule": "given"
        if cfg.target_acc is not None
        else "0.9 x the weaker arch's mean best val top-1",
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "summary": summary,
        "paired_difference": {"of": f"{other} - {base}", **paired},
        "runs": runs,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_curves(result, out / "curves.png")
    log(format_summary(result))
    return result


def _curve(runs: Sequence[dict[str, Any]], key: str) -> dict[str, list[float | None]]:
    """Per epoch, mean and sample std over seeds."""
    n = min(len(r["history"]) for r in runs)
    stats = [_mean_std([r["history"][e][key] for r in runs]) for e in range(n)]
    return {"mean": [s["mean"] for s in stats], "std": [s["std"] for s in stats]}


def plot_curves(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Validation top-1 and training loss per epoch, mean +- std over seeds, one line per arch."""
    from ..analysis_classwise import Panel, Series, plot_line_panels

    panels = []
    for key, title, ylabel in (
        ("curve_val_top1", "validation top-1 (mean +- std over seeds)", "top-1"),
        ("curve_train_loss", "training loss (mean +- std over seeds)", "loss"),
    ):
        series = []
        for arch, s in result["summary"].items():
            mean, std = s[key]["mean"], s[key]["std"]
            series.append(Series(arch, mean, x=list(range(1, len(mean) + 1)), band=std))
        panels.append(Panel(title, series, xlabel="epoch", ylabel=ylabel))
    cfg = result["config"]
    title = (
        f"{' vs '.join(cfg['archs'])}: width {cfg['width']:g}, {result['input_size']}px, "
        f"{cfg['limit'] or 'all'} train images, seeds {cfg['seeds']}"
    )
    return plot_line_panels(panels, path, title=title)


def _pm(s: dict[str, Any], pct: bool = True) -> str:
    if s["mean"] is None:
        return "-"
    if pct:
        return f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f}"
    return f"{s['mean']:.2f} ± {s['std']:.2f}"


def format_summary(result: dict[str, Any]) -> str:
    n = len(result["config"]["seeds"])
    lines = [
        f"mean ± std over {n} seed(s); target val top-1 {result['target_acc']:.2%} ({result['target_rule']})",
        f"{'arch':<10} {'params':>11}  {'val top-1 %':>15}  {'test top-1 %':>15}  {'test top-5 %':>15}  "
        f"{'epochs→target':>19}  {'s/epoch':>13}",
    ]
    for arch, s in result["summary"].items():
        e = s["epochs_to_target"]
        reached = f"{_pm(e, False)} ({e['reached']}/{n})" if e["mean"] is not None else f"- (0/{n})"
        lines.append(
            f"{arch:<10} {s['params']:>11,}  {_pm(s['val_top1']):>15}  {_pm(s['test_top1']):>15}  "
            f"{_pm(s['test_top5']):>15}  {reached:>19}  {_pm(s['sec_per_epoch'], False):>13}"
        )
    p = result["paired_difference"]
    lines.append(
        f"paired {p['of']}: val top-1 {_pm(p['val_top1'])} pts, test top-1 {_pm(p['test_top1'])} pts, "
        f"s/epoch {_pm(p['sec_per_epoch'], False)}"
    )
    return "\n".join(lines)
