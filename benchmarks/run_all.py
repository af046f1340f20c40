"""Run every benchmark in full, one after another, each after waiting for a quiet machine.

Writes each script's output to ``benchmarks/results/<name>.txt`` (and ``.json``) and prints a summary
of the targets. Exit status: 0 when every target was met, 1 otherwise.

    python benchmarks/run_all.py                 # all, waiting up to 10 min for load < 1.0 before each
    python benchmarks/run_all.py se_block startup --wait-quiet 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "se_block",
    "model_overhead",
    "fast_path",
    "recorder",
    "pipeline",
    "compare",
    "startup",
    "scaling",
    "attention",
    "timm_recording",
    "probe",
    "runtimes",
    "int8",
    "backend_pipeline",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=ORDER, help=f"subset of {', '.join(ORDER)}")
    p.add_argument("--wait-quiet", type=float, default=600.0, metavar="S")
    p.add_argument("--out", default=str(HERE / "results"))
    args, extra = p.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    code = 0
    for name in args.names:
        script = HERE / f"bench_{name}.py"
        cmd = [
            sys.executable,
            str(script),
            "--wait-quiet",
            str(args.wait_quiet),
            "--json",
            str(out / f"{name}.json"),
        ]
        print(f"$ {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run([*cmd, *extra], capture_output=True, text=True, check=False)
        (out / f"{name}.txt").write_text(
            proc.stdout + (f"\n# stderr:\n{proc.stderr}" if proc.returncode > 1 else "")
        )
        print(proc.stdout, flush=True)
        if proc.returncode > 1:
            print(proc.stderr[-3000:], file=sys.stderr)
        code = max(code, min(proc.returncode, 1))
        try:
            data = json.loads((out / f"{name}.json").read_text())
        except (OSError, ValueError):
            summary.append((name, "no result", ""))
            continue
        missed = [t["name"] for t in data.get("targets", []) if not t["met"]]
        load = data.get("load_start", ["?"])[0]
        summary.append((name, "all met" if not missed else f"MISSED: {', '.join(missed)}", f"load {load}"))
    print("\n# summary")
    for row in summary:
        print("  " + " | ".join(str(c) for c in row))
    return code


if __name__ == "__main__":
    sys.exit(main())
