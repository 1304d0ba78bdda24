"""benchmarks/bench_jobs.py: `mini_alphamath.py --jobs 1` then `--jobs 2` on the tiny model (the
transformers engine, real bubblewrap sandbox), a row each and equal predictions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skips import NEEDS_BWRAP, needs_cores

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_jobs.py"

pytestmark = [pytest.mark.slow, NEEDS_BWRAP, needs_cores(2, "--jobs 2")]


def test_one_row_per_mode_and_the_same_predictions(tiny_model_dir: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tiny_model_dir), "--problems", "3",
                           "--strategies", "greedy,sbs_1_5", "--engine", "hf"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^\| --jobs (\d) \| (\d+) s \| ([\d.]+) \|$", proc.stdout, flags=re.MULTILINE)
    assert [(r[0], r[2]) for r in rows][:1] == [("1", "1.00")] and [r[0] for r in rows] == ["1", "2"]
    assert "every prediction the same in both modes" in proc.stdout, proc.stdout


def test_a_missing_model_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no model directory" in proc.stderr and "Traceback" not in proc.stderr
