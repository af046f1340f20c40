"""Write excitations (and predictions) to CSV or NPZ: shared by the CLI and the app."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .inference import Result


def write_excitations(path: str | Path, names: Sequence[str], results: Sequence[Result]) -> Path:
    """CSV: one row per (image, block, channel) with gate and squeeze values.
    NPZ: ``images`` (N,), and per block ``<block>/excitation`` and ``<block>/squeeze`` (N, C), plus top-5."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "block", "channel", "excitation", "squeeze"])
            for name, r in zip(names, results, strict=True):
                for block, gates in r.excitations.items():
                    sq = r.squeezes.get(block)
                    for c, g in enumerate(gates):
                        w.writerow([name, block, c, f"{g:.6g}", f"{sq[c]:.6g}" if sq is not None else ""])
        return path
    arrays: dict[str, np.ndarray] = {"images": np.asarray(list(names))}
    for block in results[0].excitations:
        arrays[f"{block}/excitation"] = np.stack([r.excitations[block] for r in results])
        if block in results[0].squeezes:
            arrays[f"{block}/squeeze"] = np.stack([r.squeezes[block] for r in results])
    arrays["top5_index"] = np.asarray([[p.index for p in r.topk] for r in results])
    arrays["top5_prob"] = np.asarray([[p.prob for p in r.topk] for r in results], dtype=np.float32)
    arrays["top5_label"] = np.asarray([[p.label for p in r.topk] for r in results])
    np.savez_compressed(path, **arrays)
    return path
