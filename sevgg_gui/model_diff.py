"""Compare two models' attention on the same inputs: block pairing, per-frame similarity, data-set diffs.

Both models see the same decoded image, each through its own preprocessing (size, normalisation), so a
224 px ImageNet network and a 32 px Fashion-MNIST one compare on one picture. What is compared:

* **Blocks** are paired by order and channel count: the longest order-preserving run of blocks whose
  channel counts match (same names win ties). When B is a pruned A (``sevgg prune`` records, per SE
  block, which of the source's channels it kept, and the source's sha256), a block pairs with its
  source block and channel ``k`` of B with channel ``kept[k]`` of A ("by origin"). Blocks that pair
  with nothing are listed as unpaired, never guessed.
* **Per frame and paired block**: cosine similarity, Spearman rank correlation, overlap of the
  top-10 channels and mean absolute difference of the gates.
* **Over a data set** (:func:`diff_models`): top-1 / top-5 agreement, the means of those four numbers
  per block, the channels whose mean gate moved most, and, with labels, which classes' mean gates
  moved most. The dict is what ``sevgg diff --json`` prints.

Everything here is numpy over :class:`~sevgg_gui.inference.Result` objects, so any backend that
produces Results (torch's Predictor, onnxruntime's OnnxPredictor) can be either side. No Qt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TOPK_CHANNELS = 10
Blocks = Sequence[tuple[str, int]]  # (block name, channels) in forward order


# ----------------------------------------------------------------------------------- pairing
@dataclass(frozen=True)
class BlockPair:
    """One block of A matched with one of B; ``a_index[k]`` pairs with ``b_index[k]``."""

    a: str
    b: str
    a_index: np.ndarray  # channels of A in pairing order
    b_index: np.ndarray  # channels of B in the same order
    by_origin: bool = False  # paired through a pruning record, not by equal channel counts

    @property
    def channels(self) -> int:
        return int(self.a_index.size)


@dataclass
class Pairing:
    pairs: list[BlockPair]
    unpaired_a: list[tuple[str, int]]
    unpaired_b: list[tuple[str, int]]

    def unpaired(self) -> list[dict[str, Any]]:
        """The ``unpaired`` entry of the JSON: every block of either side that pairs with nothing."""
        return [{"model": "a", "block": n, "channels": c} for n, c in self.unpaired_a] + [
            {"model": "b", "block": n, "channels": c} for n, c in self.unpaired_b
        ]


def origin_map(
    prune_record: Mapping[str, Any] | None, source_sha256: str | None, source_path: str | None
) -> dict[str, list[int]] | None:
    """Kept channels per block when ``prune_record`` (a pruned checkpoint's ``pruned`` metadata) says
    the model was pruned from the other side; None when it was not, or nothing proves it.

    The sha256 decides when both sides have one; a record without it (older prunes) matches by file name.
    """
    if not isinstance(prune_record, Mapping):
        return None
    kept = prune_record.get("kept_channels")
    if not isinstance(kept, Mapping) or not kept:
        return None
    sha = prune_record.get("source_sha256")
    if sha and source_sha256:
        same = sha == source_sha256
    else:
        same = bool(source_path) and prune_record.get("source") == Path(str(source_path)).name
    if not same:
        return None
    return {str(k): [int(c) for c in v] for k, v in kept.items()}


def pair_blocks(
    a: Blocks,
    b: Blocks,
    *,
    b_from_a: Mapping[str, Sequence[int]] | None = None,
    a_from_b: Mapping[str, Sequence[int]] | None = None,
) -> Pairing:
    """Pair blocks by order and channel count (longest order-preserving match, same names preferred).

    ``b_from_a``: B was pruned from A; block -> the A channels B kept (see :func:`origin_map`); such a
    block pairs with the A block of the same name, channel by origin. ``a_from_b``: the other way round.
    """
    a, b = [(str(n), int(c)) for n, c in a], [(str(n), int(c)) for n, c in b]

    def link(i: int, j: int) -> BlockPair | None:
        (na, ca), (nb, cb) = a[i], b[j]
        for kept, pruned_c, full_c, b_is_pruned in (
            (b_from_a, cb, ca, True),
            (a_from_b, ca, cb, False),
        ):
            if kept is not None and na == nb and na in kept:
                k = np.asarray(kept[na], dtype=np.int64)
                if k.size == pruned_c and (k.size == 0 or (k.min() >= 0 and k.max() < full_c)):
                    own = np.arange(k.size)
                    return BlockPair(na, nb, k, own, True) if b_is_pruned else BlockPair(na, nb, own, k, True)
        if ca == cb:
            idx = np.arange(ca)
            return BlockPair(na, nb, idx, idx)
        return None

    n, m = len(a), len(b)
    links = [[link(i, j) for j in range(m)] for i in range(n)]
    # Longest common subsequence on "these two blocks can pair"; score (pairs, same-name pairs).
    best = [[(0, 0)] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            options = [best[i + 1][j], best[i][j + 1]]
            p = links[i][j]
            if p is not None:
                nxt = best[i + 1][j + 1]
                options.append((nxt[0] + 1, nxt[1] + (a[i][0] == b[j][0])))
            best[i][j] = max(options)
    pairs: list[BlockPair] = []
    i = j = 0
    while i < n and j < m:
        p = links[i][j]
        if p is not None:
            nxt = best[i + 1][j + 1]
            if best[i][j] == (nxt[0] + 1, nxt[1] + (a[i][0] == b[j][0])):
                pairs.append(p)
                i, j = i + 1, j + 1
                continue
        if best[i][j] == best[i + 1][j]:
            i += 1
        else:
            j += 1
    used_a, used_b = {p.a for p in pairs}, {p.b for p in pairs}
    return Pairing(pairs, [x for x in a if x[0] not in used_a], [x for x in b if x[0] not in used_b])


def blocks_of(result: Any) -> list[tuple[str, int]]:
    """(block, channels) of every channel gate a Result holds, in forward order."""
    return [(n, int(np.asarray(v).size)) for n, v in result.excitations.items()]


# ----------------------------------------------------------------------------------- similarity
def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties given their average rank (what Spearman's correlation needs)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts + 1) / 2.0)[inverse.reshape(-1)]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; 1.0 for two all-zero vectors (identical), 0.0 when only one is zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; 1.0 when the rankings are identical (also when both are constant),
    NaN when only one side is constant (no ranking to correlate with)."""
    ra, rb = ranks(np.asarray(a, np.float64)), ranks(np.asarray(b, np.float64))
    if np.array_equal(ra, rb):
        return 1.0
    da, db = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    return float(np.dot(da, db) / den) if den > 0 else float("nan")


def top_channels(x: np.ndarray, k: int = TOPK_CHANNELS) -> np.ndarray:
    """Indices of the ``k`` largest values (ties: lower index first)."""
    return np.argsort(-np.asarray(x, np.float64), kind="stable")[: min(k, np.asarray(x).size)]


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int = TOPK_CHANNELS) -> float:
    """Share of A's top-k channels that are also among B's top-k (k = min(10, channels))."""
    ta, tb = top_channels(a, k), top_channels(b, k)
    return len(set(ta.tolist()) & set(tb.tolist())) / max(1, ta.size)


