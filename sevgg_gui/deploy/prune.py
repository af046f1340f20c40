"""``sevgg prune``: structured channel pruning of VGG16(-SE) that keeps every SE block consistent (article 9.3).

Removing output channel c of a conv removes, everywhere it is read:

* the conv's filter c and bias c;
* column c of the SE block's ``fc.0`` and row c of its ``fc.2``, when the conv feeds an SE block (the
  squeeze of channel c and the gate of channel c both disappear; the gate MLP keeps its hidden width);
* input channel c of the next conv, or, after the last block, the ``oh * ow`` columns of
  ``classifier.0`` that ``flatten`` gives channel c (channel-major: ``c*49 .. c*49+48`` for 7x7).

A channel that is always zero (zero filter and bias) therefore leaves the function unchanged: the
tests prove the surgery that way. The result is a real, smaller model (new layers), rebuilt from its
per-layer widths (``cfg``), which the checkpoint stores so :func:`~sevgg_gui.training.models.load_trained`
(hence ``sevgg eval``, ``export`` and the app) re-creates it.

Criteria: ``l1`` ranks a conv's filters by L1 norm (Li et al. 2017); ``excitation`` ranks the channels
an SE block gates by their mean gate over a data set (channels the SE always suppresses contribute
little) and falls back to L1 for convs inside a block, which no gate watches.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.se import SEBlock

Log = Callable[[str], None]
CRITERIA: tuple[str, ...] = ("l1", "excitation")
ALLOCATIONS: tuple[str, ...] = ("uniform", "global")


class PruneError(ValueError):
    """A model this pruner cannot handle; one line."""


@dataclass(frozen=True)
class ConvSite:
    """One conv of ``features`` and the layers that read its output channels."""

    index: int  # position in ``features``
    channels: int
    se: int | None  # position of the SE block that gates this conv's output, if any
    next_conv: int | None  # position of the next conv; None: the last conv (feeds classifier.0)


def vgg_layout(model: nn.Module) -> tuple[list[int | str], list[ConvSite]]:
    """The model's config list (actual widths, "SE", "M") and its convs with their readers.

    Accepts VGGSE (any config, slim or not) and torchvision's VGG without batch norm: a ``features``
    Sequential of 3x3 convs, ReLUs, SE blocks and max-pools, then ``avgpool`` and ``classifier``.
    """
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential) or not isinstance(classifier, nn.Sequential):
        raise PruneError(f"{type(model).__name__}: not a VGG (features + classifier Sequentials expected)")
    if not isinstance(classifier[0], nn.Linear):
        raise PruneError(f"{type(model).__name__}: classifier.0 is not a Linear layer")
    cfg: list[int | str] = []
    convs: list[int] = []
    se_of: dict[int, int] = {}
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.kernel_size != (3, 3) or m.bias is None:
                raise PruneError(f"features.{i}: only plain 3x3 convs with bias can be pruned here")
            cfg.append(int(m.out_channels))
            convs.append(i)
        elif isinstance(m, SEBlock):
            if not convs:
                raise PruneError(f"features.{i}: an SE block before any conv")
            cfg.append("SE")
            se_of[convs[-1]] = i
        elif isinstance(m, nn.MaxPool2d):
            cfg.append("M")
        elif not isinstance(m, nn.ReLU):
            raise PruneError(f"features.{i}: {type(m).__name__} is not supported by the pruner")
    if not convs:
        raise PruneError(f"{type(model).__name__}: no convolutions")
    sites = [
        ConvSite(i, int(features[i].out_channels), se_of.get(i), convs[j + 1] if j + 1 < len(convs) else None)
        for j, i in enumerate(convs)
    ]
    return cfg, sites


# ----------------------------------------------------------------------------------- scoring
def l1_scores(model: nn.Module) -> dict[int, torch.Tensor]:
    """Per conv (features index): the L1 norm of each output filter."""
    _cfg, sites = vgg_layout(model)
    feats = model.features  # type: ignore[attr-defined]
    return {s.index: feats[s.index].weight.detach().abs().sum(dim=(1, 2, 3)).double() for s in sites}


@torch.inference_mode()
def mean_excitations(
    model: nn.Module, batches: Iterable[Any], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Mean gate per channel of every SE block over ``batches`` ((x, y) pairs or tensors)."""
    from ..recorder import ExcitationRecorder

    sums: dict[str, torch.Tensor] = {}
    n = 0
    was_training = model.training
    model.eval().to(device)
    try:
        with ExcitationRecorder(model) as rec:
            for batch in batches:
                x = batch[0] if isinstance(batch, list | tuple) else batch
                model(x.to(device))
                for name, g in rec.excitations.items():
                    sums[name] = sums.get(name, 0) + g.double().sum(0)  # type: ignore[operator]
                n += len(x)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("no images to measure the excitations on")
    return {k: v / n for k, v in sums.items()}


