"""One readable figure of a model diff (``sevgg diff --png``): how alike each paired block is, which
channels moved most, and (with labels) which classes' attention moved most. matplotlib, Agg backend."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _short(name: str, limit: int = 18) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def save_diff_png(d: Mapping[str, Any], path: str | os.PathLike[str], *, channels_per_block: int = 3) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    blocks = list(d["blocks"])
    classes = list(d.get("classes") or [])
    ncols = 3 if classes else 2
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.8), constrained_layout=True)
    t1, t5 = d.get("top1_agreement"), d.get("top5_agreement")
    agree = (
        f"top-1 agreement {100 * t1:.1f}%, top-5 overlap {100 * t5:.1f}%" if t1 is not None else "no images"
    )
    fig.suptitle(f"A: {_short(str(d.get('a')), 60)}   vs   B: {_short(str(d.get('b')), 60)}\n"
                 f"{d['images']} images · {agree}", fontsize=10)  # fmt: skip

    ax = axes[0]
    if blocks:
        labels = [
            f"{i}: {_short(b['a'], 14 if len(blocks) > 5 else 18)}"
            + ("" if b["a"] == b["b"] else f"\n↔ {_short(b['b'])}")
            + f"\n{b['channels']} ch{' by origin' if b.get('by_origin') else ''}"
            for i, b in enumerate(blocks, 1)
        ]
        x = np.arange(len(blocks))
        w = 0.2
        series = [
            ("cosine", "#4c8bd6"),
            ("spearman", "#f0a030"),
            ("top10_overlap", "#59a14f"),
        ]
        for k, (key, color) in enumerate(series):
            vals = [np.nan if b[key] is None else b[key] for b in blocks]
            ax.bar(x + (k - 1.5) * w, vals, w, label=key.replace("_", " "), color=color)
        mad = [b["mean_abs_diff"] for b in blocks]
        ax.bar(x + 1.5 * w, mad, w, label="mean |B − A| (value above)", color="#d04a4a")
        for xi, v in zip(x, mad, strict=True):  # often far below the bar scale: print it
            ax.text(xi + 1.5 * w, 1.015, f"{v:.2g}", ha="center", va="bottom", fontsize=6, color="#d04a4a")
        many = len(blocks) > 5  # long module names side by side would overlap: slant them
        ax.set_xticks(
            x, labels, fontsize=6 if many else 7, rotation=30 if many else 0, ha="right" if many else "center"
        )
        ax.set_ylim(min(0.0, np.nanmin([b["spearman"] or 0 for b in blocks])) - 0.02, 1.08)
        ax.axhline(1.0, color="#888888", lw=0.6, ls=":")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=4, frameon=False)
        ax.set_title("Per paired block, mean over images", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no blocks could be paired", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    unpaired = d.get("unpaired") or []
    if unpaired:
        text = "unpaired: " + ", ".join(
            f"{u['model'].upper()} {_short(u['block'], 14)}" for u in unpaired[:8]
        )
        text += " …" if len(unpaired) > 8 else ""
        fig.text(0.01, 0.005, text, fontsize=7, color="#a03030")

    ax = axes[1]
    rows = []
    for i, b in enumerate(blocks, 1):
        for c in [c for c in b.get("most_changed") or [] if c["mean_abs_diff"] > 0][:channels_per_block]:
            rows.append((f"block {i} ch {c['a_channel']}", c["mean_a"], c["mean_b"]))
    if rows:
        y = np.arange(len(rows))[::-1]
        ax.barh(y + 0.2, [r[1] for r in rows], 0.4, label="A mean gate", color="#4c8bd6")
        ax.barh(y - 0.2, [r[2] for r in rows], 0.4, label="B mean gate", color="#f0a030")
        ax.set_yticks(y, [f"{r[0]}  Δ {r[2] - r[1]:+.4f}" for r in rows], fontsize=7)
        ax.set_xlim(0, max(1.0, max(max(r[1], r[2]) for r in rows) * 1.05))
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(
            f"Most changed channels (top {channels_per_block} per block by mean |B − A|)", fontsize=9
        )
    else:
        ax.set_axis_off()

    if classes:
        ax = axes[2]
        top = classes[:15][::-1]
        ax.barh(np.arange(len(top)), [c["mean_gate_diff"] for c in top], color="#b07aa1")
        ax.set_yticks(np.arange(len(top)), [f"{c['class']} ({c['images']})" for c in top], fontsize=7)
        ax.set_title(
            "Classes whose mean gates moved most\n(mean over blocks of |B − A| of class means)", fontsize=9
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
