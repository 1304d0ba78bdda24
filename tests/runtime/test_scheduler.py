from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runtime.engine import EngineMetrics, engine_metrics
from runtime.engines.scripted import ScriptedEngine
from runtime.errors import NoValueHeadError
from runtime.problem import Problem
from runtime.results import ResultsWriter
from runtime.scheduler import _TOTALS, RunSummary, run_problems
from strategies.base import _OWN_FIELDS, SolveStats


def _problems(n: int, pulled: list[int] | None = None) -> Iterator[Problem]:
    for i in range(n):
        if pulled is not None:
            pulled.append(i)
        yield Problem(id=f"p{i}", question=f"q{i}", answer=(str(i),))


async def _grade(reference: tuple[str, ...], prediction: str | None) -> bool:
    return prediction in reference


def _to_row(problem: Problem, result: Any, correct: bool) -> dict[str, Any]:
    return {"id": problem.id, "prediction": result.prediction, "correct": correct, "error": None}


async def _run(tmp_path: Path, problems, solve, *, concurrency: int = 4, skip: set[str] | None = None,
               on_row=None):
    writer = ResultsWriter(tmp_path / "r.jsonl")
    try:
        return await run_problems(problems, solve=solve, grade=_grade, to_row=_to_row, writer=writer,
                                  skip_ids=skip or set(), concurrency=concurrency,
                                  config_hash="h", strategy_name="test", on_row=on_row)
    finally:
        await writer.aclose()


def _rows(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]


async def test_bounded_in_flight_and_lazy_pulling(tmp_path: Path) -> None:
    in_flight = 0
    peak = 0
    pulled: list[int] = []
    done = 0

    async def solve(problem: Problem):
        nonlocal in_flight, peak, done
        in_flight += 1
        peak = max(peak, in_flight)
        # The dataset iterator may be at most `concurrency` problems ahead of what finished.
        assert len(pulled) <= done + 3
        await asyncio.sleep(0.001 * (int(problem.id[1:]) % 5))
        in_flight -= 1
        done += 1
        return SimpleNamespace(prediction=problem.answer[0])

    summary = await _run(tmp_path, _problems(60, pulled), solve, concurrency=3)
    assert peak == 3
    assert summary.finished == 60 and summary.correct == 60
    assert sorted(r["id"] for r in _rows(tmp_path)) == sorted(f"p{i}" for i in range(60))


async def test_a_failing_problem_becomes_an_error_row(tmp_path: Path) -> None:
    async def solve(problem: Problem):
        if problem.id == "p2":
            raise RuntimeError("boom")
        return SimpleNamespace(prediction="wrong")

    summary = await _run(tmp_path, _problems(5), solve)
    assert summary.errors == 1 and summary.finished == 5
    rows = {r["id"]: r for r in _rows(tmp_path)}
    assert rows["p2"]["error"] == "RuntimeError: boom"
    assert rows["p2"]["correct"] is False
    assert rows["p1"]["error"] is None


async def test_a_fatal_error_ends_the_run_without_error_rows(tmp_path: Path) -> None:
    """A model without a value head fails every problem alike: the run stops at once, the
    problems in flight are cancelled, and none of them is written, so a re-run retries them."""
    pulled: list[int] = []
    cancelled: list[str] = []

    async def solve(problem: Problem):
        i = int(problem.id[1:])
        if i < 3:
            return SimpleNamespace(prediction=problem.answer[0])
        if i == 5:
            await asyncio.sleep(0.01)  # after the three easy ones are written
            raise NoValueHeadError("model m has no value head")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(problem.id)
            raise
        raise AssertionError

    with pytest.raises(NoValueHeadError, match="has no value head"):
        await _run(tmp_path, _problems(1000, pulled), solve, concurrency=8)
    assert sorted(r["id"] for r in _rows(tmp_path)) == ["p0", "p1", "p2"]
    # In flight when p5 failed: the other 7 of the 8 slots (p3, p4, p6, p7 and p8-p10, which took
    # the slots of p0-p2); the rest of the dataset was never started (p11 may have been pulled
    # for the slot p5 freed, before the group's cancellation reached the loop).
    assert sorted(cancelled) == sorted(f"p{i}" for i in (3, 4, 6, 7, 8, 9, 10))
    assert len(pulled) <= 12