def excitation_scores(model: nn.Module, mean_gates: Mapping[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Per conv: its SE block's mean gate where a block gates it, else the L1 norm of its filters."""
    _cfg, sites = vgg_layout(model)
    scores = l1_scores(model)
    for s in sites:
        if s.se is not None:
            key = f"features.{s.se}"
            if key not in mean_gates:
                raise PruneError(f"no recorded excitations for {key}")
            scores[s.index] = mean_gates[key].double().cpu()
    return scores


def plan_pruning(
    model: nn.Module,
    ratio: float,
    scores: Mapping[int, torch.Tensor] | None = None,
    *,
    scope: str = "all",
    allocation: str = "uniform",
    min_keep: float = 0.1,
) -> dict[int, torch.Tensor]:
    """Channels to keep per conv (ties: lower index first, at least one channel stays).

    ``allocation="uniform"``: every conv in scope loses ``floor(ratio * C)`` of its lowest-scoring
    channels. ``"global"``: ``floor(ratio * total)`` channels go across all convs in scope, the
    lowest after dividing each conv's scores by that conv's largest, so layers whose channels score
    alike keep more and layers with many weak channels lose more (non-uniform widths); every conv
    keeps at least ``ceil(min_keep * C)``. ``scope``: ``all`` convs, or ``se``: only SE-gated ones.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    if scope not in ("all", "se"):
        raise ValueError(f"scope must be 'all' or 'se', got {scope!r}")
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {allocation!r}")
    if not 0.0 < min_keep <= 1.0:
        raise ValueError(f"min_keep must be in (0, 1], got {min_keep}")
    _cfg, sites = vgg_layout(model)
    scores = dict(scores) if scores is not None else l1_scores(model)
    for s in sites:
        if scores[s.index].numel() != s.channels:
            raise PruneError(
                f"features.{s.index}: {scores[s.index].numel()} scores for {s.channels} channels"
            )
    in_scope = [s for s in sites if scope == "all" or s.se is not None]
    if allocation == "uniform":
        drops = {s.index: int(ratio * s.channels) for s in in_scope}
    else:
        drops = _global_drops(in_scope, scores, ratio, min_keep)
    keep: dict[int, torch.Tensor] = {}
    for s in sites:
        n_drop = min(drops.get(s.index, 0), s.channels - 1)
        order = torch.argsort(scores[s.index], stable=True)
        keep[s.index] = torch.sort(order[n_drop:]).values
    return keep


def _global_drops(
    sites: Sequence[ConvSite], scores: Mapping[int, torch.Tensor], ratio: float, min_keep: float
) -> dict[int, int]:
    """How many channels each conv loses when the ``floor(ratio * total)`` globally weakest go."""
    budget = int(ratio * sum(s.channels for s in sites))
    floor_keep = {s.index: max(1, math.ceil(min_keep * s.channels)) for s in sites}
    # (normalised score, share of its conv below it, site position): equal scores are taken from
    # every conv in proportion to its width, not from the first conv until it hits its floor.
    entries: list[tuple[float, float, int]] = []
    for pos, s in enumerate(sites):
        sc = scores[s.index].double()
        top = float(sc.max()) if sc.numel() else 0.0
        norm = sc / top if top > 0 else torch.zeros_like(sc)
        for rank, v in enumerate(torch.sort(norm, stable=True).values.tolist()):
            entries.append((v, rank / s.channels, pos))
    entries.sort()
    drops = {s.index: 0 for s in sites}
    for _v, _share, pos in entries:
        if budget == 0:
            break
        s = sites[pos]
        if s.channels - drops[s.index] > floor_keep[s.index]:  # a conv's weakest go first, in order
            drops[s.index] += 1
            budget -= 1
    return drops


# ----------------------------------------------------------------------------------- surgery
def pruned_state_dict(
    model: nn.Module, keep: Mapping[int, Sequence[int] | torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[int | str]]:
    """The sliced state dict and the new config for keeping ``keep[conv index]`` channels
    (a conv absent from ``keep`` keeps all its channels)."""
    cfg, sites = vgg_layout(model)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    new = dict(sd)  # untouched tensors are shared: load_state_dict copies them into the new layers
    prev: torch.Tensor | None = None  # kept input channels of the current conv
    widths: dict[int, int] = {}
    for s in sites:
        k = torch.as_tensor(keep.get(s.index, range(s.channels)), dtype=torch.long).flatten()
        if k.numel() == 0:
            raise PruneError(f"features.{s.index}: at least one channel must stay")
        if k.min() < 0 or k.max() >= s.channels or k.unique().numel() != k.numel():
            raise PruneError(f"features.{s.index}: channel indices out of range or repeated")
        w, b = f"features.{s.index}.weight", f"features.{s.index}.bias"
        weight = sd[w] if prev is None else sd[w][:, prev]
        new[w] = weight[k]  # advanced indexing: new tensors
        new[b] = sd[b][k]
        if s.se is not None:
            f0, f2 = f"features.{s.se}.fc.0.weight", f"features.{s.se}.fc.2.weight"
            new[f0] = sd[f0][:, k]  # the squeeze of channel c feeds column c
            new[f2] = sd[f2][k]  # row c computes the gate of channel c
        widths[s.index] = int(k.numel())
        prev = k
    assert prev is not None
    w0 = sd["classifier.0.weight"]
    c_last = sites[-1].channels
    if w0.shape[1] % c_last:
        raise PruneError(f"classifier.0 has {w0.shape[1]} inputs, not a multiple of {c_last} channels")
    spatial = w0.shape[1] // c_last  # flatten is channel-major: channel c owns columns c*s .. c*s+s-1
    new["classifier.0.weight"] = w0.view(w0.shape[0], c_last, spatial)[:, prev].reshape(w0.shape[0], -1)
    new_cfg: list[int | str] = []
    conv_iter = iter(sites)
    for item in cfg:
        new_cfg.append(widths[next(conv_iter).index] if isinstance(item, int) else item)
    return new, new_cfg


def rebuild_kwargs(model: nn.Module) -> dict[str, Any]:
    """Classifier width, SE hidden widths, reduction and dropout of ``model`` (kept by pruning)."""
    se_hidden = [int(m.fc[0].out_features) for m in model.features if isinstance(m, SEBlock)]  # type: ignore[attr-defined]
    drop = next((m.p for m in model.modules() if isinstance(m, nn.Dropout)), 0.5)
    return {
        "hidden": int(model.classifier[0].out_features),  # type: ignore[attr-defined,index]
        "se_hidden": se_hidden or None,
        "reduction": int(getattr(model, "reduction", 16)),
        "dropout": float(drop),
    }


def prune_model(model: nn.Module, keep: Mapping[int, Sequence[int] | torch.Tensor]) -> nn.Module:
    """A new, smaller VGG(-SE) computing ``model`` without the dropped channels (eval mode)."""
    from ..training.models import build_from_cfg

    sd, cfg = pruned_state_dict(model, keep)
    kw = rebuild_kwargs(model)
    num_classes = int(model.classifier[-1].out_features)  # type: ignore[attr-defined,index]
    pruned = build_from_cfg(cfg, num_classes, **kw)
    pruned.load_state_dict(sd, strict=True)
    for attr in ("class_names", "provenance"):
        if hasattr(model, attr):
            setattr(pruned, attr, getattr(model, attr))
    return pruned.eval()


def expected_params(cfg: Sequence[int | str], num_classes: int, hidden: int, se_hidden: Sequence[int]) -> int:
    """Parameter count of a VGG(-SE) from its widths (convs + biases, bias-free SE FCs, classifier)."""
    total, c_in, se = 0, 3, iter(se_hidden)
    for item in cfg:
        if item == "SE":
            total += 2 * c_in * next(se)
        elif item != "M":
            c = int(item)
            total += c_in * c * 9 + c
            c_in = c
    return (
        total
        + (c_in * 49 * hidden + hidden)
        + (hidden * hidden + hidden)
        + (hidden * num_classes + num_classes)
    )


# ----------------------------------------------------------------------------------- measuring
def cpu_latency_ms(
    model: nn.Module, input_size: int, *, runs: int = 7, warmup: int = 2, batch: int = 1
) -> float:
    """Median wall time of a forward on CPU (batch 1 by default), in milliseconds."""
    model = model.eval()
    x = torch.randn(batch, 3, input_size, input_size)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


@dataclass
class ModelStats:
    params: int
    macs: int
    latency_ms: float
    top1: float | None = None
    top5: float | None = None
    widths: list[int] = field(default_factory=list)


def model_stats(
    model: nn.Module, input_size: int, *, runs: int = 7, eval_fn: Callable[[nn.Module], Any] | None = None
) -> ModelStats:
    from ..analysis import count_params, layer_macs

    model.eval()
    cfg, _ = vgg_layout(model)
    stats = ModelStats(
        params=count_params(model),
        macs=layer_macs(model, (input_size, input_size)).total_macs,
        latency_ms=round(cpu_latency_ms(model, input_size, runs=runs), 3),
        widths=[int(c) for c in cfg if isinstance(c, int)],
    )
    if eval_fn is not None:
        sums = eval_fn(model)
        stats.top1, stats.top5 = round(sums.top1, 6), round(sums.top5, 6)
    return stats


# ----------------------------------------------------------------------------------- sevgg prune
@dataclass
class PruneConfig:
    checkpoint: str
    out: str
    ratio: float = 0.25
    criterion: str = "l1"
    scope: str = "all"
    allocation: str = "uniform"  # or "global": non-uniform widths from one ranking across layers
    data: str | None = None  # for accuracy, the excitation criterion and fine-tuning
    split: str = "test"  # where accuracy is measured
    limit: int | None = 1000  # evaluation images (class-balanced)
    calib_limit: int = 512  # training images the excitation criterion averages over
    finetune_epochs: int = 0
    finetune_limit: int | None = None  # training images for the fine-tune (default: all)
    finetune_lr: float = 1e-3
    finetune_distill: bool = False  # the unpruned model as teacher while fine-tuning
    batch_size: int = 64
    latency_runs: int = 7
    cache_dir: str | None = None
    device: str = "auto"
    seed: int = 0


@dataclass
class PruneReport:
    checkpoint: str
    out: str
    ratio: float
    criterion: str
    scope: str
    input_size: int
    before: ModelStats
    after: ModelStats
    finetuned: ModelStats | None = None
    finetune_history: list[dict[str, Any]] = field(default_factory=list)
    eval_split: str | None = None
    eval_images: int = 0
    allocation: str = "uniform"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        rows = [("before", self.before), ("pruned", self.after)]
        if self.finetuned is not None:
            rows.append((f"fine-tuned ({len(self.finetune_history)} ep)", self.finetuned))
        acc = f" on {self.eval_images} {self.eval_split} images" if self.eval_images else ""
        lines = [
            f"{self.checkpoint} -> {self.out}: ratio {self.ratio:g}, criterion {self.criterion}, "
            f"scope {self.scope}, {self.allocation} allocation, {self.input_size}px{acc}",
            f"{'':<22}{'params':>13}{'MACs':>15}{'CPU ms (b=1)':>14}{'top-1':>9}{'top-5':>9}",
        ]
        for name, s in rows:
            t1 = "-" if s.top1 is None else f"{s.top1:.2%}"
            t5 = "-" if s.top5 is None else f"{s.top5:.2%}"
            lines.append(f"{name:<22}{s.params:>13,}{s.macs:>15,}{s.latency_ms:>14.2f}{t1:>9}{t5:>9}")
        b, a = self.before, self.after
        lines.append(
            f"params x{a.params / b.params:.3f}, MACs x{a.macs / b.macs:.3f}, "
            f"latency x{a.latency_ms / max(1e-9, b.latency_ms):.3f}; widths {b.widths} -> {a.widths}"
        )
        return "\n".join(lines)


def prune_checkpoint(cfg: PruneConfig, *, log: Log = print) -> PruneReport:
    """Load, score, prune, measure (and optionally fine-tune) a checkpoint; writes ``cfg.out``."""
    from torch.utils.data import DataLoader

    from ..analysis_classwise import checkpoint_dataset
    from ..checkpoints import save_checkpoint, sha256_file
    from ..training.distributed import _pick_device
    from ..training.evaluate import accumulate
    from ..training.models import load_trained
    from .distill import carried_metadata

    if cfg.criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {cfg.criterion!r}: use {', '.join(CRITERIA)}")
    if cfg.criterion == "excitation" and not cfg.data:
        raise ValueError("--criterion excitation needs --data (the gates are averaged over images)")
    if cfg.finetune_epochs and not cfg.data:
        raise ValueError("--finetune-epochs needs --data")
    model, meta = load_trained(cfg.checkpoint)
    model = model.cpu().eval()
    size = int(meta.get("input_size") or 224)
    device = _pick_device(cfg.device, 0)
    names: list[str] | None = None
    eval_fn = None
    n_eval = 0
    if cfg.data:
        test_set, names = checkpoint_dataset(
            meta, cfg.data, split=cfg.split, limit=cfg.limit, cache_dir=cfg.cache_dir
        )
        n_eval = len(test_set)
        loader = DataLoader(test_set, batch_size=cfg.batch_size)

        def eval_fn(m: nn.Module) -> Any:
            try:
                return accumulate(m.to(device), loader, device, len(names))  # type: ignore[arg-type]
            finally:
                m.cpu()

    before = model_stats(model, size, runs=cfg.latency_runs, eval_fn=eval_fn)
    if cfg.criterion == "excitation":
        calib, _ = checkpoint_dataset(
            meta,
            cfg.data,
            split="train",
            limit=cfg.calib_limit,
            cache_dir=cfg.cache_dir,  # type: ignore[arg-type]
        )
        gates = mean_excitations(model, DataLoader(calib, batch_size=cfg.batch_size), device)
        model.cpu()
        scores = excitation_scores(model, gates)
    else:
        scores = l1_scores(model)
    keep = plan_pruning(model, cfg.ratio, scores, scope=cfg.scope, allocation=cfg.allocation)
    pruned = prune_model(model, keep)
    after = model_stats(pruned, size, runs=cfg.latency_runs, eval_fn=eval_fn)
    log(f"pruned {before.params:,} -> {after.params:,} parameters")

    history: list[dict[str, Any]] = []
    finetuned = None
    if cfg.finetune_epochs:
        from ..training.data import load_datasets
        from ..training.train import seed_everything
        from .distill import FitOptions, fit

        split_seed = int(meta.get("split_seed", 0) or 0)
        data = load_datasets(
            cfg.data,  # type: ignore[arg-type]
            input_size=size,
            augment="light",
            val_fraction=float(meta.get("val_fraction", 0.1) or 0.1),
            seed=split_seed,
            limit=cfg.finetune_limit,
            val_limit=cfg.limit,
            cache_dir=cfg.cache_dir,
        )
        seed_everything(cfg.seed)
        opts = FitOptions(
            epochs=cfg.finetune_epochs, batch_size=cfg.batch_size, lr=cfg.finetune_lr, seed=cfg.seed
        )
        teacher = model if cfg.finetune_distill else None
        history = fit(pruned, data.train, data.val, opts, teacher=teacher, device=device, log=log)  # type: ignore[arg-type]
        pruned.cpu().eval()
        finetuned = model_stats(pruned, size, runs=cfg.latency_runs, eval_fn=eval_fn)

    new_cfg, _ = vgg_layout(pruned)
    kw = rebuild_kwargs(pruned)
    _cfg0, sites0 = vgg_layout(model)
    source = carried_metadata(meta)
    source.setdefault("arch", "vgg16_se" if kw["se_hidden"] else "vgg16")
    source.update(
        {
            "cfg": new_cfg,
            "hidden": kw["hidden"],
            "se_hidden": kw["se_hidden"] or [],
            "reduction": kw["reduction"],
            "dropout": kw["dropout"],
            "input_size": size,
            "pruned": {
                "source": Path(cfg.checkpoint).name,
                "ratio": float(cfg.ratio),
                "criterion": cfg.criterion,
                "scope": cfg.scope,
                "allocation": cfg.allocation,
                "params_before": before.params,
                "finetune_epochs": int(cfg.finetune_epochs),
                # Which of the source's channels each SE block kept (block name -> source channel
                # indices, in the pruned model's order): `sevgg diff` pairs channels by origin with it.
                "source_sha256": sha256_file(cfg.checkpoint),
                "kept_channels": {
                    f"features.{s.se}": [int(c) for c in keep[s.index].tolist()]
                    for s in sites0
                    if s.se is not None
                },
            },
        }
    )
    final = finetuned or after
    pruned.provenance = (  # type: ignore[attr-defined]
        f"sevgg prune of {Path(cfg.checkpoint).name} (ratio {cfg.ratio:g}, {cfg.criterion}"
        + (f", {cfg.finetune_epochs} fine-tune epoch(s)" if cfg.finetune_epochs else "")
        + ")"
    )
    save_checkpoint(
        pruned,
        cfg.out,
        class_names=names or meta.get("class_names"),
        extra={"finetune_history": history} if history else None,
        **source,
        val_acc=final.top1,
    )
    return PruneReport(
        checkpoint=str(cfg.checkpoint),
        out=str(cfg.out),
        ratio=cfg.ratio,
        criterion=cfg.criterion,
        scope=cfg.scope,
        input_size=size,
        before=before,
        after=after,
        finetuned=finetuned,
        finetune_history=history,
        eval_split=cfg.split if cfg.data else None,
        eval_images=n_eval,
        allocation=cfg.allocation,
    )


def write_report(report: PruneReport, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return path
