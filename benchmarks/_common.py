"""Shared machinery for the benchmarks: interleaved timing, paired ratios, targets, tables.

Every comparison is measured side by side in ONE process: each round runs every implementation (in a
shuffled order, alternating call by call) a few times, the round's figure for an implementation is the
fastest of its calls (interference from other processes only ever adds time; on 2 cores one busy
neighbour stalls every OpenMP barrier for a scheduler tick), and a ratio "A vs B" is the median over
rounds of A's round figure divided by B's. Pairing within a round cancels drift; the median drops
rounds another process disturbed.

Interference guard (full runs; this machine is shared): before each round the harness waits until no
other task is runnable, and after it compares the machine's busy CPU time (/proc/stat) with this
process's own; a round during which other processes used more than 5% of a CPU is thrown away and
repeated (at most as many times as there are rounds). Counts are printed at the end of every run.

Scripts exit 0 when every target is met, 1 when one is missed (full runs only; ``--quick`` reports but
never fails unless ``--strict``), 2 on a usage error. ``--json PATH`` writes the numbers for the README.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout without installing
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------------ machine
def loadavg() -> tuple[float, float, float]:
    try:
        a, b, c = os.getloadavg()
        return round(a, 2), round(b, 2), round(c, 2)
    except OSError:  # pragma: no cover - not on Linux/macOS
        return (float("nan"),) * 3  # type: ignore[return-value]


def wait_for_quiet(max_wait_s: float, below: float = 1.0, poll_s: float = 10.0) -> tuple[float, float, float]:
    """Poll the 1-minute load average until it is below ``below`` or ``max_wait_s`` passed."""
    deadline = time.monotonic() + max_wait_s
    load = loadavg()
    while load[0] >= below and time.monotonic() < deadline:
        print(f"# waiting for a quiet machine: load {load[0]:.2f} >= {below}", file=sys.stderr, flush=True)
        time.sleep(poll_s)
        load = loadavg()
    return load


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    return info


def setup_torch(threads: int | None = None) -> None:
    """Flush denormals (in-place SE benchmarks scale the same buffers again and again) before any
    parallel region starts, so the OpenMP workers inherit the setting; optionally fix the thread count."""
    import torch

    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ neighbours
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_snapshot() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its finished
    children), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / _TICK
        with open("/proc/self/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        own = sum(int(v) for v in parts[11:15]) / _TICK  # utime stime cutime cstime (reaped children)
        return busy, own
    except (OSError, ValueError, IndexError):
        return None


def _runnable_others() -> int:
    """Runnable tasks on the machine besides the one asking (from /proc/stat's procs_running)."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("procs_running"):
                    return max(0, int(line.split()[1]) - 1)
    except (OSError, ValueError):
        pass
    return 0


def wait_for_idle_cpus(max_wait_s: float = 20.0) -> float:
    """Before a round: wait (up to ``max_wait_s``) until no other task is runnable; seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait_s:
        time.sleep(0.02)  # let this process's own OpenMP workers go to sleep first
        if min(_runnable_others() for _ in range(3)) == 0:
            break
        time.sleep(0.3)
    return time.monotonic() - t0


# ------------------------------------------------------------------------------------------ timing
@dataclass
class Timings:
    """Per-round figures (seconds) of each implementation; rounds are paired across implementations."""

    rounds: dict[str, list[float]] = field(default_factory=dict)
    discarded: int = 0  # rounds thrown away because another process used the CPUs meanwhile
    waited_s: float = 0.0  # time spent waiting for idle CPUs before rounds

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def ratio(self, a: str, b: str) -> float:
        """Median over rounds of a/b (paired within each round)."""
        return statistics.median(x / y for x, y in zip(self.rounds[a], self.rounds[b], strict=True))

    def ratio_spread(self, a: str, b: str) -> tuple[float, float]:
        """Inter-quartile range of the paired ratios (how noisy the comparison was)."""
        r = sorted(x / y for x, y in zip(self.rounds[a], self.rounds[b], strict=True))
        if len(r) < 4:
            return r[0], r[-1]
        q = statistics.quantiles(r, n=4)
        return q[0], q[2]


def interleave(
    impls: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    reps: int = 3,
    warmup: int = 1,
    before_round: Callable[[], None] | None = None,
    before_call: Callable[[str], None] | None = None,
    seed: int = 0,
    budget_s: float | None = None,
    guard: bool | None = None,
    max_discards: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timings:
    """Run every implementation ``reps`` times per round, in a shuffled order each round; keep the
    fastest call of each implementation per round.

    ``before_call(name)`` runs untimed before each call (e.g. to rotate inputs, evict caches).
    ``budget_s`` stops early (after at least 3 rounds) when the wall-clock budget is spent.
    ``guard``: wait for idle CPUs before each round, and repeat a round (up to ``max_discards``
    times in all, default ``rounds``) when other processes used more than 5% of a CPU meanwhile.
    ``clock``: ``time.process_time`` measures this process's CPU time instead of wall time (with
    ``--threads 1``: robust on a machine other processes keep busy, where waiting is not work).
    """
    guard = GUARD["on"] if guard is None else guard
    rng = random.Random(seed)
    names = list(impls)
    for name in names:
        for _ in range(warmup):
            if before_call:
                before_call(name)
            impls[name]()
    out = Timings({n: [] for n in names})
    limit = rounds if max_discards is None else max_discards
    t_wait0 = out.waited_s
    start = time.perf_counter()
    done = 0
    while done < rounds:
        if before_round:
            before_round()
        order = names[:]
        rng.shuffle(order)
        gc.collect()
        if guard:
            out.waited_s += wait_for_idle_cpus()
        snap0 = _cpu_snapshot() if guard else None
        w0 = time.perf_counter()
        gc.disable()
        try:
            per: dict[str, list[float]] = {n: [] for n in names}
            # Alternate the implementations call by call as well, so a burst of load hits all of them.
            for _ in range(reps):
                for name in order:
                    if before_call:
                        before_call(name)
                    t0 = clock()
                    impls[name]()
                    per[name].append(clock() - t0)
        finally:
            gc.enable()
        wall = time.perf_counter() - w0
        snap1 = _cpu_snapshot() if guard else None
        if snap0 and snap1 and out.discarded < limit:
            others = (snap1[0] - snap0[0]) - (snap1[1] - snap0[1])
            if others > max(0.03, 0.05 * wall):  # jiffies are 10 ms: allow a tick or two
                out.discarded += 1
                continue
        for name in names:
            out.rounds[name].append(min(per[name]))
        done += 1
        if budget_s is not None and done >= 3 and time.perf_counter() - start > budget_s:
            break
    STATS["rounds"] += done
    STATS["discarded"] += out.discarded
    STATS["waited_s"] += out.waited_s - t_wait0
    return out


STATS: dict[str, float] = {"rounds": 0, "discarded": 0, "waited_s": 0.0}
GUARD = {"on": True}  # start() turns it off for --quick (smoke runs never wait) and --no-guard


def guarded(fn: Callable[[], Any], retries: int = 3) -> tuple[Any, bool]:
    """Run ``fn()`` after waiting for idle CPUs; run it again (up to ``retries`` times) when other
    processes used the CPUs meanwhile. Returns (result, clean)."""
    if not GUARD["on"]:
        return fn(), True
    result: Any = None
    for _ in range(retries + 1):
        STATS["waited_s"] += wait_for_idle_cpus()
        snap0 = _cpu_snapshot()
        w0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - w0
        snap1 = _cpu_snapshot()
        if not (snap0 and snap1) or (snap1[0] - snap0[0]) - (snap1[1] - snap0[1]) <= max(0.03, 0.05 * wall):
            STATS["rounds"] += 1
            return result, True
        STATS["discarded"] += 1
    STATS["rounds"] += 1
    return result, False


# ------------------------------------------------------------------------------------------ ABBA pairs
@dataclass
class Paired:
    """Per-pair ratios B/A from :func:`abba_pairs` and the per-call times behind them (seconds)."""

    ratios: list[float]
    a: list[tuple[float, float]] = field(default_factory=list)  # per pair: the two A calls
    b: list[tuple[float, float]] = field(default_factory=list)  # per pair: the two B calls

    def median(self) -> float:
        return statistics.median(self.ratios)

    @staticmethod
    def _low(pairs: Sequence[tuple[float, float]], q: float) -> float:
        calls = sorted(t for pair in pairs for t in pair)
        return calls[min(len(calls) - 1, int(q * len(calls)))]

    def low_ratio(self, q: float = 0.1) -> float:
        """B's q-quantile call time over A's (default the 10th percentile): interference only ever
        adds time, so the fast end of each distribution is the least disturbed estimate."""
        return self._low(self.b, q) / self._low(self.a, q)

    def low_ci(
        self, q: float = 0.1, level: float = 0.95, resamples: int = 1000, seed: int = 0
    ) -> tuple[float, float]:
        """Bootstrap interval of :meth:`low_ratio`, the pairs resampled with replacement."""
        rng = random.Random(seed)
        idx = range(len(self.ratios))
        vals = []
        for _ in range(resamples):
            pick = rng.choices(idx, k=len(self.ratios))
            vals.append(self._low([self.b[i] for i in pick], q) / self._low([self.a[i] for i in pick], q))
        vals.sort()
        return vals[int((1 - level) / 2 * resamples)], vals[
            min(resamples - 1, int((1 + level) / 2 * resamples))
        ]

    def iqr(self) -> tuple[float, float]:
        if len(self.ratios) < 4:
            return min(self.ratios), max(self.ratios)
        q = statistics.quantiles(self.ratios, n=4)
        return q[0], q[2]

    def ci(self, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """Bootstrap interval of the median ratio: the pairs resampled with replacement."""
        rng = random.Random(seed)
        n = len(self.ratios)
        meds = sorted(statistics.median(rng.choices(self.ratios, k=n)) for _ in range(resamples))
        lo = meds[int((1 - level) / 2 * resamples)]
        hi = meds[min(resamples - 1, int((1 + level) / 2 * resamples))]
        return lo, hi


def abba_pairs(
    base: Callable[[], Any],
    variants: dict[str, Callable[[], Any]],
    *,
    pairs: int,
    clock: Callable[[], float] = time.perf_counter,
    around: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] | None = None,
    warmup: int = 2,
    budget_s: float | None = None,
    seed: int = 0,
    after_pair: Callable[[], Any] | None = None,
) -> dict[str, Paired]:
    """Each variant against ``base`` in many short A-B-B-A pairs: the pair's ratio is (B1 + B2) / (A1 +
    A2), so a load that rises or falls linearly across the four calls cancels, and a burst of other work
    spoils one pair, not the comparison; the median over pairs (with :meth:`Paired.ci`) is the figure.
    Variants take turns pair by pair, in a shuffled order. ``around[name]`` = (enter, leave) runs
    untimed just before and after the variant's two calls (e.g. attach and detach hooks on the same
    model, so base and variant share weights, memory and caches). ``budget_s`` stops after at least 5
    pairs once that much wall time has passed; ``after_pair`` runs untimed after each round of pairs
    (e.g. :class:`LoadSampler`). No guard: the pairs are the defence against load."""
    rng = random.Random(seed)
    around = around or {}
    names = list(variants)
    for name in names:
        enter, leave = around.get(name, (None, None))
        for _ in range(warmup):
            base()
            if enter:
                enter()
            variants[name]()
            if leave:
                leave()
    out = {n: Paired([]) for n in names}
    start_t = time.perf_counter()
    for done in range(pairs):
        order = names[:]
        rng.shuffle(order)
        gc.collect()
        gc.disable()
        try:
            for name in order:
                enter, leave = around.get(name, (None, None))
                fn = variants[name]
                t0 = clock()
                base()
                t1 = clock()
                if enter:
                    enter()
                t2 = clock()
                fn()
                t3 = clock()
                fn()
                t4 = clock()
                if leave:
                    leave()
                t5 = clock()
                base()
                t6 = clock()
                p = out[name]
                p.ratios.append(((t3 - t2) + (t4 - t3)) / ((t1 - t0) + (t6 - t5)))
                p.a.append((t1 - t0, t6 - t5))
                p.b.append((t3 - t2, t4 - t3))
        finally:
            gc.enable()
        if after_pair:
            after_pair()
        if budget_s is not None and done >= 4 and time.perf_counter() - start_t > budget_s:
            break
    return out


class LoadSampler:
    """The 1-minute load average sampled during a measurement (every call to :meth:`sample`)."""

    def __init__(self) -> None:
        self.samples: list[float] = [loadavg()[0]]

    def sample(self) -> None:
        self.samples.append(loadavg()[0])

    def summary(self) -> str:
        s = self.samples
        return f"{min(s):.2f}–{max(s):.2f} (median {statistics.median(s):.2f}, {len(s)} samples)"


# ------------------------------------------------------------------------------------------ reporting
def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # nan
            return "—"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}"
    return str(v)


@dataclass
class Target:
    name: str
    value: float
    limit: float
    kind: str = "<="  # "<=", "<", ">=" or ">"
    unit: str = ""

    @property
    def met(self) -> bool:
        v, lim = self.value, self.limit
        return {"<=": v <= lim, "<": v < lim, ">=": v >= lim, ">": v > lim}[self.kind]


class Report:
    """Collects targets and tables; prints them; decides the exit code."""

    def __init__(self, title: str, args: argparse.Namespace) -> None:
        self.title = title
        self.args = args
        self.targets: list[Target] = []
        self.data: dict[str, Any] = {"title": title, "quick": bool(args.quick)}
        self.load_start = loadavg()
        self.t0 = time.perf_counter()
        print(f"# {title}")
        print(
            f"# mode: {'quick (smoke, targets not enforced)' if args.quick else 'full'}; "
            f"load average at start: {self.load_start[0]:.2f} {self.load_start[1]:.2f} {self.load_start[2]:.2f}"
        )
        m = machine()
        self.data["machine"] = m
        print("# machine: " + ", ".join(f"{k}={v}" for k, v in m.items()), flush=True)

    def target(self, name: str, value: float, limit: float, kind: str = "<=", unit: str = "") -> Target:
        t = Target(name, float(value), float(limit), kind, unit)
        self.targets.append(t)
        return t

    def print_table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], key: str) -> None:
        print()
        print(table(headers, rows))
        self.data.setdefault("tables", {})[key] = {"headers": list(headers), "rows": [list(r) for r in rows]}

    def finish(self) -> int:
        load_end = loadavg()
        elapsed = time.perf_counter() - self.t0
        if self.targets:
            rows = [
                (
                    t.name,
                    f"{t.value:.4g}{t.unit}",
                    f"{t.kind} {t.limit:g}{t.unit}",
                    "met" if t.met else "MISSED",
                )
                for t in self.targets
            ]
            self.print_table(["target", "measured", "limit", "status"], rows, "targets")
        print()
        print(
            f"# load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; "
            f"elapsed {elapsed:.1f} s"
        )
        if STATS["rounds"]:
            print(
                f"# interference guard: {int(STATS['discarded'])} round(s) discarded and repeated "
                f"(other processes used the CPUs), {int(STATS['rounds'])} kept; "
                f"waited {STATS['waited_s']:.0f} s for idle CPUs"
            )
        self.data["interference"] = dict(STATS)
        missed = [t for t in self.targets if not t.met]
        enforce = not self.args.quick or self.args.strict
        self.data.update(
            load_start=self.load_start,
            load_end=load_end,
            elapsed_s=round(elapsed, 1),
            targets=[{**vars(t), "met": t.met} for t in self.targets],
            command=" ".join([Path(sys.executable).name, *sys.argv]),
        )
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(self.data, indent=2, default=str))
        if missed:
            print(f"# {len(missed)} target(s) missed: {', '.join(t.name for t in missed)}")
            if not enforce:
                print("# (quick mode: not enforced)")
        else:
            print("# all targets met" if self.targets else "# no targets")
        return 1 if missed and enforce else 0


def parser(description: str, *, cpu_time: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark shares; ``cpu_time`` adds ``--cpu-time`` (see :func:`clock_of`)."""
    p = argparse.ArgumentParser(description=description)
    if cpu_time:
        p.add_argument(
            "--cpu-time",
            action="store_true",
            help="time with this process's CPU time (use with --threads 1 on a machine others keep busy)",
        )
    p.add_argument("--quick", action="store_true", help="CI smoke: a few seconds, targets not enforced")
    p.add_argument("--strict", action="store_true", help="enforce targets in --quick mode too")
    p.add_argument("--rounds", type=int, default=None, help="override the number of interleaved rounds")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the 1-minute load average to drop below 1.0 before measuring",
    )
    p.add_argument(
        "--no-guard",
        action="store_true",
        help="do not wait for idle CPUs before rounds nor repeat rounds other processes disturbed",
    )
    p.add_argument("--json", help="write the measured numbers to this JSON file")
    return p


def clock_of(args: argparse.Namespace) -> Callable[[], float]:
    """``time.process_time`` under ``--cpu-time`` (waiting for a CPU is not counted), else wall time."""
    return time.process_time if getattr(args, "cpu_time", False) else time.perf_counter


def start(args: argparse.Namespace) -> None:
    GUARD["on"] = not (args.quick or args.no_guard)
    if args.wait_quiet > 0:
        wait_for_quiet(args.wait_quiet)
