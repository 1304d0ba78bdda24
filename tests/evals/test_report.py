from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from evals import Grader, Score, ScoreError, render_score, score_results


def _row(rid: str, correct: bool | None, *, answer: Any = "1", prediction: Any = "1",
         error: str | None = None, **stats: float) -> dict[str, Any]:
    return {"id": rid, "question": f"q {rid}", "answer": answer, "strategy": "greedy",
            "config_hash": "abc", "prediction": prediction, "correct": correct,
            "tree": {"nodes": []}, "stats": stats, "error": error}


ROWS = [
    _row("a", True, wall_s=1.0, steps=3, n_solutions=1),
    _row("b", False, wall_s=2.0, steps=5, n_solutions=2),
    _row("c", True, error="EngineError: boom", wall_s=3.0, steps=1, n_solutions=0),  # counts wrong
    _row("d", True, wall_s=6.0, steps=7),  # no n_solutions: left out of that average
]


def _write(path: Path, rows: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return path


def test_exact_numbers(tmp_path: Path) -> None:
    score = score_results(_write(tmp_path / "results.jsonl", ROWS))
    assert score == Score(file=str(tmp_path / "results.jsonl"), total=4, correct=2, errors=1,
                          avg_wall_s=3.0, avg_steps=4.0, avg_solutions=1.0)
    assert score.accuracy == 0.5


def test_empty_file(tmp_path: Path) -> None:
    score = score_results(_write(tmp_path / "r.jsonl", []))
    assert (score.total, score.accuracy, score.avg_wall_s) == (0, 0.0, None)


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", ROWS, tail='{"id": "e", "corr')
    score = score_results(path)
    assert (score.total, score.correct, score.torn_lines) == (4, 2, 1)
    text = _render(score)
    assert "1 torn last line skipped" in text


def test_malformed_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    text = json.dumps(ROWS[0]) + "\n{oops\n" + json.dumps(ROWS[1]) + "\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScoreError, match=r"r\.jsonl:2: malformed line"):
        score_results(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"correct": True}, "field 'id'"),
        (_row("x", "yes"), "field 'correct'"),  # type: ignore[arg-type]
        (_row("x", True, wall_s="slow"), "field 'stats.wall_s'"),  # type: ignore[arg-type]
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_rows(tmp_path: Path, row: Any, message: str) -> None:
    path = _write(tmp_path / "r.jsonl", [ROWS[0], row, ROWS[1]])
    with pytest.raises(ScoreError, match=rf"r\.jsonl:2: .*{message}"):
        score_results(path)


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [ROWS[0], ROWS[1], ROWS[0]])
    with pytest.raises(ScoreError, match=r"r\.jsonl:3: duplicate id 'a' \(first at line 1\)"):
        score_results(path)


def test_regrade_flips_wrong_verdicts(tmp_path: Path) -> None:
    rows = [
        _row("a", False, answer="\\frac{1}{2}", prediction="0.5"),  # stored wrong → right
        _row("b", True, answer="2", prediction="3"),  # stored right → wrong
        _row("c", True, answer=["3", "-3"], prediction="-3"),  # unchanged
        _row("d", None, answer="1", prediction=None),  # no prediction, no verdict yet
        _row("e", True, answer="1", prediction="1", error="Timeout"),  # errors stay wrong
    ]
    path = _write(tmp_path / "r.jsonl", rows)
    with pytest.raises(ScoreError, match=r"r\.jsonl:4: field 'correct'"):
        score_results(path)  # without regrading, every row needs its verdict
    with Grader(max_workers=1) as g:
        score = score_results(path, regrade=True, grader=g)
    assert (score.total, score.correct, score.errors) == (5, 2, 1)
    assert score.regraded and score.flipped == 2  # a and b
    assert "(regraded)" in _render(score)


def test_regrade_with_its_own_grader(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", [_row("a", False, answer="10", prediction="10.0")])
    assert score_results(path).correct == 0
    assert score_results(path, regrade=True).correct == 1


def test_render(tmp_path: Path) -> None:
    text = _render(score_results(_write(tmp_path / "results.jsonl", ROWS)))
    for cell in ("4", "2", "50.00%", "3.00", "4.00", "1.00", "latency s", "steps"):
        assert cell in text


def _render(score: Score) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(render_score(score))
    return console.export_text()
