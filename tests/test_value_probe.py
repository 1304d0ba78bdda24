"""benchmarks/value_probe.py: what each pooling can learn, and a run on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.benchmark_scripts import load_benchmark
from training.data import TrainingRow, TrainingStep, write_training_rows


def _load():
    return load_benchmark("value_probe")


def _row(question: str, correct: bool) -> TrainingRow:
    return TrainingRow(f"<question> {question} </question>\n", (TrainingStep("<step> x </step>", None),),
                       correct, question)


def test_min_pooling_finds_one_bad_token_that_the_last_position_does_not_show() -> None:
    vp = _load()
    gen = torch.Generator().manual_seed(0)
    rows, states = [], []
    for q in range(40):
        shared = torch.randn(6, 4, generator=gen)  # the question's candidates share their states...
        for correct in (True, False):
            s = shared.clone()
            if not correct:
                s[2, 0] += 3.0  # ...except one token mid-solution, where the wrong one slipped
            rows.append(_row(f"q{q}", correct))
            states.append(vp.RowStates(s.half(), last=5))
    assert len(vp.within_question_pairs(rows)) == 40
    by_min = vp.fit(vp.ProbeHead(4, "min"), states, rows, "pair", steps=300, weight_decay=0.0, lr=0.05)
    by_last = vp.fit(vp.ProbeHead(4, "last"), states, rows, "pair", steps=300, weight_decay=0.0, lr=0.05)
    assert vp.rank_with(by_min, states, rows).pair_auc == 1.0
    assert vp.rank_with(by_last, states, rows).pair_auc == 0.5  # identical last states: all ties


def test_no_pairs_is_one_clear_message() -> None:
    vp = _load()
    rows = [_row("q0", True), _row("q1", False)]
    states = [vp.RowStates(torch.zeros(2, 4).half(), 1)] * 2
    with pytest.raises(SystemExit, match="no question has both"):
        vp.fit(vp.ProbeHead(4, "mean"), states, rows, "pair", steps=1, weight_decay=0.0)


def test_runs_on_a_real_model(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    vp = _load()

    def rows(names: str) -> list[TrainingRow]:
        step = "<step>\n<p>\nFinal Answer: {}\n</p>\n</step>"
        return [TrainingRow(f"<question> {n} has 2 apples and buys 3 more. How many? </question>\n",
                            (TrainingStep(step.format(a), 1.0 if a == "5" else -1.0),), a == "5", n)
                for n in names.split() for a in ("5", "6")]

    train = write_training_rows(rows("Tom Ann Bo"), tmp_path / "train.jsonl")
    test = write_training_rows(rows("Cy Di"), tmp_path / "test.jsonl")
    argv = [str(tiny_model_dir), "--train", str(train), "--test", str(test), "--steps", "5",
            "--pool", "last,min", "--hidden", "0,8"]
    assert vp.main(argv) == 0
    out = capsys.readouterr().out
    assert "fitted on 6 candidates (3 pairs), ranked on 4 held out" in out
    assert out.count("| pair |") == 4  # two poolings × two heads
    with pytest.raises(SystemExit, match="in both --train and --test"):
        vp.main([str(tiny_model_dir), "--train", str(train), "--test", str(train)])
    with pytest.raises(SystemExit, match="cannot read"):
        vp.main([str(tiny_model_dir), "--train", str(tmp_path / "missing.jsonl"), "--test", str(test)])
