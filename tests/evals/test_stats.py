"""Paired bootstrap: centred on the observed gain, tight when methods agree, reproducible."""

from __future__ import annotations

import random

import pytest

from evals.stats import paired_bootstrap


def test_identical_outcomes_give_a_zero_width_interval() -> None:
    outcomes = [i % 3 == 0 for i in range(200)]
    ci = paired_bootstrap(outcomes, outcomes)
    assert (ci.diff, ci.low, ci.high) == (0.0, 0.0, 0.0) and not ci.excludes_zero


def test_a_consistent_gain_excludes_zero_and_a_noisy_one_does_not() -> None:
    rng = random.Random(0)
    base = [rng.random() < 0.5 for _ in range(1000)]
    better = [b or rng.random() < 0.15 for b in base]  # only ever fixes errors: ~+7.5 points
    ci = paired_bootstrap(base, better)
    assert ci.diff == pytest.approx(sum(better) / 1000 - sum(base) / 1000)
    assert 0 < ci.low < ci.diff < ci.high and ci.excludes_zero
    # Pairing matters: the same marginal accuracies, independent draws → a far wider interval.
    shuffled = better[:]
    rng.shuffle(shuffled)
    loose = paired_bootstrap(base, shuffled)
    assert loose.high - loose.low > 2 * (ci.high - ci.low)


def test_reproducible_and_validated() -> None:
    a = [True, False] * 50
    b = [True] * 100
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([True], [True, False])
    with pytest.raises(ValueError, match="no paired samples"):
        paired_bootstrap([], [])
