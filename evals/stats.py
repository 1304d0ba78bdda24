"""Paired bootstrap intervals for accuracy differences on the same problems.

    paired_bootstrap(greedy_correct, sbs_correct)  # -> Interval(diff=0.061, low=0.042, high=0.080)

Both methods are graded on the same problems, so the difference is resampled by PROBLEM (one
index draw applies to both): the interval then reflects only the disagreements, which makes it
much tighter than two independent intervals (docs/MINI.md: a 6-point gain on 300 problems is
about two standard errors). Percentile interval; numpy's seeded generator, so it is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "paired_bootstrap"]


@dataclass(frozen=True)
class Interval:
    diff: float  # mean(other) - mean(base), as a fraction
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(base: Sequence[bool], other: Sequence[bool], *, resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Interval for mean(other) − mean(base) over paired outcomes (index i = the same problem)."""
    if len(base) != len(other):
        raise ValueError(f"paired samples differ in length: {len(base)} vs {len(other)}")
    if not base:
        raise ValueError("no paired samples")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    delta = np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(delta), size=(resamples, len(delta)))
    means = delta[draws].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(delta.mean()), float(low), float(high))
