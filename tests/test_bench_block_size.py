"""benchmarks/bench_block_size.py runs on the shipped model and prints its side-by-side table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skips import NEEDS_BWRAP

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_block_size.py"
MODEL = ROOT / "models" / "mini-alphamath"

pytestmark = [pytest.mark.slow, NEEDS_BWRAP]


def test_table_has_one_row_per_block_with_hit_rate_and_speed_up() -> None:
    pytest.importorskip("vllm", reason="LOUD SKIP: vLLM is not installed (run `make setup`)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(MODEL), "--problems", "2",
                           "--strategies", "greedy", "--blocks", "64,32"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^greedy\s+(\d+)\s+[\d.]+\s+[\d.]+\s+(\d)/2\s+(\d+)%\s+(\d)/2\s+([\d.]+)x$",
                      proc.stdout, flags=re.MULTILINE)
    assert [r[0] for r in rows] == ["64", "32"], proc.stdout
    assert rows[0][3] == "2" and rows[0][4] == "1.00"  # the first block size is the baseline
    assert rows[1][3] == "2"  # greedy's answers do not depend on the block size
    assert all(0 < int(r[2]) <= 100 for r in rows)  # the prefix cache was used and reported
