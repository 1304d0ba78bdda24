"""`evaluate()` reads the policy engine's metrics before closing it, into the summary and `run_end`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import runtime.evaluate as evaluate_module
from runtime.config import EngineConfig, EvalConfig, RunConfig
from runtime.engine import EngineMetrics
from runtime.engines.scripted import ScriptedEngine
from runtime.problem import Problem
from runtime.tree import Tree
from strategies.base import SearchResult, SolveContext, SolveStats

METRICS = EngineMetrics(steps=10, batched_rows=25, prefix_cache_queries=200, prefix_cache_hits=150)


class _ReportingEngine(ScriptedEngine):
    def metrics(self) -> EngineMetrics:
        assert not self.closed, "metrics must be read before the engine closes"
        return METRICS


class _NoSearch:
    name = "none"

    async def solve(self, problem: Problem, ctx: SolveContext) -> SearchResult:
        return SearchResult(tree=Tree(), prediction=None, solutions=[], stats=SolveStats(engine_calls=1))


def _patch_engine(monkeypatch: pytest.MonkeyPatch, engine: ScriptedEngine) -> None:
    @asynccontextmanager
    async def open_engine(config: Any, *, seed: int = 0) -> AsyncIterator[ScriptedEngine]:
        try:
            yield engine
        finally:
            await engine.aclose()

    @asynccontextmanager
    async def open_sandbox(backend: str, limits: Any) -> AsyncIterator[object]:
        yield object()

    monkeypatch.setattr(evaluate_module, "open_engine", open_engine)
    monkeypatch.setattr(evaluate_module, "open_sandbox", open_sandbox)


def _config(tmp_path: Path) -> EvalConfig:
    return EvalConfig(engine=EngineConfig(model="scripted"),
                      run=RunConfig(dataset="gsm8k", limit=2, output=tmp_path / "r.jsonl"))


@pytest.mark.parametrize("reports", [True, False], ids=["reports", "silent"])
async def test_run_summary_and_run_end_carry_engine_metrics(reports: bool, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    engine = (_ReportingEngine if reports else ScriptedEngine)(lambda prompt, params: ["x"])
    _patch_engine(monkeypatch, engine)
    with capture_logs() as logs:
        summary = await evaluate_module.evaluate(_config(tmp_path), _NoSearch())
    assert summary.finished == 2 and engine.closed
    [end] = [e for e in logs if e["event"] == "run_end"]
    if reports:
        assert summary.engine == METRICS
        assert summary.describe().endswith("; engine: mean running batch 2.5, prefix-cache hit rate 75%")
        assert end["mean_running_batch"] == 2.5 and end["prefix_cache_hit_rate"] == 0.75
        assert end["engine_steps"] == 10
    else:
        assert summary.engine is None and "engine:" not in summary.describe()
        assert "mean_running_batch" not in end