@dataclass
class BlockFrame:
    """One paired block on one input: both gates in pairing order and how alike they are."""

    pair: BlockPair
    a: np.ndarray
    b: np.ndarray
    cosine: float
    spearman: float
    top10_overlap: float
    mean_abs_diff: float

    @property
    def diff(self) -> np.ndarray:
        """B - A per paired channel."""
        return self.b - self.a


def compare_block(pair: BlockPair, a_gates: np.ndarray, b_gates: np.ndarray) -> BlockFrame:
    a = np.asarray(a_gates, np.float32).reshape(-1)[pair.a_index]
    b = np.asarray(b_gates, np.float32).reshape(-1)[pair.b_index]
    return BlockFrame(
        pair,
        a,
        b,
        cosine(a, b),
        spearman(a, b),
        topk_overlap(a, b),
        float(np.mean(np.abs(b.astype(np.float64) - a))) if a.size else 0.0,
    )


def compare_results(pairing: Pairing, ra: Any, rb: Any) -> list[BlockFrame]:
    """Every paired block of two Results of the same input."""
    return [
        compare_block(p, ra.excitations[p.a], rb.excitations[p.b])
        for p in pairing.pairs
        if p.a in ra.excitations and p.b in rb.excitations
    ]


def top1_agrees(ra: Any, rb: Any) -> bool:
    """Same top-1 class, by label (two models with different class orders still compare)."""
    return bool(ra.topk and rb.topk and ra.topk[0].label == rb.topk[0].label)


