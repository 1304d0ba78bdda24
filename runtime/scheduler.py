"""Run many problems concurrently: one asyncio task per problem, a bounded number in flight.

Concurrency is the scheduler's job; batching is the engine's; search is the strategy's. Problems
are pulled from the (lazy) dataset iterator only when a slot frees up, so memory is bounded by
`concurrency`, not by the dataset. Each finished problem is appended to the results file before
the next one can take its slot's place in the accounting, so a crash loses nothing finished.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from runtime.engine import EngineMetrics
from runtime.problem import Problem
from runtime.results import ResultsWriter

log = structlog.get_logger(__name__)


class SolvedLike(Protocol):
    """What the scheduler needs of a strategy's result (strategies.base.SearchResult)."""

    prediction: str | None


Solve = Callable[[Problem], Awaitable[Any]]
Grade = Callable[[tuple[str, ...], str | None], Awaitable[bool]]
ToRow = Callable[[Problem, Any, bool], dict[str, Any]]


_TOTALS = ("generated_tokens", "engine_calls", "value_calls", "code_runs", "code_timeouts",
           "generate_wait_s", "sandbox_wait_s")


@dataclass
class RunSummary:
    finished: int = 0
    correct: int = 0
    errors: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_TOTALS, 0.0))
    engine: EngineMetrics | None = None  # the policy engine's own counters, where it reports them

    def add_stats(self, stats: dict[str, Any] | None) -> None:
        for key in _TOTALS:
            self.totals[key] += float((stats or {}).get(key) or 0.0)

    def describe(self) -> str:
        t = self.totals
        text = (f"{int(t['generated_tokens'])} tokens in {int(t['engine_calls'])} generate + "
                f"{int(t['value_calls'])} value requests; {int(t['code_runs'])} code runs "
                f"({int(t['code_timeouts'])} timed out); waited {t['generate_wait_s']:.1f} s on "
                f"generation and {t['sandbox_wait_s']:.1f} s on the sandbox (summed over problems)")
        parts = []
        if self.engine is not None:
            if (batch := self.engine.mean_running_batch) is not None:
                parts.append(f"mean running batch {batch:.1f}")
            if (rate := self.engine.prefix_cache_hit_rate) is not None:
                parts.append(f"prefix-cache hit rate {rate:.0%}")
        return f"{text}; engine: {', '.join(parts)}" if parts else text


def error_row(problem: Problem, exc: BaseException, config_hash: str, strategy: str,
              wall_s: float) -> dict[str, Any]:
    return {
        "id": problem.id, "question": problem.question, "answer": problem.to_json()["answer"],
        "strategy": strategy, "config_hash": config_hash, "prediction": None, "correct": False,
        "tree": None, "stats": {"wall_s": wall_s},
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
    }


async def run_problems(
    problems: Iterable[Problem],
    *,
    solve: Solve,
    grade: Grade,
    to_row: ToRow,
    writer: ResultsWriter,
    skip_ids: set[str],
    concurrency: int,
    config_hash: str,
    strategy_name: str,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> RunSummary:
    """Solve every problem not in `skip_ids`, appending one row per problem to `writer`.

    A problem whose solve or grading raises becomes an `error` row; the run goes on — unless the
    error is fatal (`exc.fatal`, e.g. NoValueHeadError): then the problems in flight are cancelled,
    no row is written for them, and the error is raised. Cancelling the caller (Ctrl-C) cancels
    the problems in flight; every row written so far stays written.
    """
    summary = RunSummary()
    started = time.monotonic()
    slots = asyncio.Semaphore(concurrency)

    async def one(problem: Problem) -> None:
        t0 = time.monotonic()
        try:
            try:
                result = await solve(problem)
                correct = await grade(problem.answer, result.prediction)
                row = to_row(problem, result, correct)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing problem must not end the run, unless all would fail
                if getattr(exc, "fatal", False):
                    raise  # the CLI prints it once; no error row, so a re-run retries the problem
                log.warning("problem_failed", id=problem.id, error=f"{type(exc).__name__}: {exc}")
                row = error_row(problem, exc, config_hash, strategy_name, time.monotonic() - t0)
                summary.errors += 1
            await writer.write(row)
            summary.add_stats(row.get("stats"))
            summary.finished += 1
            summary.correct += bool(row.get("correct"))
            if on_row is not None:
                on_row(row)
        finally:
            slots.release()

    # A TaskGroup so that a fatal error (the only exception `one` lets out, besides a failing
    # results file) cancels every other problem at once: they would all fail the same way.
    try:
        async with asyncio.TaskGroup() as group:
            pending = iter(problems)
            while True:
                await slots.acquire()  # pull the next problem only once a slot is free
                problem = next(pending, None)
                if problem is None or problem.id in skip_ids:
                    slots.release()
                    if problem is None:
                        break
                    summary.skipped += 1
                    continue
                group.create_task(one(problem), name=f"problem-{problem.id}")
    except ExceptionGroup as failed:  # one error for the user, not a group: the fatal one first
        errors = failed.exceptions
        raise next((e for e in errors if getattr(e, "fatal", False)), errors[0]) from None
    finally:
        summary.wall_s = time.monotonic() - started
    return summary
