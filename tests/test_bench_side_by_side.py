"""benchmarks/bench_side_by_side.py starts two real `cli.py eval` processes per mode and prints
one table row per mode, the first (alone) its baseline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skips import NEEDS_BWRAP, needs_cores

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_side_by_side.py"
MODEL = ROOT / "models" / "mini-alphamath"

pytestmark = [pytest.mark.slow, NEEDS_BWRAP, needs_cores(2, "pinned mode")]


def test_alone_then_pinned_rows_with_equal_answers() -> None:
    pytest.importorskip("vllm", reason="LOUD SKIP: vLLM is not installed (run `make setup`)")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(MODEL), "--problems", "3",
                           "--strategy", "greedy", "--modes", "pinned"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^\| (\w+) \| (\d+) s \| (\d+) s \| (\d+) s \| (\d) / (\d) \| ([\d.]+) \|$",
                      proc.stdout, flags=re.MULTILINE)
    assert [r[0] for r in rows] == ["alone", "pinned"], proc.stdout  # alone always runs first
    alone, pinned = rows
    assert alone[6] == "1.00"
    # alone's makespan is its two runs in turn; greedy answers the same however the cores are split
    assert int(alone[1]) >= int(alone[2]) + int(alone[3]) - 1
    assert alone[4] == alone[5] == pinned[4] == pinned[5], proc.stdout
    assert "failed" not in proc.stdout and "differ" not in proc.stdout, proc.stdout


def test_unknown_mode_is_one_line() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--modes", "alone,sideways"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown mode(s) sideways" in proc.stderr and "Traceback" not in proc.stderr