def top5_overlap(ra: Any, rb: Any, k: int = 5) -> float:
    """Share of A's top-k labels among B's top-k (k = min(5, what both report))."""
    k = min(k, len(ra.topk), len(rb.topk))
    if k == 0:
        return 0.0
    return len({p.label for p in ra.topk[:k]} & {p.label for p in rb.topk[:k]}) / k


# ----------------------------------------------------------------------------------- live (app)
@dataclass
class FrameComparison:
    """What compare mode draws for one frame (plain data; crosses threads)."""

    result_b: Any
    blocks: list[BlockFrame]
    unpaired: list[dict[str, Any]]
    top1_agree: bool
    top5_overlap: float
    b_ms: float  # wall time spent on B for this frame (B's own stages: result_b.timings)


class LiveComparison:
    """Model B beside the app's model A: run B on A's frame, pair their blocks, compare the gates.

    Lives on the inference worker thread (the app calls nothing here from the UI thread). B is any
    predictor with ``predict(image) -> Result`` (torch or onnxruntime); the pairing is recomputed when
    A's blocks change (another A loaded). ``identity``: B's (sha256, path, ``sevgg prune`` record), so
    a pruned B pairs with its source A channel by channel (and a pruned A with its source B).
    """

    def __init__(
        self,
        b: Any,
        *,
        name: str = "B",
        identity: tuple[str | None, str | None, Mapping[str, Any] | None] = (None, None, None),
    ) -> None:
        self.b = b
        self.name = name
        self.b_identity: tuple[str | None, str | None] = identity[:2]  # (sha256, path) of B
        self.prune_record = identity[2]
        self.a_identity: tuple[str | None, str | None] = (None, None)
        self.a_prune_record: Mapping[str, Any] | None = None
        self._pairing: Pairing | None = None
        self._key: tuple | None = None

    def set_a(
        self,
        sha256: str | None,
        path: str | None,
        prune_record: Mapping[str, Any] | None = None,
    ) -> None:
        """Who A is (for pairing by origin); forces a new pairing on the next frame."""
        self.a_identity = (sha256, path)
        self.a_prune_record = prune_record
        self._key = None

    def pairing_for(self, ra: Any, rb: Any) -> Pairing:
        key = (tuple(blocks_of(ra)), tuple(blocks_of(rb)), self.a_identity)
        if self._pairing is None or key != self._key:
            self._pairing = pair_blocks(
                key[0],
                key[1],
                b_from_a=origin_map(self.prune_record, *self.a_identity),
                a_from_b=origin_map(self.a_prune_record, *self.b_identity),
            )
            self._key = key
        return self._pairing

    def run(self, rgb: np.ndarray, ra: Any, rb: Any = None) -> FrameComparison:
        """B on ``rgb`` (or its earlier ``rb`` of the same frame: A re-ran after an intervention)."""
        t0 = time.perf_counter()
        if rb is None:
            rb = self.b.predict(rgb)
        b_ms = (time.perf_counter() - t0) * 1e3  # ~0 when B's result was reused
        pairing = self.pairing_for(ra, rb)
        return FrameComparison(
            result_b=rb,
            blocks=compare_results(pairing, ra, rb),
            unpaired=pairing.unpaired(),
            top1_agree=top1_agrees(ra, rb),
            top5_overlap=top5_overlap(ra, rb),
            b_ms=b_ms,
        )

    def close(self) -> None:
        close = getattr(self.b, "close", None)
        if close is not None:
            close()


