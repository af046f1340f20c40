"""``sevgg distill``: knowledge distillation from a trained VGG16-SE into a slimmer student (article 9.3).

The teacher may be any model spec (``timm:``, ``pretrained:``, a folder...): only its logits are used.
One not trained by ``sevgg train`` sees the student's batches through
:class:`~sevgg_gui.training.model_data.TeacherInput` (its size, its mean/std, the data's classes).

Loss (Hinton et al. 2015): ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.
The T^2 keeps the soft term's gradients on the scale of the hard term's as T grows, so ``alpha`` means
the same thing at any temperature.

Reused from ``sevgg train``: the data sets and their seeded split (the teacher's own split, so the
student is validated on images the teacher never trained on), parameter groups without decay on
biases, the warm-up + cosine schedule, the evaluation sums and the checkpoint format. The student's
checkpoint carries the trainer's metadata, so ``sevgg eval`` / ``export`` and the app open it.
The same loop (:func:`fit`) fine-tunes pruned models (``sevgg prune --finetune-epochs``); with no
teacher it is plain cross-entropy training.

Resumable as ``sevgg train`` is, with its helpers: each epoch's checkpoint (written atomically) also
carries the optimizer, the scheduler, every RNG state, the epoch and the step within it. The data order
is a function of (seed, epoch), so ``--resume`` continues with the random numbers an uninterrupted run
would draw: on CPU the student comes out bit-identical. Ctrl-C (or SIGTERM) stops after the current
optimizer step and saves a mid-epoch checkpoint that resumes exactly too; a second Ctrl-C aborts at once,
keeping the weights (that epoch then restarts on resume).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

Log = Callable[[str], None]

# Metadata that describes a model's architecture: kept when a saved model is re-saved.
MODEL_KEYS = ("arch", "width", "reduction", "dropout", "cfg", "hidden", "se_hidden", "pruned")
# Metadata that describes the data interface.
DATA_KEYS = ("input_size", "resize_size", "mean", "std", "data", "val_fraction", "split_seed")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, soft, hard): ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``.

    KL is summed over classes and averaged over the batch (the true KL per sample, ``batchmean``).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=1)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits.float(), targets, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard, soft, hard


@dataclass
class FitOptions:
    """The schedule of :func:`fit` (defaults: training from scratch at a small scale)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    clip_grad: float = 1.0
    label_smoothing: float = 0.0
    temperature: float = 4.0
    alpha: float = 0.5
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.01
    seed: int = 0
    workers: int = 0


class StopRequest:
    """Asks :func:`fit` to stop after the current optimizer step and save. Ctrl-C / SIGTERM set it (see
    :meth:`on_signals`), as in ``sevgg train``; ``after_steps`` sets it after that many optimizer steps
    of this invocation (a time-limited job's budget)."""

    def __init__(self, after_steps: int | None = None) -> None:
        self.requested = False
        self.after_steps = after_steps
        self._steps = 0

    def step_done(self) -> bool:
        """Count one optimizer step; True when the loop should stop now."""
        self._steps += 1
        if self.after_steps is not None and self._steps >= self.after_steps:
            self.requested = True
        return self.requested

    @contextmanager
    def on_signals(self, log: Log = print) -> Iterator[StopRequest]:
        """First Ctrl-C / SIGTERM: request a stop; second Ctrl-C: KeyboardInterrupt now (main thread only)."""
        from ..training.stop import install_stop_handlers

        restore = install_stop_handlers(lambda: self.requested, lambda: setattr(self, "requested", True), log)
        try:
            yield self
        finally:
            restore()


class _Skip(Sampler):
    """The first ``skip`` indices of ``base`` left out: the rest of an epoch, in the same order."""

    def __init__(self, base: Sampler, skip: int) -> None:
        self.base = base
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        it = iter(self.base)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)  # type: ignore[arg-type]


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "soft": 0.0, "hard": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}


