"""benchmarks/cores.py: shares of this process's cores, and pinning to one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.benchmark_scripts import BENCHMARKS, load_benchmark


def test_shares_are_disjoint_contiguous_and_cover_every_allowed_core(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = load_benchmark("cores")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 5, 7})
    assert cores.split_cores(2) == [frozenset({0, 1, 2}), frozenset({5, 7})]
    assert cores.split_cores(5) == [frozenset({c}) for c in (0, 1, 2, 5, 7)]
    assert cores.split_cores(1) == [frozenset({0, 1, 2, 5, 7})]
    for parts in (0, 6):
        with pytest.raises(ValueError, match="cannot split 5 core"):
            cores.split_cores(parts)


def test_a_pinned_process_and_its_children_run_on_its_share_with_as_many_threads() -> None:
    share = sorted(os.sched_getaffinity(0))[-1:]
    # A child process, as a pinned evaluation's sandbox workers are.
    script = ("import os, subprocess, sys; import cores; cores.pin_this_process(frozenset({%d}));"
              "print(subprocess.run([sys.executable, '-c', 'import os; "
              "print(sorted(os.sched_getaffinity(0)), os.environ[\"OMP_NUM_THREADS\"])'],"
              " capture_output=True, text=True, check=True).stdout.strip())" % share[0])
    out = subprocess.run([sys.executable, "-c", script], cwd=BENCHMARKS, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == f"{share} 1"