# ----------------------------------------------------------------------------------- data sets
@dataclass
class _BlockStats:
    pair: BlockPair
    n: int = 0
    cosine: float = 0.0
    spearman: float = 0.0
    spearman_n: int = 0
    mad: float = 0.0
    max_abs: float = 0.0
    top10: float = 0.0
    sum_a: np.ndarray | None = None
    sum_b: np.ndarray | None = None
    sum_abs: np.ndarray | None = None
    by_class: dict[int, list] = field(default_factory=dict)  # label -> [n, sum_a, sum_b]

    def add(self, f: BlockFrame, label: int | None) -> None:
        self.n += 1
        self.cosine += f.cosine
        if not math.isnan(f.spearman):
            self.spearman += f.spearman
            self.spearman_n += 1
        self.mad += f.mean_abs_diff
        self.top10 += f.top10_overlap
        a, b = f.a.astype(np.float64), f.b.astype(np.float64)
        if a.size:
            self.max_abs = max(self.max_abs, float(np.abs(b - a).max()))
        if self.sum_a is None:
            self.sum_a, self.sum_b, self.sum_abs = a.copy(), b.copy(), np.abs(b - a)
        else:
            self.sum_a += a
            self.sum_b += b
            self.sum_abs += np.abs(b - a)  # type: ignore[operator]
        if label is not None:
            entry = self.by_class.setdefault(label, [0, np.zeros_like(a), np.zeros_like(b)])
            entry[0] += 1
            entry[1] += a
            entry[2] += b


