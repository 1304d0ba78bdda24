"""`cli.py eval` without the command line: build the engine, sandbox and grader from one
`EvalConfig`, run every problem through a strategy, and append results.

Knows the `Strategy` protocol only, never a search algorithm.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from evals.datasets import count_dataset, load_dataset
from evals.grader import Grader
from runtime.config import EvalConfig, default_sandbox_concurrency
from runtime.engine import engine_metrics
from runtime.engines import open_engine
from runtime.errors import ConfigError
from runtime.problem import Problem
from runtime.results import ExistingResults, ResultsWriter, exclusive_results, scan_results
from runtime.scheduler import RunSummary, run_problems
from sandbox import SandboxLimits, open_sandbox
from sandbox.limits import default_max_uses
from strategies.base import SearchResult, SolveContext, Strategy

log = structlog.get_logger(__name__)


def sandbox_limits(config: EvalConfig) -> SandboxLimits:
    sb = config.sandbox
    return SandboxLimits(memory_mb=sb.memory_mb, cpu_s=sb.cpu_s, tmpfs_mb=sb.tmpfs_mb,
                         max_concurrency=sb.max_concurrency or default_sandbox_concurrency(),
                         pool_size=sb.pool_size or default_sandbox_concurrency(),
                         max_uses=sb.max_uses or default_max_uses(sb.reuse_process),
                         container_memory_mb=sb.container_memory_mb,
                         pids_limit=sb.pids_limit, cpus=sb.cpus, image=sb.image,
                         reuse_process=sb.reuse_process, worker_runs=sb.worker_runs,
                         bwrap_pool=sb.bwrap_pool)


def result_row(problem: Problem, result: SearchResult, correct: bool, *, strategy: str,
               config_hash: str) -> dict[str, Any]:
    """One results line in DESIGN.md's format."""
    return {
        "id": problem.id,
        "question": problem.question,
        "answer": problem.to_json()["answer"],
        "strategy": strategy,
        "config_hash": config_hash,
        "prediction": result.prediction,
        "correct": correct,
        "solutions": [{"answer": s.answer, "node_id": s.node_id, "value": s.value}
                      for s in result.solutions],
        "tree": result.tree.to_json(),
        "stats": result.stats.to_json(),
        "meta": problem.meta,
        "error": None,
    }


@dataclass(frozen=True)
class Plan:
    """What a run will do, known before any model loads (for the progress bar and messages)."""

    output: Path
    total: int
    existing: ExistingResults  # what an earlier run left (its torn last line already cut off)
    config_hash: str  # `existing` was read against it (computing it reads the model's weights)
    stamp: tuple[int, int] | None = None  # the file's (size, mtime) when `existing` was read

    @property
    def already_done(self) -> int:
        return len(self.existing.done_ids)

    @property
    def already_correct(self) -> int:
        return self.existing.correct


def plan_run(config: EvalConfig) -> Plan:
    if config.run.output is None:
        raise ConfigError("no --output given")
    total = count_dataset(config.run.dataset, limit=config.run.limit, shard=config.run.shard_tuple,
                          fields=config.run.field_map())
    config_hash = config.results_hash()
    with exclusive_results(config.run.output):  # it may repair or rewrite the file
        existing = scan_results(config.run.output, config_hash, drop_errors=config.run.retry_errors)
        stamp = _stamp(config.run.output)
    return Plan(output=config.run.output, total=total, existing=existing, config_hash=config_hash,
                stamp=stamp)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


async def evaluate(config: EvalConfig, strategy: Strategy, *,
                   on_row: Callable[[dict[str, Any]], None] | None = None,
                   plan: Plan | None = None) -> RunSummary:
    """Run the whole evaluation; resumes from `config.run.output` if it exists. A `plan` from
    `plan_run(config)` saves reading the results file (and fingerprinting the model) again."""
    output = config.run.output
    assert output is not None
    with exclusive_results(output):  # held for the whole run: one writer per results file
        # The plan's reading stands unless another process wrote the file since.
        if plan is not None and plan.output == output and plan.stamp == _stamp(output):
            existing, config_hash = plan.existing, plan.config_hash
        else:
            config_hash = config.results_hash()
            existing = scan_results(output, config_hash, drop_errors=config.run.retry_errors)
        log.info("run_start", output=str(output), resumed=len(existing.done_ids),
                 config_hash=config_hash, config=config.model_dump(mode="json"))

        # Thousands of trees in flight allocate millions of small objects; the default GC
        # thresholds make the collector scan them all over and over (2,000 MCTS trees: 32.7 s →
        # 14.6 s).
        gc_thresholds = gc.get_threshold()
        gc.set_threshold(100_000, 50, 1000)
        try:
            return await _evaluate(config, strategy, existing.done_ids, config_hash, on_row)
        finally:
            gc.set_threshold(*gc_thresholds)


async def _evaluate(config: EvalConfig, strategy: Strategy, done_ids: set[str], config_hash: str,
                    on_row: Callable[[dict[str, Any]], None] | None) -> RunSummary:
    assert config.run.output is not None
    problems = load_dataset(config.run.dataset, limit=config.run.limit, shard=config.run.shard_tuple,
                            fields=config.run.field_map())
    async with (open_engine(config.engine, seed=config.strategy.seed) as engine,
                open_sandbox(config.sandbox.backend, sandbox_limits(config)) as sandbox):
        with Grader() as grader:
            async def grade(reference: tuple[str, ...], prediction: str | None) -> bool:
                if prediction is None:
                    return False
                return await grader.ais_equiv(reference, prediction,
                                              timeout_s=config.run.grade_timeout_s)

            ctx = SolveContext(engine=engine, sandbox=sandbox, strategy=config.strategy,
                               sandbox_config=config.sandbox, grade=grade)
            writer = ResultsWriter(config.run.output)
            try:
                summary = await run_problems(
                    problems,
                    solve=lambda p: strategy.solve(p, ctx),
                    grade=grade,
                    to_row=lambda p, r, c: result_row(p, r, c, strategy=strategy.name,
                                                      config_hash=config_hash),
                    writer=writer, skip_ids=done_ids,
                    concurrency=config.run.concurrency, config_hash=config_hash,
                    strategy_name=strategy.name, on_row=on_row)
            finally:
                await writer.aclose()
        summary.engine = engine_metrics(engine)  # while it is open: a closed engine owes no answers
    log.info("run_end", finished=summary.finished, correct=summary.correct, errors=summary.errors,
             wall_s=round(summary.wall_s, 3), **summary.totals,
             **(summary.engine.to_json() if summary.engine is not None else {}))
    return summary