async def test_finished_ids_are_skipped(tmp_path: Path) -> None:
    seen: list[str] = []

    async def solve(problem: Problem):
        seen.append(problem.id)
        return SimpleNamespace(prediction=None)

    summary = await _run(tmp_path, _problems(5), solve, skip={"p0", "p3"})
    assert sorted(seen) == ["p1", "p2", "p4"]
    assert summary.skipped == 2


async def test_cancellation_keeps_every_finished_row(tmp_path: Path) -> None:
    written: list[str] = []
    two_written = asyncio.Event()

    def on_row(row: dict) -> None:
        written.append(row["id"])
        if len(written) == 2:
            two_written.set()

    async def solve(problem: Problem):
        if int(problem.id[1:]) < 2:
            return SimpleNamespace(prediction=problem.answer[0])
        await asyncio.Event().wait()  # never finishes: cancelled by the "Ctrl-C"
        raise AssertionError

    task = asyncio.create_task(_run(tmp_path, _problems(10), solve, concurrency=4, on_row=on_row))
    await two_written.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(r["id"] for r in _rows(tmp_path)) == ["p0", "p1"]


async def test_summary_totals_the_per_problem_stats(tmp_path: Path) -> None:
    stats = {"generated_tokens": 10, "engine_calls": 2, "code_runs": 1, "sandbox_wait_s": 0.5}

    async def solve(problem: Problem):
        return SimpleNamespace(prediction=None)

    def to_row(problem: Problem, result: Any, correct: bool) -> dict[str, Any]:
        return {"id": problem.id, "correct": correct, "stats": stats, "error": None}

    writer = ResultsWriter(tmp_path / "r.jsonl")
    summary = await run_problems(_problems(3), solve=solve, grade=_grade, to_row=to_row, writer=writer,
                                 skip_ids=set(), concurrency=2, config_hash="h", strategy_name="t")
    await writer.aclose()
    assert summary.totals["generated_tokens"] == 30 and summary.totals["code_runs"] == 3
    assert summary.totals["sandbox_wait_s"] == 1.5 and summary.totals["value_calls"] == 0
    assert "30 tokens in 6 generate" in summary.describe()


def test_describe_shows_engine_metrics_only_when_reported() -> None:
    summary = RunSummary()
    summary.add_stats({"generated_tokens": 12, "engine_calls": 3})
    plain = summary.describe()
    assert plain.startswith("12 tokens in 3 generate") and "engine:" not in plain
    summary.engine = EngineMetrics()  # an engine that counted nothing says nothing
    assert summary.describe() == plain
    summary.engine = EngineMetrics(steps=10, batched_rows=372, prefix_cache_queries=1000,
                                   prefix_cache_hits=812)
    assert summary.describe() == f"{plain}; engine: mean running batch 37.2, prefix-cache hit rate 81%"
    summary.engine = EngineMetrics(steps=4, batched_rows=6)  # no prefix cache (hf)
    assert summary.describe() == f"{plain}; engine: mean running batch 1.5"
    summary.engine = EngineMetrics(prefix_cache_queries=0, prefix_cache_hits=0)  # nothing queried yet
    assert summary.describe() == plain


def test_run_totals_cover_every_solve_counter() -> None:
    """The scheduler keeps its own list of the counters it sums (it must not import the search
    layer), so this pins it to `SolveStats`: a counter added there must show in the run summary."""
    assert set(_TOTALS) == {f.name for f in fields(SolveStats)} - _OWN_FIELDS
    assert len(_TOTALS) == len(set(_TOTALS))


def test_engine_metrics_derived_values_and_optional_protocol() -> None:
    m = EngineMetrics(steps=4, batched_rows=10, prefix_cache_queries=8, prefix_cache_hits=2)
    assert m.mean_running_batch == 2.5 and m.prefix_cache_hit_rate == 0.25
    assert m.to_json() == {"engine_steps": 4, "mean_running_batch": 2.5, "prefix_cache_queries": 8,
                           "prefix_cache_hits": 2, "prefix_cache_hit_rate": 0.25}
    assert EngineMetrics().mean_running_batch is None and EngineMetrics().prefix_cache_hit_rate is None
    assert engine_metrics(ScriptedEngine(lambda prompt, params: ["x"])) is None  # need not report

    class Reporting:
        def metrics(self) -> EngineMetrics:
            return m

    assert engine_metrics(Reporting()) is m