class DiffAccumulator:
    """Sums over inputs; :meth:`summary` gives the ``sevgg diff --json`` dict."""

    def __init__(self, pairing: Pairing, *, a_name: str = "A", b_name: str = "B") -> None:
        self.pairing = pairing
        self.a_name, self.b_name = a_name, b_name
        self.images = 0
        self.top1 = 0
        self.top5 = 0.0
        self.stats = [_BlockStats(p) for p in pairing.pairs]
        self.class_counts: dict[int, int] = {}
        self.class_names: list[str] | None = None
        self.a_ms = 0.0
        self.b_ms = 0.0

    def add(self, ra: Any, rb: Any, label: int | None = None) -> list[BlockFrame]:
        frames = compare_results(self.pairing, ra, rb)
        self.images += 1
        self.top1 += top1_agrees(ra, rb)
        self.top5 += top5_overlap(ra, rb)
        by_pair = {id(f.pair): f for f in frames}
        for st in self.stats:  # a block missing from one Result is skipped for that input only
            f = by_pair.get(id(st.pair))
            if f is not None:
                st.add(f, label)
        if label is not None:
            self.class_counts[label] = self.class_counts.get(label, 0) + 1
        self.a_ms += ra.timings.get("model", 0.0)
        self.b_ms += rb.timings.get("model", 0.0)
        return frames

    def summary(self, top_channels_per_block: int = 5) -> dict[str, Any]:
        n = max(1, self.images)
        blocks = []
        for st in self.stats:
            k = max(1, st.n)
            entry: dict[str, Any] = {
                "a": st.pair.a,
                "b": st.pair.b,
                "channels": st.pair.channels,
                "by_origin": st.pair.by_origin,
                "cosine": st.cosine / k,
                "spearman": st.spearman / st.spearman_n if st.spearman_n else None,
                "mean_abs_diff": st.mad / k,
                "max_abs_diff": st.max_abs,
                "top10_overlap": st.top10 / k,
            }
            if st.sum_a is not None:
                mean_a, mean_b, mean_abs = st.sum_a / k, st.sum_b / k, st.sum_abs / k  # type: ignore[operator]
                order = np.argsort(-mean_abs, kind="stable")[:top_channels_per_block]
                entry["most_changed"] = [
                    {
                        "a_channel": int(st.pair.a_index[i]),
                        "b_channel": int(st.pair.b_index[i]),
                        "mean_a": round(float(mean_a[i]), 6),
                        "mean_b": round(float(mean_b[i]), 6),
                        "mean_abs_diff": round(float(mean_abs[i]), 6),
                    }
                    for i in order
                ]
            blocks.append(entry)
        out: dict[str, Any] = {
            "a": self.a_name,
            "b": self.b_name,
            "images": self.images,
            "top1_agreement": self.top1 / n if self.images else None,
            "top5_agreement": self.top5 / n if self.images else None,
            "blocks": blocks,
            "unpaired": self.pairing.unpaired(),
            "model_ms": {"a": self.a_ms / n, "b": self.b_ms / n},
        }
        if self.class_counts:
            out["classes"] = self._class_summary()
        return out

    def _class_summary(self) -> list[dict[str, Any]]:
        """Per class: mean over paired blocks of mean |B's class-mean gate - A's|, most moved first."""
        rows = []
        for label, count in self.class_counts.items():
            per_block = {}
            for st in self.stats:
                entry = st.by_class.get(label)
                if entry:
                    c, sa, sb = entry
                    per_block[st.pair.a] = float(np.mean(np.abs(sb / c - sa / c))) if sa.size else 0.0
            name = (
                self.class_names[label]
                if self.class_names is not None and 0 <= label < len(self.class_names)
                else str(label)
            )
            rows.append(
                {
                    "class": name,
                    "label": int(label),
                    "images": count,
                    "mean_gate_diff": float(np.mean(list(per_block.values()))) if per_block else 0.0,
                    "blocks": per_block,
                }
            )
        rows.sort(key=lambda r: -r["mean_gate_diff"])
        return rows


def _items(images: Iterable[Any]) -> Iterator[tuple[Any, int | None]]:
    """Images, or (image, label) pairs as a labelled data set yields them."""
    for item in images:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int | np.integer):
            yield item[0], int(item[1])
        else:
            yield item, None


def identity_of(side: Any) -> tuple[str | None, str | None, Mapping[str, Any] | None]:
    """(sha256, path, prune record) of a LoadedModel or OnnxPredictor, for pairing by origin."""
    info = getattr(side, "info", None)
    sha = getattr(info, "sha256", None) or getattr(side, "sha256", None)
    path = getattr(info, "path", None) or getattr(side, "path", None)
    model = getattr(side, "model", None)
    record = getattr(model, "prune_record", None) or getattr(side, "prune_record", None)
    return sha, (str(path) if path else None), record


