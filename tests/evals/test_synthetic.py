"""synth-arith: seeded, disjoint splits, exact answers, solutions that parse and execute."""

from __future__ import annotations

import random
import re

import pytest

from evals.synthetic import (
    synth_arith_contrast_rows,
    synth_arith_flawed_solution,
    synth_arith_problems,
    synth_arith_sft_rows,
    synth_arith_solution,
)
from runtime.react import get_format
from sandbox.executor import execute

SFT = get_format("react_sft")


def test_deterministic_by_seed() -> None:
    a = list(synth_arith_problems("train", 50, seed=1))
    assert a == list(synth_arith_problems("train", 50, seed=1))
    assert [p.question for p in a] != [p.question for p in synth_arith_problems("train", 50, seed=2)]
    assert len({p.id for p in a}) == 50 and len({p.question for p in a}) == 50


def test_splits_are_disjoint_for_any_seeds() -> None:
    train = {p.question for s in (0, 1) for p in synth_arith_problems("train", 1500, seed=s)}
    test = {p.question for s in (0, 7) for p in synth_arith_problems("test", 400, seed=s)}
    assert len(test) > 700 and not train & test


def test_answers_are_exact_integers_over_two_to_four_operations() -> None:
    counts = set()
    for p in synth_arith_problems("test", 300, seed=0):
        (answer,) = p.answer
        assert re.fullmatch(r"[1-9]\d*", answer), answer
        assert 2 <= len(p.meta["ops"]) <= 4
        counts.add(len(p.meta["ops"]))
        assert p.question.endswith("?") and p.source == "synth-arith"
    assert counts == {2, 3, 4}
    with pytest.raises(ValueError, match="unknown synth-arith split"):
        next(synth_arith_problems("dev", 1, 0))


def test_solutions_parse_and_their_code_yields_the_answer() -> None:
    rng = random.Random(0)
    layouts = set()
    for p in synth_arith_problems("train", 60, seed=3):
        steps = synth_arith_solution(p, rng=rng)
        layouts.add(len(steps) == 2)
        history: list[str] = []
        for text in steps[:-1]:
            before_output = text.split("\n<output>")[0].removesuffix("\n</code>")
            parsed = SFT.parse(before_output)
            assert parsed.is_code, parsed.error
            out, err = execute(history, parsed.code)
            assert err is None
            assert SFT.with_observation(parsed, out) == text  # the pasted output is the real one
            history.append(parsed.code)
        final = SFT.parse(steps[-1].removesuffix("\n</step>"))
        assert final.is_answer and final.final_answer == p.answer[0]
        assert out == p.answer[0]
        # the document is the react_sft prompt the policy continues
        assert SFT.build_prompt(p.question, steps).startswith(f"<question> {p.question} </question>\n<step>")
    assert layouts == {True, False}  # both one-expression and step-per-operation solutions


def test_sft_rows() -> None:
    rows = list(synth_arith_sft_rows("train", 5, seed=0))
    assert len(rows) == 5 and all(r.correct and all(s.q == 1.0 for s in r.steps) for r in rows)
    assert rows[0].prompt.startswith("<question> ")


def test_hard_level_has_three_to_six_operations_and_its_own_ids() -> None:
    problems = list(synth_arith_problems("test", 300, seed=0, level="synth-arith-hard"))
    assert {len(p.meta["ops"]) for p in problems} == {3, 4, 5, 6}
    assert all(p.source == "synth-arith-hard" and p.id.startswith("synth-arith-hard-test-0-")
               for p in problems)
    easy = {p.question for p in synth_arith_problems("test", 300, seed=0)}
    assert len(easy & {p.question for p in problems}) < 10  # different draws, not a relabelling
    with pytest.raises(ValueError, match="unknown synth-arith level"):
        next(synth_arith_problems("test", 1, 0, level="synth-arith-extreme"))


def _replay(steps: list[str]) -> list[str]:
    """Each code step's real output, its code run after the earlier steps' (as the executor does)."""
    history: list[str] = []
    outputs = []
    for text in steps[:-1]:
        parsed = SFT.parse(text.split("\n<output>")[0].removesuffix("\n</code>"))
        out, err = execute(history, parsed.code)
        assert err is None
        assert SFT.with_observation(parsed, out) == text  # the pasted output is the real one
        history.append(parsed.code)
        outputs.append(out)
    return outputs


def test_hard_solutions_replay_to_the_answer() -> None:
    for p in synth_arith_problems("train", 40, seed=5, level="synth-arith-hard"):
        assert _replay(synth_arith_solution(p))[-1] == p.answer[0]


def test_flawed_solutions_are_consistent_and_wrong() -> None:
    """A slip's consequences follow from it: the outputs are what the code prints, all positive,
    the answer step says the last of them, and it is not the problem's answer."""
    rng = random.Random(0)
    for p in synth_arith_problems("train", 60, seed=5, level="synth-arith-hard"):
        one_expression = rng.random() < 0.5
        steps = synth_arith_flawed_solution(p, rng=rng, one_expression=one_expression)
        outputs = _replay(steps)
        assert all(int(o) > 0 for o in outputs)
        final = SFT.parse(steps[-1].removesuffix("\n</step>"))
        assert final.is_answer and final.final_answer == outputs[-1] != p.answer[0]
        assert (len(steps) == 2) == one_expression


def test_contrast_rows_share_a_layout_and_take_targets_from_outcomes() -> None:
    rows = list(synth_arith_contrast_rows("train", 30, 0, level="synth-arith-hard", flawed=3,
                                          one_expression_share=0.5))
    assert len(rows) == 120
    layouts = set()
    for k in range(0, 120, 4):
        right, *wrong = rows[k:k + 4]
        assert right.correct and not any(w.correct for w in wrong)
        assert len({r.id for r in rows[k:k + 4]}) == 1 and len({r.prompt for r in rows[k:k + 4]}) == 1
        assert all(s.q == 1.0 for s in right.steps)
        layouts.add(len(right.steps) == 2)
        for w in wrong:
            assert (len(w.steps) == 2) == (len(right.steps) == 2)
            # +1 exactly while the flawed path still runs along the correct one, -1 from the slip on
            shared = next(i for i, (a, b) in enumerate(zip(w.steps, right.steps, strict=False))
                          if a.text != b.text)
            assert [s.q for s in w.steps] == [1.0] * shared + [-1.0] * (len(w.steps) - shared)
    assert layouts == {True, False}
