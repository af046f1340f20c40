"""Start-up: ``sevgg --help``, ``import sevgg_gui``, and ``sevgg-gui`` to its first prediction.

Every figure is a fresh process (median of several runs, warm page cache: the files were read before).
``sevgg-gui`` runs headless (offscreen Qt, ``--frames 1``) on a bundled sample with a local VGG16-SE
checkpoint written for the run; a probe records when the imports finished, the window was shown, the
model was loaded and the first Result was drawn, relative to the moment the process was spawned.

Targets (full run): ``sevgg --help`` <= 0.5 s; ``import sevgg_gui`` imports neither Qt nor torch;
``sevgg-gui`` spawn -> first prediction drawn <= 3 s.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import ROOT, Report, guarded, parser, start  # noqa: E402

BIN = Path(sys.executable).parent


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return dt, out.stdout


def script(name: str) -> list[str]:
    """The console script if installed, else the module it runs."""
    exe = BIN / name
    if exe.exists():
        return [str(exe)]
    module = {"sevgg": "sevgg_gui.cli", "sevgg-gui": "sevgg_gui.app.main"}[name]
    return [sys.executable, "-m", module]


def import_report(module: str) -> dict:
    code = (
        f"import time, sys, json; t = time.perf_counter(); import {module}; dt = time.perf_counter() - t; "
        "mods = sys.modules; print(json.dumps({'s': dt, 'qt': any(k.startswith(('PySide6', 'pyqtgraph')) "
        "for k in mods), 'torch': 'torch' in mods, 'torchvision': 'torchvision' in mods, "
        "'dynamo': 'torch._dynamo' in mods}))"
    )
    _, out = timed([sys.executable, "-c", code])
    return json.loads(out.strip().splitlines()[-1])


def heaviest_imports(module: str, top: int = 6) -> list[tuple[str, float]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cum, name = (s.strip() for s in line.split(":", 1)[1].split("|"))
        if cum.isdigit():
            rows.append((name, int(cum) / 1e6))
    # Top-level-ish packages only: the cumulative time of a package includes its children.
    wanted = (
        "torch",
        "torchvision",
        "torch._dynamo",
        "sevgg_gui.recorder",
        "sevgg_gui.models.vgg",
        "PIL.Image",
    )
    seen = {n: s for n, s in rows if n in wanted}
    return sorted(seen.items(), key=lambda kv: -kv[1])[:top]


def first_prediction(checkpoint: Path | None, sample: Path, env: dict[str, str], extra: list[str]) -> dict:
    cmd = [sys.executable, str(HERE / "_gui_first_prediction.py"), str(sample), "--frames", "1", *extra]
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    t_spawn = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    t_end = time.time()
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"sevgg-gui probe failed ({out.returncode}): {out.stderr.strip()[-800:]}")
    stamps = json.loads(lines[-1])
    rel = {k: v - t_spawn for k, v in stamps.items() if k != "model_ms"}
    rel["process"] = t_end - t_spawn
    rel["model_ms"] = stamps.get("model_ms", float("nan"))
    return rel


COMPONENTS = """
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
path = sys.argv[1]
a = time.perf_counter(); sd = torch.load(path, map_location="cpu", weights_only=True); b = time.perf_counter()
del sd
c = time.perf_counter(); sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True); d = time.perf_counter()
del sd
dyn0 = "torch._dynamo" in sys.modules
from sevgg_gui.checkpoints import load_checkpoint
e = time.perf_counter(); model, _ = load_checkpoint(path); f = time.perf_counter()
dyn1 = "torch._dynamo" in sys.modules
from sevgg_gui.inference import Predictor
g = time.perf_counter(); pred = Predictor(model, device="cpu"); h = time.perf_counter()
import numpy as np
img = np.zeros((480, 640, 3), np.uint8)
i = time.perf_counter(); pred.predict(img); j = time.perf_counter(); pred.predict(img); k = time.perf_counter()
print(json.dumps({"import torch": t1 - t0, "torch.load": b - a, "torch.load(mmap=True)": d - c,
    "load_checkpoint (1st in process)": f - e, "  imports torch._dynamo": float(dyn1 and not dyn0),
    "import inference + Predictor()": h - f, "1st predict()": j - i, "2nd predict()": k - j}))