def diff_models(
    a: Any,
    b: Any,
    images: Iterable[Any],
    *,
    limit: int | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
    device: str = "auto",
    progress: Callable[[int], None] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run A and B over the same images and compare them (see the module docstring).

    ``a`` / ``b``: a model spec (anything :func:`~sevgg_gui.backends.open_predictor` opens: checkpoints,
    ``pretrained:...``, ``.onnx`` files), a LoadedModel, or a ready predictor. ``images``: paths, arrays
    or PIL images, or (image, label) pairs (a labelled data set); labels add the ``classes`` entry.
    ``on_error``: called with one line for an input that is not an image, which is then skipped
    (without it, the :class:`~sevgg_gui.images.ImageError` propagates).
    """
    from .backends import as_predictor
    from .images import ImageError, to_rgb_array

    pa, ida, name_a = as_predictor(a, device=device)
    pb, idb, name_b = as_predictor(b, device=device)
    origin_b = origin_map(idb[2], ida[0], ida[1])
    origin_a = origin_map(ida[2], idb[0], idb[1])
    acc: DiffAccumulator | None = None
    batch: list[tuple[np.ndarray, int | None]] = []
    done = 0

    def flush() -> None:
        nonlocal acc, done
        rgbs = [r for r, _ in batch]
        ras, rbs = _predict_all(pa, rgbs), _predict_all(pb, rgbs)
        for (_rgb, label), ra, rb in zip(batch, ras, rbs, strict=True):
            if acc is None:
                pairing = pair_blocks(blocks_of(ra), blocks_of(rb), b_from_a=origin_b, a_from_b=origin_a)
                acc = DiffAccumulator(pairing, a_name=name_a, b_name=name_b)
            acc.add(ra, rb, label)
        done += len(batch)
        batch.clear()
        if progress is not None:
            progress(done)

    try:
        for image, label in _items(images):
            if limit is not None and done + len(batch) >= limit:
                break
            try:
                rgb = to_rgb_array(image)
            except ImageError as exc:
                if on_error is None:
                    raise
                on_error(str(exc))
                continue
            batch.append((rgb, label))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    finally:
        for p, given in ((pa, a), (pb, b)):
            if p is not given and hasattr(p, "close"):
                p.close()
    if acc is None:
        raise ValueError("no images to compare")
    acc.class_names = list(class_names) if class_names is not None else None
    return acc.summary()


def _predict_all(predictor: Any, rgbs: list[np.ndarray]) -> list[Any]:
    batch = getattr(predictor, "predict_batch", None)
    if batch is not None:
        return list(batch(rgbs))
    return [predictor.predict(r) for r in rgbs]


# ----------------------------------------------------------------------------------- text
def format_diff(d: Mapping[str, Any]) -> str:
    """The table `sevgg diff` prints."""
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    lines = [
        f"A: {d.get('a', 'A')}",
        f"B: {d.get('b', 'B')}",
        f"{d['images']} images: top-1 agreement {pct(d['top1_agreement'])}, "
        f"top-5 overlap {pct(d['top5_agreement'])}",
    ]
    if d["blocks"]:
        wa = max(len("block A"), *(len(b["a"]) for b in d["blocks"])) + 2
        wb = max(len("block B"), *(len(b["b"]) for b in d["blocks"])) + 1
        lines.append(
            f"{'block A':<{wa}}{'block B':<{wb}}{'ch':>5}{'cosine':>9}{'spearman':>10}{'|B-A|':>9}{'top-10':>8}"
            "  most changed (A ch: A's mean gate, Δ = B - A)"
        )
        for blk in d["blocks"]:
            sp = "-" if blk["spearman"] is None else f"{blk['spearman']:.3f}"
            moved = ", ".join(
                f"{c['a_channel']}: {c['mean_a']:.3f} Δ{c['mean_b'] - c['mean_a']:+.4f}"
                for c in blk.get("most_changed", [])[:3]
            )
            ch = f"{blk['channels']}{'*' if blk.get('by_origin') else ''}"
            lines.append(
                f"{blk['a']:<{wa}}{blk['b']:<{wb}}{ch:>5}{blk['cosine']:>9.4f}{sp:>10}"
                f"{blk['mean_abs_diff']:>9.4f}{blk['top10_overlap']:>8.2f}  {moved}"
            )
        if any(blk.get("by_origin") for blk in d["blocks"]):
            lines.append("* channels paired by origin (B was pruned from A)")
    else:
        lines.append("no blocks could be paired")
    if d["unpaired"]:
        lines.append(
            "unpaired: "
            + ", ".join(f"{u['model'].upper()} {u['block']} ({u['channels']} ch)" for u in d["unpaired"])
        )
    classes = d.get("classes") or []
    if classes:
        top = ", ".join(f"{c['class']} {c['mean_gate_diff']:.4f}" for c in classes[:5])
        lines.append(f"classes whose mean gates moved most (mean |B-A| over blocks): {top}")
    return "\n".join(lines)