def fit(
    student: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    opts: FitOptions,
    *,
    teacher: nn.Module | None = None,
    device: torch.device | str = "cpu",
    log: Log = print,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    resume: Mapping[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    stop: StopRequest | None = None,
) -> list[dict[str, Any]]:
    """Train ``student`` in place (AdamW, one LR, cosine per step); with a ``teacher`` the distillation
    loss, else cross-entropy. Returns one row per epoch (losses, accuracy, validation, seconds).

    ``on_checkpoint`` receives the state to save (optimizer, scheduler, RNG, epoch, step) after every
    epoch and when ``stop`` ends the run early; passing such a state back as ``resume`` (with the
    student's weights restored) continues exactly where it was saved.
    """
    from ..training.evaluate import accumulate
    from ..training.models import param_groups
    from ..training.train import lr_factor, rng_state, set_rng_state

    if opts.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {opts.epochs}")
    device = torch.device(device)
    student.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    for p in student.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(param_groups(student, opts.lr, opts.lr, opts.weight_decay))
    steps = -(-len(train_set) // opts.batch_size)  # type: ignore[arg-type]
    total, warmup = steps * opts.epochs, round(opts.warmup_epochs * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, opts.min_lr_ratio)
    )
    use_teacher = teacher is not None and opts.alpha > 0
    num_classes = _num_outputs(student)
    history: list[dict[str, Any]] = []
    start, step_in_epoch, sums = 0, 0, _zero_sums()
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        history = list(resume.get("history", []))
        start, step_in_epoch = int(resume["epoch"]), int(resume.get("step_in_epoch", 0))
        sums = {**sums, **(resume.get("partial") or {})}
        set_rng_state(resume["rng"])  # last: nothing above may draw from the restored streams

    def state(epoch: int, interrupted: bool) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "partial": dict(sums),
            "history": list(history),
            "interrupted": interrupted,
        }

    epoch = start
    try:
        for epoch in range(start, opts.epochs):
            g = torch.Generator().manual_seed(
                opts.seed * 7_919 + epoch * 101
            )  # order: a function of (seed, epoch)
            loader = DataLoader(
                train_set,
                batch_size=opts.batch_size,
                sampler=_Skip(
                    RandomSampler(train_set, generator=g),  # type: ignore[arg-type]
                    step_in_epoch * opts.batch_size,
                ),
                num_workers=opts.workers,
                generator=g,
            )
            t0 = time.perf_counter()
            student.train()
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                out = student(x)
                if use_teacher:
                    with torch.no_grad():
                        t_out = teacher(x)  # type: ignore[misc]
                    loss, soft, hard = distillation_loss(
                        out, t_out, y, opts.temperature, opts.alpha, opts.label_smoothing
                    )
                else:
                    loss = hard = F.cross_entropy(out, y, label_smoothing=opts.label_smoothing)
                    soft = torch.zeros(())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if opts.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), opts.clip_grad)
                optimizer.step()
                scheduler.step()
                step_in_epoch += 1
                n = len(y)
                sums["loss"] += float(loss.detach()) * n
                sums["soft"] += float(soft.detach()) * n
                sums["hard"] += float(hard.detach()) * n
                sums["correct"] += float((out.detach().argmax(1) == y).sum())
                sums["seen"] += n
                if stop is not None and stop.step_done() and step_in_epoch < steps:
                    sums["seconds"] += time.perf_counter() - t0
                    log(f"stopped at epoch {epoch + 1}, step {step_in_epoch}/{steps}")
                    if on_checkpoint is not None:
                        on_checkpoint(state(epoch, True))
                    student.eval()
                    return history
            sums["seconds"] += time.perf_counter() - t0
            val = None
            if val_set is not None and len(val_set) > 0:  # type: ignore[arg-type]
                val = accumulate(
                    student, DataLoader(val_set, batch_size=opts.batch_size), device, num_classes
                )
            seen, seconds = max(1.0, sums["seen"]), sums["seconds"]
            row = {
                "epoch": epoch + 1,
                "train_loss": round(sums["loss"] / seen, 6),
                "train_soft": round(sums["soft"] / seen, 6),
                "train_hard": round(sums["hard"] / seen, 6),
                "train_acc": round(sums["correct"] / seen, 6),
                "val_loss": round(val.loss, 6) if val else None,
                "val_acc": round(val.top1, 6) if val else None,
                "val_top5": round(val.top5, 6) if val else None,
                "seconds": round(seconds, 3),
            }
            history.append(row)
            vtxt = f"  val top1 {val.top1:.2%} top5 {val.top5:.2%}" if val else ""
            kd = f" (soft {row['train_soft']:.4f}, hard {row['train_hard']:.4f})" if use_teacher else ""
            log(
                f"epoch {epoch + 1}/{opts.epochs}  loss {row['train_loss']:.4f}{kd} "
                f"acc {row['train_acc']:.2%}{vtxt}  {sums['seen'] / max(1e-9, seconds):.0f} img/s  "
                f"{seconds:.1f} s"
            )
            step_in_epoch, sums = 0, _zero_sums()
            stopping = stop is not None and stop.requested and epoch + 1 < opts.epochs
            if on_epoch_end is not None:
                on_epoch_end(row)
            if on_checkpoint is not None:
                on_checkpoint(state(epoch + 1, stopping))
            if stopping:
                log(f"stopped after epoch {epoch + 1}")
                break
    except KeyboardInterrupt:
        # A second Ctrl-C: keep the weights; the epoch restarts on resume (as in sevgg train).
        if on_checkpoint is not None:
            step_in_epoch, sums = 0, _zero_sums()
            on_checkpoint(state(epoch, True))
        raise
    student.eval()
    return history


