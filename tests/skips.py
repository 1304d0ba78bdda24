"""Skip marks the script-level tests share: what a test needs of the machine, said loudly where
it is missing (a skipped real-sandbox test is a gap in CI, not a pass)."""

from __future__ import annotations

import os
import shutil

import pytest

NEEDS_BWRAP = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="LOUD SKIP: bubblewrap is not installed (run `make setup`)")


def needs_cores(n: int, why: str) -> pytest.MarkDecorator:
    """Skip where this process may use fewer than `n` cores; `why` says what needs them."""
    return pytest.mark.skipif(len(os.sched_getaffinity(0)) < n, reason=f"{why} needs {n} cores")
