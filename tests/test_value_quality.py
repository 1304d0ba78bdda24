"""benchmarks/value_quality.py: the ranking figures, exactly, and a run on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark
from training.data import TrainingRow, TrainingStep, write_training_rows


def _load():
    return load_benchmark("value_quality")


def test_ranking_separates_within_question_from_overall() -> None:
    vq = _load()
    # The scores know which question is easy (a: high, b: low) but order only half of the
    # pairs within a question: overall AUC 0.75, pair AUC 0.5.
    ids = ["a", "a", "a", "b", "b", "b", "c"]
    ok = [True, True, False, True, False, False, False]
    scores = [0.9, 0.8, 0.85, 0.1, 0.0, 0.2, -0.5]
    r = vq.ranking(ids, ok, scores)
    assert r.pairs == 2 + 2
    assert r.pair_auc == pytest.approx((1 + 0 + 1 + 0) / 4)  # a: 0.9>0.85, 0.8<0.85; b: 0.1>0, 0.1<0.2
    # 3 positives × 4 negatives: 0.9 beats all 4, 0.8 all but 0.85, 0.1 only 0.0 and -0.5
    assert r.auc == pytest.approx(9 / 12)
    assert r.pick == pytest.approx(1 / 3)  # a's top (0.9) is right; b's (0.2) and c's are not
    assert r.oracle == pytest.approx(2 / 3)
    ties = vq.ranking(["q", "q"], [True, False], [0.5, 0.5])
    assert ties.pair_auc == 0.5
    assert math.isnan(vq.ranking(["q"], [True], [0.1]).pair_auc)


def test_scores_rows_with_a_real_model(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    vq = _load()
    prompt = "<question> Tom has 2 apples and buys 3 more. How many apples? </question>\n"
    rows = [TrainingRow(prompt, (TrainingStep(f"<step>\n<p>\nFinal Answer: {a}\n</p>\n</step>", q),), q > 0, "q1")
            for a, q in (("5", 1.0), ("6", -1.0), ("7", -1.0))]
    path = write_training_rows(rows, tmp_path / "rows.jsonl")
    got, values, likelihoods = vq.score_rows(tiny_model_dir, [path])
    assert [r.correct for r in got] == [True, False, False]
    assert all(-1.0 <= v <= 1.0 for v in values) and len(set(values)) == 3
    assert all(ll < 0 for ll in likelihoods)
    assert vq.main([str(tiny_model_dir), str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 candidates of 1 questions" in out and "| value head |" in out
