"""Scoring of a results file (`results.jsonl`, one object per problem): the paper's Table 3.

A row: `{"id", "question", "answer", "strategy", "config_hash", "prediction", "correct",
"tree", "stats": {"wall_s", "steps", "n_solutions", …}, "error": str | null}`.
Rows with an error count as wrong. A torn LAST line (the run was killed mid-write) is skipped and
counted; a malformed line anywhere else, or a duplicate id, is a `ScoreError` naming `file:line`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from rich.table import Table

from evals.errors import ScoreError
from evals.grader import Grader

__all__ = ["Score", "compare_results", "correct_by_id", "render_score", "score_results"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Score:
    """Aggregate numbers of one results file. Averages are None when no row reports the stat."""

    file: str
    total: int
    correct: int
    errors: int
    avg_wall_s: float | None
    avg_steps: float | None
    avg_solutions: float | None
    torn_lines: int = 0
    regraded: bool = False
    flipped: int = 0  # rows whose `correct` the regrade changed

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def score_results(path: Path, *, regrade: bool = False, grader: Grader | None = None) -> Score:
    """Score `path`. With `regrade`, `correct` is recomputed from `answer` and `prediction`
    (with `grader`, or a temporary Grader closed afterwards)."""
    path = Path(path)
    rows = list(read_rows(path))
    torn = sum(1 for r in rows if r is None)
    good: list[tuple[int, dict[str, Any]]] = [r for r in rows if r is not None]
    if torn:
        log.warning("results_torn_last_line_skipped", file=str(path))

    verdicts = [
        _stored_correct(path, line, row, regrade) and row.get("error") is None
        for line, row in good
    ]
    flipped = 0
    if regrade:
        todo = [i for i, (_, row) in enumerate(good) if row.get("error") is None]
        pairs = [(_answer(path, *good[i]), good[i][1].get("prediction")) for i in todo]
        own = grader is None
        g = grader if grader is not None else Grader()
        try:
            fresh = g.grade_many(pairs)
        finally:
            if own:
                g.close()
        new = [False] * len(good)
        for i, verdict in zip(todo, fresh, strict=True):
            new[i] = verdict
        flipped = sum(1 for old, now in zip(verdicts, new, strict=True) if old != now)
        verdicts = new

    errors = sum(1 for _, row in good if row.get("error") is not None)
    correct = sum(verdicts)
    return Score(
        file=str(path),
        total=len(good),
        correct=correct,
        errors=errors,
        avg_wall_s=_mean(path, good, "wall_s"),
        avg_steps=_mean(path, good, "steps"),
        avg_solutions=_mean(path, good, "n_solutions"),
        torn_lines=torn,
        regraded=regrade,
        flipped=flipped,
    )


def render_score(score: Score) -> Table:
    """A rich table of the Table-3 columns (print it with a rich Console)."""

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    table = Table(title=f"{score.file}" + (" (regraded)" if score.regraded else ""))
    # "latency s": the mean start-to-answer time of one problem. Problems run concurrently, so
    # this is not the run's time per problem (eval's summary line prints that one).
    for column in ("problems", "correct", "accuracy", "errors", "latency s", "steps",
                   "#solutions"):
        table.add_column(column, justify="right")
    table.add_row(
        str(score.total),
        str(score.correct),
        f"{100 * score.accuracy:.2f}%",
        str(score.errors),
        num(score.avg_wall_s, ".2f"),
        num(score.avg_steps, ".2f"),
        num(score.avg_solutions, ".2f"),
    )
    notes = []
    if score.torn_lines:
        notes.append(f"{score.torn_lines} torn last line skipped")
    if score.regraded:
        notes.append(f"{score.flipped} verdicts changed")
    if notes:
        table.caption = "; ".join(notes)
    return table


# --- reading -----------------------------------------------------------------------------------


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]] | None]:
    """(line, row) per line; None once for a torn last line. Raises ScoreError otherwise."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ScoreError(f"{path}: cannot read results: {exc.strerror}") from exc
    seen: dict[str, int] = {}
    pending: ScoreError | None = None  # a bad line is only fatal if another line follows it
    with fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if pending is not None:
                raise pending
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                pending = ScoreError(f"{path}:{line_no}: malformed line: {exc}")
                continue
            if not isinstance(row, dict):
                raise ScoreError(f"{path}:{line_no}: expected a JSON object")
            rid = row.get("id")
            if not isinstance(rid, str) or not rid:
                raise ScoreError(f"{path}:{line_no}: field 'id': missing or not a string")
            first = seen.setdefault(rid, line_no)
            if first != line_no:
                raise ScoreError(f"{path}:{line_no}: duplicate id {rid!r} (first at line {first})")
            yield line_no, row
    if pending is not None:
        yield None


def _stored_correct(path: Path, line: int, row: dict[str, Any], regrade: bool) -> bool:
    value = row.get("correct")
    if isinstance(value, bool):
        return value
    if value is None and (regrade or row.get("error") is not None):
        return False
    raise ScoreError(f"{path}:{line}: field 'correct': expected true/false, got {value!r}")


def _answer(path: Path, line: int, row: dict[str, Any]) -> str | list[str]:
    answer = row.get("answer")
    if isinstance(answer, str) or (
        isinstance(answer, list) and answer and all(isinstance(a, str) for a in answer)
    ):
        return answer
    raise ScoreError(f"{path}:{line}: field 'answer': expected a string or list of strings")


def _mean(path: Path, rows: list[tuple[int, dict[str, Any]]], key: str) -> float | None:
    values: list[float] = []
    for line, row in rows:
        stats = row.get("stats")
        if stats is None:
            continue
        if not isinstance(stats, dict):
            raise ScoreError(f"{path}:{line}: field 'stats': expected an object")
        value = stats.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScoreError(f"{path}:{line}: field 'stats.{key}': expected a number")
        values.append(float(value))
    return sum(values) / len(values) if values else None


def correct_by_id(path: Path) -> dict[str, bool]:
    """{problem id: correct} of a results file (an error row counts as wrong)."""
    return {row["id"]: _stored_correct(path, line, row, regrade=False)
            for item in read_rows(Path(path)) if item is not None for line, row in [item]}


def compare_results(path: Path, baseline: Path) -> str:
    """One line: the accuracy of `path` minus `baseline` on the problems both hold, with a
    paired-bootstrap 95 % interval (evals/stats.py)."""
    from evals.stats import paired_bootstrap

    ours, base = correct_by_id(path), correct_by_id(baseline)
    common = sorted(ours.keys() & base.keys())
    if not common:
        raise ScoreError(f"{path} and {baseline} share no problem id: nothing to compare")
    ci = paired_bootstrap([base[i] for i in common], [ours[i] for i in common])
    verdict = "better" if ci.low > 0 else "worse" if ci.high < 0 else "no clear difference"
    return (f"vs {baseline}: {100 * ci.diff:+.1f} points on {len(common)} shared problems "
            f"(95% CI [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}], paired bootstrap): {verdict}")
