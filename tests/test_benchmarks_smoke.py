"""Every benchmark script runs in --quick mode and prints its table.

This is a smoke test only: it never checks that a performance target is met (targets are for the full
runs, on a quiet machine; see benchmarks/README.md). --quick never fails on a missed target, so a
non-zero exit here means the script itself broke.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("bench_*.py"))


def test_every_benchmark_is_covered() -> None:
    assert SCRIPTS == [
        "bench_attention.py",
        "bench_backend_pipeline.py",
        "bench_compare.py",
        "bench_evidence.py",
        "bench_fast_path.py",
        "bench_int8.py",
        "bench_model_overhead.py",
        "bench_pipeline.py",
        "bench_probe.py",
        "bench_recorder.py",
        "bench_runtimes.py",
        "bench_scaling.py",
        "bench_se_block.py",
        "bench_startup.py",
        "bench_timm_recording.py",
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_run_prints_its_table(script: str, tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "KINETO_LOG_LEVEL": "5"}
    env.pop("SEVGG_FAST", None)
    out_json = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--json", str(out_json)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=400,  # generous: a loaded CI box; the smoke checks that scripts run, not speed
        check=False,
    )
    assert proc.returncode == 0, (
        f"{script} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("# "), proc.stdout[:500]
    assert "# mode: quick" in proc.stdout
    assert any(line.startswith("|---") or line.startswith("|-") for line in lines), proc.stdout[-2000:]
    assert "# load average at end:" in proc.stdout
    assert out_json.is_file() and out_json.stat().st_size > 0
