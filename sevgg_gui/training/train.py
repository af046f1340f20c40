"""The training loop behind ``sevgg train``: the article's recipe (sections 6, 7, 9), resumable exactly.

Recipe: two learning rates (backbone 1e-5, SE blocks + classifier 1e-4), three-stage progressive
unfreezing, dropout, weight decay, label smoothing, gradient clipping and gradient accumulation (a
larger effective batch when memory is short), linear warm-up then cosine decay per optimizer step.

Resumability: every epoch the checkpoint (written atomically) carries the optimizer, scheduler, AMP
scaler and every RNG state (torch, CUDA, numpy, python; one set per rank) as plain tensors and lists,
so it loads with ``torch.load(weights_only=True)``. Data order is a pure function of (seed, epoch),
and the loader's own seed comes from a per-epoch generator, so a resumed run draws the same random
numbers as an uninterrupted one: on CPU the weights come out bit-identical. Ctrl-C (or SIGTERM from a
cluster) stops at the next optimizer step and saves a mid-epoch checkpoint that resumes exactly too.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from . import distributed as D
from .data import MEAN, STD, DataError, Datasets, load_datasets, resize_for
from .evaluate import EvalSums, accumulate
from .models import ARCHS, apply_stage, build_model, model_metadata, param_groups
from .stop import install_stop_handlers

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    """Everything that defines a run; stored in each checkpoint so ``--resume`` needs no flags."""

    data: str | None = None
    out: str = "sevgg_train.pth"
    epochs: int | None = None  # default: sum(stages), else 10
    stages: list[int] | None = None  # epochs of stages 1, 2, 3; None: everything trainable throughout
    unfreeze_blocks: int = 1  # conv blocks unfrozen in stage 2, counted from the top
    arch: str = "vgg16_se"
    width: float = 1.0
    reduction: int = 16
    init: str | None = None  # imagenet | random | PATH; None: imagenet at full width, else random
    se_init: str = "default"  # with random init: "neutral" starts each SE as a pass-through
    input_size: int | None = None  # None: the data set's natural size (224 photos, 32 small sets)
    augment: str = "light"
    val_fraction: float = 0.1
    limit: int | None = None
    val_limit: int | None = None
    cache_dir: str | None = None
    batch_size: int = 64  # global: split over DDP ranks
    accum_steps: int = 1
    optimizer: str = "adamw"
    lr_backbone: float | None = None  # None: by init, see default_learning_rates
    lr_head: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.01
    dropout: float = 0.5
    label_smoothing: float = 0.1
    clip_grad: float = 1.0  # max global grad norm; 0 disables
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.01
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | fp16 | bf16 | off
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    deterministic: bool = False
    log_csv: str | None = None  # default: OUT with .csv
    log_interval: int = 0  # print a line every N optimizer steps (0: per epoch only)
    keep_best: bool = False  # also write OUT.best.pth on each validation improvement
    stop_after: int | None = None  # end this invocation after N epochs (time-limited jobs)
    resume: str | None = None

    # Fields that describe the model (or its data interface): a resumed run always keeps the saved ones.
    MODEL_FIELDS = ("arch", "width", "reduction", "input_size", "data", "val_fraction", "limit", "val_limit")
    # Fields that belong to one invocation and are never inherited by --resume.
    PER_INVOCATION = ("stop_after", "resume")


@dataclass
class TrainResult:
    checkpoint: Path
    epochs_done: int
    history: list[dict[str, Any]]
    interrupted: bool
    best_val_acc: float
    model: nn.Module = field(repr=False)


@dataclass
class Callbacks:
    """Hooks for tests and embedding: called on every rank with the trainer."""

    on_step: Callable[[Trainer], None] | None = None
    on_epoch_end: Callable[[Trainer, dict[str, Any]], None] | None = None


# ----------------------------------------------------------------------------------------- RNG
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain lists: loadable with ``weights_only=True``."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": [int(v) for v in internal], "gauss_next": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# ----------------------------------------------------------------------------------------- config
# The article's fine-tuning rates suit a backbone that already knows images; from random weights they
# barely move it (measured, Fashion-MNIST 3,000 images, width 0.125, 2 epochs, 32 px: 10.0% test
# top-1 with 1e-5/1e-4, i.e. chance, against 28.1% with 1e-3 for both; 3e-4 gave 16.7%, 3e-3 diverged).
FINE_TUNE_LRS = (1e-5, 1e-4)
FROM_SCRATCH_LRS = (1e-3, 1e-3)


def default_learning_rates(init: str) -> tuple[float, float, str]:
    """(backbone, head, why) for a run whose ``--init`` is ``init`` (already resolved)."""
    if init == "random":
        return (*FROM_SCRATCH_LRS, "random init: from-scratch rates")
    return (
        *FINE_TUNE_LRS,
        f"{'ImageNet' if init == 'imagenet' else 'checkpoint'} init: the article's fine-tuning rates",
    )


def learning_rate_note(given: TrainConfig, resolved: TrainConfig, *, resumed: bool = False) -> str:
    """Which learning rates a run uses and why, for its start line (``given``: before defaults)."""
    rates = f"lr {resolved.lr_backbone:g}/{resolved.lr_head:g} (backbone/head"
    if given.lr_backbone is not None and given.lr_head is not None:
        return f"{rates}, as given)"
    if resumed:
        return f"{rates}, the resumed run's unless given)"
    _, _, why = default_learning_rates(str(resolved.init))
    if given.lr_backbone is None and given.lr_head is None:
        return f"{rates}: {why})"
    return f"{rates}: {'head' if given.lr_head is not None else 'backbone'} as given, the other by {why})"


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill derived defaults and reject contradictions with one line each."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown --arch {cfg.arch!r}: use {', '.join(ARCHS)}")
    stages = list(cfg.stages) if cfg.stages else None
    if stages is not None:
        if len(stages) != 3 or any(s < 0 for s in stages) or sum(stages) == 0:
            raise ValueError(f"--stages needs three epoch counts A,B,C >= 0, got {cfg.stages}")
        if cfg.epochs is not None and cfg.epochs != sum(stages):
            raise ValueError(f"--epochs {cfg.epochs} contradicts --stages {stages} (sum {sum(stages)})")
    epochs = cfg.epochs if cfg.epochs is not None else (sum(stages) if stages else 10)
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    init = cfg.init or ("imagenet" if cfg.width == 1.0 and cfg.arch != "vgg11_se" else "random")
    if cfg.batch_size < 1 or cfg.accum_steps < 1:
        raise ValueError("--batch-size and --accum-steps must be >= 1")
    if cfg.optimizer not in ("adamw", "sgd"):
        raise ValueError(f"unknown --optimizer {cfg.optimizer!r}: use adamw or sgd")
    if cfg.amp not in ("auto", "fp16", "bf16", "off"):
        raise ValueError(f"unknown --amp {cfg.amp!r}: use auto, fp16, bf16 or off")
    log_csv = cfg.log_csv or str(Path(cfg.out).with_suffix(".csv"))
    lr_backbone, lr_head, _ = default_learning_rates(init)
    return replace(
        cfg,
        epochs=epochs,
        stages=stages,
        init=init,
        log_csv=log_csv,
        lr_backbone=cfg.lr_backbone if cfg.lr_backbone is not None else lr_backbone,
        lr_head=cfg.lr_head if cfg.lr_head is not None else lr_head,
    )


def merge_resumed(cfg: TrainConfig, saved: dict[str, Any], explicit: Iterable[str] | None) -> TrainConfig:
    """Saved config, overridden by what the user set explicitly now; model fields always the saved."""
    known = {f.name for f in fields(TrainConfig)}
    explicit_set = set(explicit) if explicit is not None else known
    merged = {k: v for k, v in saved.items() if k in known and k not in TrainConfig.PER_INVOCATION}
    for k in explicit_set & known:
        if k in TrainConfig.MODEL_FIELDS and k in merged and k != "data":
            continue
        merged[k] = getattr(cfg, k)
    if "data" not in explicit_set or not cfg.data:
        merged["data"] = saved.get("data")
    if "epochs" in explicit_set and "stages" not in explicit_set and saved.get("stages"):
        # More (or fewer) epochs than planned: the extra ones are stage 3 (all trainable).
        a, b, _c = saved["stages"]
        merged["stages"] = [a, b, max(0, cfg.epochs - a - b)] if cfg.epochs else saved["stages"]
    merged["resume"] = cfg.resume
    if "out" not in explicit_set:
        merged["out"] = cfg.resume
    elif "log_csv" not in explicit_set:
        merged["log_csv"] = None  # follow the new --out
    return TrainConfig(**merged)


def stage_of(epoch: int, stages: list[int] | None) -> int:
    if not stages:
        return 3
    a, b, _ = stages
    return 1 if epoch < a else 2 if epoch < a + b else 3


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at the last step."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------------------- trainer
class Trainer:
    """One training run; ``run()`` returns a :class:`TrainResult`."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        explicit: Iterable[str] | None = None,
        callbacks: Callbacks | None = None,
        log: Log = print,
        info: D.DistInfo | None = None,
    ) -> None:
        self.info = info or D.setup(cfg.device)
        self.callbacks = callbacks or Callbacks()
        self._log = log
        self.stop_requested = False
        self.payload: dict[str, Any] | None = None
        given = cfg
        if cfg.resume:
            self.payload = load_training_checkpoint(cfg.resume)
            cfg = merge_resumed(cfg, self.payload["config"], explicit)
        self.cfg = resolve_config(cfg)
        self.lr_note = learning_rate_note(given, self.cfg, resumed=self.payload is not None)
        cfg = self.cfg
        if not cfg.data:
            raise ValueError("--data is required (KIND:PATH or an ImageFolder folder)")
        world = self.info.world_size
        if cfg.batch_size % world:
            raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {world} DDP ranks")
        self.local_batch = cfg.batch_size // world
        self.device = self.info.device
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.amp_dtype = self._amp_dtype()

        seed_everything(cfg.seed)
        self.data: Datasets = load_datasets(
            cfg.data,
            input_size=cfg.input_size,
            augment=cfg.augment,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            limit=cfg.limit,
            val_limit=cfg.val_limit if cfg.val_limit is not None else cfg.limit,
            cache_dir=cfg.cache_dir,
        )
        self.cfg = cfg = replace(cfg, input_size=self.data.input_size)
        self.class_names = self.data.class_names
        if self.payload is not None:
            saved = self.payload.get("meta", {}).get("class_names")
            if saved is not None and list(saved) != self.class_names:
                raise DataError(f"{cfg.data}: classes {self.class_names[:4]}... differ from the checkpoint's")

        init = "none" if self.payload is not None else cfg.init
        self.model = build_model(
            cfg.arch,
            len(self.class_names),
            width=cfg.width,
            reduction=cfg.reduction,
            dropout=cfg.dropout,
            init=init or "random",
            se_init=cfg.se_init,
        ).to(self.device)
        # Per-rank streams for augmentation and dropout (rank 0's equals a single-process run's).
        seed_everything(cfg.seed + self.info.rank)

        groups = param_groups(self.model, cfg.lr_backbone, cfg.lr_head, cfg.weight_decay)
        if cfg.optimizer == "adamw":
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(groups)
        else:
            self.optimizer = torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
        assert self.data.train is not None
        self.sampler = D.EpochSampler(
            len(self.data.train), rank=self.info.rank, world_size=world, seed=cfg.seed
        )
        self.batches_per_epoch = -(-self.sampler.per_rank // self.local_batch)
        self.steps_per_epoch = -(-self.batches_per_epoch // cfg.accum_steps)
        total = self.steps_per_epoch * cfg.epochs
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total, warmup, cfg.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

        self.epoch = 0  # epochs completed
        self.step_in_epoch = 0  # optimizer steps done in the current epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_val_acc = -1.0
        self.partial = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
        if self.payload is not None:
            self._restore(self.payload)
            self.payload = None  # free the copy of the weights

    # ------------------------------------------------------------------ helpers
    def log(self, msg: str) -> None:
        if self.info.is_main:
            self._log(msg)

    def request_stop(self) -> None:
        """Stop after the current optimizer step, save, and return (what Ctrl-C does)."""
        self.stop_requested = True

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.amp
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if self.device.type != "cuda":
            raise ValueError("--amp fp16/bf16 needs a CUDA device (AMP is CUDA-only here)")
        if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.epoch = int(payload["epoch"])
        self.step_in_epoch = int(payload.get("step_in_epoch", 0))
        self.global_step = int(payload.get("global_step", 0))
        self.history = list(payload.get("history", []))
        self.best_val_acc = float(payload.get("best_val_acc", -1.0))
        self.partial = dict(payload.get("partial") or self.partial)
        rngs = payload.get("rng") or []
        if rngs:
            if len(rngs) != self.info.world_size:
                self.log(
                    f"note: saved with {len(rngs)} rank(s), resuming with {self.info.world_size}: "
                    "random streams are not continued exactly"
                )
            set_rng_state(rngs[self.info.rank % len(rngs)])
        self.model.provenance = payload.get("meta", {}).get("provenance", "")  # type: ignore[attr-defined]
        where = (
            f"epoch {self.epoch + 1}, step {self.step_in_epoch}"
            if self.step_in_epoch
            else f"epoch {self.epoch + 1}"
        )
        self.log(f"resumed from {self.cfg.resume}: continuing at {where} of {self.cfg.epochs}")

    def metadata(self) -> dict[str, Any]:
        cfg = self.cfg
        last = self.history[-1] if self.history else {}
        return {
            **model_metadata(cfg.arch, cfg.width, cfg.reduction, cfg.dropout),
            "input_size": int(self.data.input_size),
            "resize_size": resize_for(self.data.input_size),
            "mean": list(MEAN),
            "std": list(STD),
            "data": str(self.data.spec),
            "val_fraction": cfg.val_fraction,
            "split_seed": cfg.seed,
            "epochs_trained": self.epoch,
            "val_acc": last.get("val_acc"),
        }

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path | None = None, *, interrupted: bool = False) -> Path:
        """Collective: every rank calls it (RNG states are gathered); rank 0 writes."""
        rngs = D.gather_objects(rng_state(), self.info)
        path = Path(path or self.cfg.out)
        if self.info.is_main:
            self._write(path, rngs, interrupted)
        D.barrier(self.info)
        return path

    def _write(self, path: Path, rngs: list[dict[str, Any]], interrupted: bool) -> None:
        from ..checkpoints import save_checkpoint

        last = self.history[-1] if self.history else {}
        self.model.provenance = (  # type: ignore[attr-defined]
            f"sevgg train on {self.data.spec.kind} ({self.epoch} epoch(s)"
            + (f", val top-1 {last['val_acc']:.2%})" if last.get("val_acc") is not None else ")")
        )
        extra = {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rngs,
            "partial": dict(self.partial),
            "history": self.history,
            "best_val_acc": self.best_val_acc,
            "config": asdict(self.cfg),
            "world_size": self.info.world_size,
            "interrupted": interrupted,
        }
        save_checkpoint(self.model, path, class_names=self.class_names, extra=extra, **self.metadata())

    def write_csv(self) -> None:
        if not self.info.is_main or not self.history:
            return
        path = Path(self.cfg.log_csv or Path(self.cfg.out).with_suffix(".csv"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.history[0]))
            w.writeheader()
            w.writerows(self.history)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ loops
    def _loader(self, epoch: int, skip_batches: int) -> DataLoader:
        self.sampler.set_epoch(epoch, skip=skip_batches * self.local_batch)
        g = torch.Generator().manual_seed(self.cfg.seed * 7_919 + epoch * 101 + self.info.rank)
        return DataLoader(
            self.data.train,  # type: ignore[arg-type]
            batch_size=self.local_batch,
            sampler=self.sampler,
            num_workers=self.cfg.workers,
            generator=g,
            pin_memory=self.device.type == "cuda",
        )

    def _val_loader(self) -> DataLoader | None:
        val = self.data.val
        if val is None or len(val) == 0:
            return None
        sampler = D.ShardSampler(len(val), self.info.rank, self.info.world_size)
        return DataLoader(
            val,
            batch_size=self.local_batch,
            sampler=sampler,
            num_workers=self.cfg.workers,
            generator=torch.Generator().manual_seed(0),  # leaves the global RNG stream alone
        )

    def validate(self) -> EvalSums | None:
        loader = self._val_loader()
        if loader is None:
            return None
        sums = accumulate(self.model, loader, self.device, len(self.class_names), self.amp_dtype)
        return sums.all_reduce(self.info)

    def _wrap(self) -> nn.Module:
        if not self.info.enabled:
            return self.model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.model, device_ids=ids)

    def _progress(self, loader: DataLoader, desc: str) -> Iterator[Any]:
        if self.info.is_main and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return iter(loader)
            return iter(tqdm(loader, desc=desc, leave=False, dynamic_ncols=True))
        return iter(loader)

    def train_epoch(self, net: nn.Module, epoch: int) -> bool:
        """One epoch (or its rest, when resuming mid-epoch). Returns False when stopped early."""
        cfg = self.cfg
        accum = cfg.accum_steps
        b = self.step_in_epoch * accum  # batches already done
        loader = self._loader(epoch, b)
        n_batches = self.batches_per_epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        t0 = time.perf_counter()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        net.train()
        for x, y in self._progress(loader, f"epoch {epoch + 1}/{cfg.epochs}"):
            group_start = (b // accum) * accum
            group = min(accum, n_batches - group_start)
            last = b - group_start == group - 1
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            sync = net.no_sync() if (self.info.enabled and not last) else nullcontext()  # type: ignore[operator]
            with sync:
                with self._autocast():
                    out = net(x)
                    loss = self.criterion(out, y)
                scaled = loss / group
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_sum += loss.detach().double() * len(y)
            correct += (out.detach().argmax(1) == y).sum().double()
            seen += len(y)
            b += 1
            if not last:
                continue
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if cfg.clip_grad and cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.global_step += 1
            self.step_in_epoch += 1
            if cfg.log_interval and self.step_in_epoch % cfg.log_interval == 0:
                self.log(
                    f"  step {self.step_in_epoch}/{self.steps_per_epoch} loss {loss.item():.4f} "
                    f"lr {self.optimizer.param_groups[-1]['lr']:.2e}"
                )
            if self.callbacks.on_step:
                self.callbacks.on_step(self)
            if D.any_rank(self.stop_requested, self.info) and self.step_in_epoch < self.steps_per_epoch:
                self._add_partial(loss_sum, correct, seen, time.perf_counter() - t0)
                return False
        self._add_partial(loss_sum, correct, seen, time.perf_counter() - t0)
        return True

    def _add_partial(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, seconds: float) -> None:
        loss, corr, n = D.all_reduce_sum([loss_sum.item(), correct.item(), float(seen)], self.info)
        self.partial["loss"] += loss
        self.partial["correct"] += corr
        self.partial["seen"] += n
        self.partial["seconds"] += seconds

    def run(self) -> TrainResult:
        cfg = self.cfg
        self.log(
            f"training {cfg.arch} (width {cfg.width:g}, init {cfg.init}) on {self.data.spec}: "
            f"{len(self.class_names)} classes, {len(self.data.train or [])} train / "  # type: ignore[arg-type]
            f"{len(self.data.val or [])} val images at {self.data.input_size}px, "  # type: ignore[arg-type]
            f"batch {cfg.batch_size}x{cfg.accum_steps} on {self.device}"
            + (f" x{self.info.world_size} ranks" if self.info.enabled else "")
            + f", {self.lr_note}"
        )
        if self.epoch >= cfg.epochs:
            self.log(
                f"{cfg.out}: already trained {self.epoch} of {cfg.epochs} epochs; raise --epochs to go on"
            )
        restore = self._install_signal_handlers()
        interrupted = False
        stage = None
        net: nn.Module = self.model
        ran = 0
        try:
            while self.epoch < cfg.epochs:
                epoch = self.epoch
                if stage_of(epoch, cfg.stages) != stage:
                    stage = stage_of(epoch, cfg.stages)
                    n = apply_stage(self.model, stage, cfg.unfreeze_blocks)
                    self.optimizer.zero_grad(set_to_none=True)
                    net = self._wrap()  # DDP must see the new set of trainable parameters
                    if cfg.stages:
                        self.log(f"stage {stage}: {n:,} trainable parameters")
                finished = self.train_epoch(net, epoch)
                if not finished:
                    interrupted = True
                    self.log(
                        f"stopped at epoch {epoch + 1}, step {self.step_in_epoch}/{self.steps_per_epoch}; "
                        f"saving {cfg.out} (continue with --resume {cfg.out})"
                    )
                    self.save(interrupted=True)
                    break
                row = self._end_epoch(epoch, stage)
                ran += 1
                if self.callbacks.on_epoch_end:
                    self.callbacks.on_epoch_end(self, row)
                if D.any_rank(self.stop_requested, self.info) and self.epoch < cfg.epochs:
                    interrupted = True  # asked during the epoch's last step: its checkpoint is saved
                    self.log(f"stopped after epoch {self.epoch}; continue with --resume {cfg.out}")
                    break
                if cfg.stop_after and ran >= cfg.stop_after and self.epoch < cfg.epochs:
                    self.log(f"stopping after {ran} epoch(s) as asked; continue with --resume {cfg.out}")
                    break
        except KeyboardInterrupt:
            # A second Ctrl-C (or one outside the main thread): keep the weights, restart this epoch.
            interrupted = True
            if self.info.is_main:
                self.log(f"interrupted: saving the current weights to {cfg.out} (epoch restarts on resume)")
                self.step_in_epoch = 0
                self.partial = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
                self._write(Path(cfg.out), [rng_state()], True)
            raise
        finally:
            restore()
        return TrainResult(
            Path(cfg.out), self.epoch, self.history, interrupted, self.best_val_acc, self.model
        )

    def _end_epoch(self, epoch: int, stage: int) -> dict[str, Any]:
        cfg = self.cfg
        p = self.partial
        seen = max(1.0, p["seen"])
        val = self.validate()
        groups = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "stage": stage,
            "train_loss": round(p["loss"] / seen, 6),
            "train_acc": round(p["correct"] / seen, 6),
            "val_loss": round(val.loss, 6) if val else None,
            "val_acc": round(val.top1, 6) if val else None,
            "val_top5": round(val.top5, 6) if val else None,
            "lr_backbone": groups.get("backbone", groups.get("backbone_no_decay")),
            "lr_head": groups.get("head", groups.get("head_no_decay")),
            "images_per_s": round(p["seen"] / max(1e-9, p["seconds"]), 2),
            "seconds": round(p["seconds"], 3),
        }
        self.epoch = epoch + 1
        self.step_in_epoch = 0
        self.partial = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
        self.history.append(row)
        improved = val is not None and val.top1 > self.best_val_acc
        if improved:
            self.best_val_acc = val.top1  # type: ignore[union-attr]
        vtxt = f"  val loss {val.loss:.4f} top1 {val.top1:.2%} top5 {val.top5:.2%}" if val else ""
        self.log(
            f"epoch {epoch + 1}/{cfg.epochs}{f' stage {stage}' if cfg.stages else ''}  "
            f"train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.2%}{vtxt}  lr {row['lr_backbone'] or 0:.1e}/{row['lr_head']:.1e}  "
            f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f} s"
        )
        self.save()
        if cfg.keep_best and improved:
            out = Path(cfg.out)
            self.save(out.with_name(f"{out.stem}.best{out.suffix}"))
        self.write_csv()
        return row

    def _install_signal_handlers(self) -> Callable[[], None]:
        """First Ctrl-C / SIGTERM: stop at the next optimizer step and save; second Ctrl-C: abort now."""
        return install_stop_handlers(lambda: self.stop_requested, self.request_stop, self.log)


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The full payload of a ``sevgg train`` checkpoint, loaded with ``weights_only=True``."""
    from ..checkpoints import CheckpointError, load_payload

    p = Path(path)
    payload = load_payload(p)
    if not isinstance(payload, dict) or "optimizer" not in payload or "config" not in payload:
        raise CheckpointError(
            f"{p.name}: not a resumable sevgg training checkpoint (no optimizer state); "
            "use --init to start from its weights"
        )
    return payload


def train(
    cfg: TrainConfig,
    *,
    explicit: Iterable[str] | None = None,
    callbacks: Callbacks | None = None,
    log: Log = print,
) -> TrainResult:
    """Run (or resume) training; under torchrun every rank calls this."""
    info = D.setup(cfg.device)
    try:
        return Trainer(cfg, explicit=explicit, callbacks=callbacks, log=log, info=info).run()
    finally:
        D.teardown(info)