"""


def components(checkpoint: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", COMPONENTS, str(checkpoint)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"components probe failed: {out.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=None, help="processes per figure (default 7, GUI 3)")
    p.add_argument("--checkpoint", help="use this VGG16-SE checkpoint instead of writing one")
    args = p.parse_args()
    start(args)
    report = Report("Start-up: CLI help, package import, GUI to first prediction", args)
    quick = args.quick
    runs = args.runs or (2 if quick else 7)
    gui_runs = args.runs or (1 if quick else 3)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}

    help_times = [guarded(lambda: timed([*script("sevgg"), "--help"])[0])[0] for _ in range(runs)]
    gui_help = [guarded(lambda: timed([*script("sevgg-gui"), "--help"])[0])[0] for _ in range(runs)]
    imp = [import_report("sevgg_gui") for _ in range(runs)]
    inf = [import_report("sevgg_gui.inference") for _ in range(max(1, runs // 2))]
    rows = [
        ["sevgg --help", statistics.median(help_times), max(help_times), ""],
        ["sevgg-gui --help", statistics.median(gui_help), max(gui_help), ""],
        [
            "import sevgg_gui",
            statistics.median(r["s"] for r in imp),
            max(r["s"] for r in imp),
            f"Qt={imp[0]['qt']} torch={imp[0]['torch']}",
        ],
        [
            "import sevgg_gui.inference",
            statistics.median(r["s"] for r in inf),
            max(r["s"] for r in inf),
            f"torchvision={inf[0]['torchvision']} torch._dynamo={inf[0]['dynamo']}",
        ],
    ]
    report.target("sevgg --help median (s)", statistics.median(help_times), 0.5)
    report.target("import sevgg_gui pulls in Qt (0/1)", float(imp[0]["qt"]), 0)
    report.target("import sevgg_gui pulls in torch (0/1)", float(imp[0]["torch"]), 0)
    report.print_table(["command (fresh process)", "median s", "max s", "notes"], rows, "cli")
    if not quick:
        heavy = heaviest_imports("sevgg_gui.inference")
        report.print_table(
            ["import sevgg_gui.inference: heaviest (cumulative)", "s"], [[n, s] for n, s in heavy], "imports"
        )

    tmp = Path(tempfile.mkdtemp(prefix="sevgg-startup-"))
    try:
        ckpt: Path | None = Path(args.checkpoint) if args.checkpoint else None
        small = ROOT.parent / "shared" / "weights" / "mobilenet_v3_small-tfslim_uint8-distilled.pth"
        if ckpt is None and quick and small.exists():
            ckpt = small  # smoke: a 10 MB torchvision SE checkpoint loads in a blink
        if ckpt is None and not quick:
            sys.path.insert(0, str(ROOT))
            import torch

            from sevgg_gui.checkpoints import save_checkpoint
            from sevgg_gui.models.vgg import VGG16_SE

            torch.manual_seed(0)
            ckpt = save_checkpoint(VGG16_SE(), tmp / "vgg16_se.pth")
            timed([sys.executable, "-c", f"open({str(ckpt)!r}, 'rb').read()"])  # warm the page cache
        sample = ROOT / "sevgg_gui" / "resources" / "samples" / "chelsea.png"
        variants = {
            "default": (env, []),
            "SEVGG_FAST=0": ({**env, "SEVGG_FAST": "0"}, []),
        }
        gui_rows = []
        firsts: list[float] = []
        for name, (e, extra) in variants.items():
            if quick and name != "default":
                continue
            res = [
                guarded(lambda e=e, extra=extra: first_prediction(ckpt, sample, e, extra))[0]
                for _ in range(gui_runs)
            ]

            def med(key: str, res=res) -> float:
                return statistics.median(r.get(key, float("nan")) for r in res)

            if name == "default":
                firsts = [r["first_draw"] for r in res]
            gui_rows.append(
                [
                    name,
                    med("start"),
                    med("imports"),
                    med("window_shown"),
                    med("model_loaded"),
                    med("first_draw"),
                    med("model_ms") / 1e3,
                    med("process"),
                ]
            )
        report.print_table(
            [
                f"sevgg-gui --checkpoint {'(none: default model)' if ckpt is None else ckpt.name}",
                "python up s",
                "imports s",
                "window s",
                "model loaded s",
                "first prediction drawn s",
                "1st forward s",
                "process exit s",
            ],
            gui_rows,
            "gui",
        )
        print("# times from spawn; headless (offscreen Qt), one sample, warm page cache")
        report.target("sevgg-gui spawn -> first prediction (s)", statistics.median(firsts), 3.0)
        if ckpt is not None and not quick:
            comp = [guarded(lambda: components(ckpt))[0] for _ in range(3)]
            report.print_table(
                ["in one process, after Python is up", "median s"],
                [[k, statistics.median(c[k] for c in comp)] for k in comp[0]],
                "components",
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