def _num_outputs(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return int(last.out_features)


def carried_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture and data-interface keys of a saved model's metadata (what a re-save needs)."""
    return {k: meta[k] for k in (*MODEL_KEYS, *DATA_KEYS) if k in meta and meta[k] is not None}


# ----------------------------------------------------------------------------------- sevgg distill
@dataclass
class DistillConfig:
    teacher: str
    data: str
    out: str = "sevgg_student.pth"
    student_arch: str | None = None  # default: the teacher's
    student_width: float | None = None  # absolute width multiplier; default: half the teacher's
    student_init: str | None = None  # start from this checkpoint (e.g. a pruned model) instead
    temperature: float = 4.0
    alpha: float = 0.5
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    clip_grad: float = 1.0
    dropout: float = 0.5
    augment: str = "light"
    input_size: int | None = None  # default: the teacher's
    limit: int | None = None
    val_limit: int | None = None
    cache_dir: str | None = None
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    resume: str | None = None  # a checkpoint of an unfinished (or to be extended) run

    # What a resumed run may change: where things are, how long, where it runs. The rest define the run.
    RESUMABLE_CHANGES = ("teacher", "data", "out", "epochs", "cache_dir", "device", "workers")


@dataclass
class DistillResult:
    checkpoint: Path
    history: list[dict[str, Any]]
    teacher_val_acc: float | None
    teacher_params: int
    student_params: int
    model: nn.Module
    interrupted: bool = False


def load_distill_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The full payload of a ``sevgg distill`` checkpoint that can be resumed (``weights_only`` load)."""
    from ..checkpoints import CheckpointError, load_payload

    p = Path(path)
    payload = load_payload(p)
    if not isinstance(payload, dict) or "distill_config" not in payload:
        raise CheckpointError(
            f"{p.name}: not a sevgg distill checkpoint (use --student-init for its weights)"
        )
    if "optimizer" not in payload or "rng" not in payload:
        raise CheckpointError(
            f"{p.name}: saved without the state a resume needs (an older sevgg distill); "
            "use --student-init to start from its weights"
        )
    return payload


def resumed_config(
    cfg: DistillConfig, saved: Mapping[str, Any], explicit: Iterable[str] | None = None
) -> DistillConfig:
    """The saved configuration, with the :attr:`DistillConfig.RESUMABLE_CHANGES` given now (``explicit``:
    the fields set on the command line; None: all of ``cfg``). The output defaults to the resumed file."""
    known = {f.name for f in fields(DistillConfig)}
    merged = {k: v for k, v in saved.items() if k in known}
    given = set(explicit) if explicit is not None else known
    for k in given & set(DistillConfig.RESUMABLE_CHANGES):
        value = getattr(cfg, k)
        if value is not None and value != "":
            merged[k] = value
    if "out" not in given:
        merged["out"] = cfg.resume
    merged["resume"] = cfg.resume
    merged["student_init"] = None  # the weights come from the resumed checkpoint
    return DistillConfig(**merged)


def distill(
    cfg: DistillConfig,
    *,
    log: Log = print,
    explicit: Iterable[str] | None = None,
    stop: StopRequest | None = None,
) -> DistillResult:
    """Train a student on ``cfg.data`` against the teacher's logits; saves ``cfg.out`` every epoch.

    With ``cfg.resume`` the run continues from that checkpoint (see :func:`resumed_config` for what may
    change). Ctrl-C / SIGTERM, or ``stop``, end it early after saving; the result says so.
    """
    from ..analysis import count_params
    from ..checkpoints import save_checkpoint
    from ..training.class_match import ClassMismatch, match_classes
    from ..training.data import MEAN, STD, DataError, load_datasets, resize_for
    from ..training.distributed import _pick_device
    from ..training.evaluate import accumulate
    from ..training.model_data import TeacherInput, needs_adapter, open_model
    from ..training.models import ARCHS, build_model, load_trained, model_metadata
    from ..training.train import seed_everything

    payload: dict[str, Any] | None = None
    if cfg.resume:
        payload = load_distill_checkpoint(cfg.resume)
        cfg = resumed_config(cfg, payload["distill_config"], explicit)
    opened = open_model(cfg.teacher)  # any model spec; only its logits are used
    teacher, tmeta = opened.model, (opened.meta if opened.trained else {})
    if opened.warning:
        log(f"warning: teacher: {opened.warning}")
    size = cfg.input_size or tmeta.get("input_size")
    split_seed = int(tmeta.get("split_seed", 0) or 0)
    val_fraction = float(tmeta.get("val_fraction", 0.1) or 0.1)
    data = load_datasets(
        cfg.data,
        input_size=int(size) if size else None,
        augment=cfg.augment,
        val_fraction=val_fraction,
        seed=split_seed,  # the teacher's split: its held-out images stay held out
        limit=cfg.limit,
        val_limit=cfg.val_limit if cfg.val_limit is not None else cfg.limit,
        cache_dir=cfg.cache_dir,
    )
    names = data.class_names
    saved = tmeta.get("class_names")
    if saved and list(saved) != names:
        raise ClassMismatch(
            f"{data.spec}: classes {names[:3]}... differ from the teacher's {list(saved)[:3]}..."
        )
    if not opened.trained:  # its own pixels and classes: fed through TeacherInput when they differ
        pre = opened.preprocess
        assert pre is not None  # every model load_model opens has its preprocessing
        classes = match_classes(
            opened.class_names,
            opened.outputs(pre.crop_size),
            names,
            model_label=f"teacher {opened.label}",
            data_label=data.spec.kind,
        )
        if classes.note:
            log(f"teacher classes: {classes.note}")
        if needs_adapter(pre, data.input_size, MEAN, STD, classes):
            teacher = TeacherInput(teacher, MEAN, STD, pre, classes.columns)
            log(
                f"teacher input: the student's {data.input_size}px batches resized to {pre.crop_size}px "
                f"({teacher.mode}) and normalised with its mean {tuple(round(m, 3) for m in pre.mean)}"
            )
    seed_everything(cfg.seed)
    if payload is not None:
        student, smeta = load_trained(cfg.resume)  # type: ignore[arg-type]
        if list(smeta.get("class_names") or names) != names:
            raise DataError(f"{data.spec}: classes differ from those of {Path(cfg.resume).name}")  # type: ignore[arg-type]
        meta = carried_metadata(smeta)
        what = f"student from {Path(cfg.resume).name}"  # type: ignore[arg-type]
    elif cfg.student_init:
        student, smeta = load_trained(cfg.student_init)
        if _num_outputs(student) != len(names):
            raise ValueError(f"{cfg.student_init}: {_num_outputs(student)} outputs for {len(names)} classes")
        meta = carried_metadata(smeta)
        what = f"student from {Path(cfg.student_init).name}"
    else:
        t_arch = str(tmeta.get("arch", "vgg16_se"))
        arch = cfg.student_arch or (t_arch if t_arch in ARCHS else "vgg16_se")
        width = cfg.student_width or float(tmeta.get("width", 1.0)) / 2
        reduction = int(tmeta.get("reduction", 16))
        student = build_model(arch, len(names), width=width, reduction=reduction, dropout=cfg.dropout)
        meta = model_metadata(arch, width, reduction, cfg.dropout)
        what = f"student {arch} width {width:g}"
    device = _pick_device(cfg.device, 0)
    t_params, s_params = count_params(teacher), count_params(student)
    log(
        f"distilling {Path(cfg.teacher).name} ({t_params:,} params) into {what} ({s_params:,} params, "
        f"{s_params / t_params:.1%}) on {data.spec}: {len(data.train or [])} train / "  # type: ignore[arg-type]
        f"{len(data.val or [])} val images at {data.input_size}px, T={cfg.temperature:g}, "  # type: ignore[arg-type]
        f"alpha={cfg.alpha:g}"
    )
    teacher_acc = None
    if data.val is not None and len(data.val):
        teacher.to(device)
        tv = accumulate(teacher, DataLoader(data.val, batch_size=cfg.batch_size), device, len(names))
        teacher_acc = tv.top1
        log(f"teacher val top1 {tv.top1:.2%} top5 {tv.top5:.2%}")
    meta.update(
        {
            "input_size": int(data.input_size),
            "resize_size": resize_for(data.input_size),
            "mean": list(MEAN),
            "std": list(STD),
            "data": str(data.spec),
            "val_fraction": val_fraction,
            "split_seed": split_seed,
            "distilled_from": Path(cfg.teacher).name,
            "temperature": float(cfg.temperature),
            "alpha": float(cfg.alpha),
            "teacher_val_acc": teacher_acc,
        }
    )
    out = Path(cfg.out)
    interrupted = False

    def save(state: dict[str, Any]) -> None:
        nonlocal interrupted
        interrupted = bool(state["interrupted"])
        history = state["history"]
        last = history[-1] if history else {}
        student.provenance = (  # type: ignore[attr-defined]
            f"sevgg distill from {Path(cfg.teacher).name} ({len(history)} epoch(s)"
            + (f", val top-1 {last['val_acc']:.2%})" if last.get("val_acc") is not None else ")")
        )
        save_checkpoint(
            student,
            out,
            class_names=names,
            extra={**state, "distill_config": asdict(cfg)},
            **meta,
            epochs_trained=len(history),
            val_acc=last.get("val_acc"),
        )
        if interrupted:
            log(f"saved {out}; continue with --resume {out}")

    opts = FitOptions(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        clip_grad=cfg.clip_grad,
        label_smoothing=cfg.label_smoothing,
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        seed=cfg.seed,
        workers=cfg.workers,
    )
    if payload is not None:
        done, step = int(payload["epoch"]), int(payload.get("step_in_epoch", 0))
        where = f"epoch {done + 1}, step {step}" if step else f"epoch {done + 1}"
        log(f"resumed from {cfg.resume}: continuing at {where} of {cfg.epochs}")
        if done >= cfg.epochs:
            log(f"{cfg.resume}: already distilled {done} of {cfg.epochs} epochs; raise --epochs to go on")
            return DistillResult(
                out, list(payload.get("history", [])), teacher_acc, t_params, s_params, student.eval()
            )
    stop = stop or StopRequest()
    with stop.on_signals(log):
        history = fit(
            student,
            data.train,  # type: ignore[arg-type]
            data.val,
            opts,
            teacher=teacher,
            device=device,
            log=log,
            resume=payload,
            on_checkpoint=save,
            stop=stop,
        )
    return DistillResult(out, history, teacher_acc, t_params, s_params, student, interrupted)


def default_out(teacher: str | os.PathLike[str]) -> str:
    """``TEACHER.student.pth`` beside a teacher file; for a spec (``timm:NAME``) in the current folder,
    named by the spec without the colons."""
    p = Path(teacher)
    if not p.exists():
        import re

        return re.sub(r"[^\w.-]+", "_", str(teacher)).strip("_") + ".student.pth"
    return str(p.with_name(f"{p.stem}.student{p.suffix or '.pth'}"))
