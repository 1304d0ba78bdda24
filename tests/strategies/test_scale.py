"""2,000 MCTS(N=40) problems in flight at once on one event loop, through the real scheduler.

The engine answers after a random (seeded) 0–2 ms, so requests of different trees finish in a
different order every run and interleave arbitrarily; each tree must still be exactly the tree of
a sequential run of that problem alone (its randomness is its own: the tie-break RNG is seeded
from (seed, problem.id), and the scripted policy is a function of the prompt).

Every tree is re-run sequentially and compared by fingerprint (a hash of every field of every
node), a sample of them also as JSON, byte for byte. The peak traced memory per in-flight tree
is measured on a smaller run (tracemalloc is slow) and printed; run with `-s` to see it.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import random
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.config import SandboxConfig, StrategyConfig, build_config, load_preset
from runtime.engines.scripted import ScriptedEngine
from runtime.engines.workload import InstantSandbox, workload_engine
from runtime.problem import Problem
from runtime.results import ResultsWriter
from runtime.scheduler import run_problems
from runtime.tree import Tree
from strategies.base import SearchResult, SolveContext
from strategies.mcts import MCTSStrategy

N_PROBLEMS = 2_000
N_SEQUENTIAL = 200


def _engine(latency_rng: random.Random | None) -> ScriptedEngine:
    return workload_engine((lambda: latency_rng.uniform(0.0, 0.002)) if latency_rng else 0.0)


def _fingerprint(tree: Tree) -> str:
    """Every field of every node, cheaper than the JSON form (asdict) for 2,000 trees."""
    rows = [(n.parent, n.depth, n.text, n.code, n.observation, n.final_answer, n.prior, n.value,
             n.visits, n.value_sum, n.terminal, n.reward, n.consecutive_errors) for n in tree.nodes]
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def _problems() -> list[Problem]:
    return [Problem(id=f"s{i}", question=f"What is {i} * 7?", answer=("1",))
            for i in range(N_PROBLEMS)]


@pytest.fixture
def roomy_gc() -> Iterator[None]:
    """Collect young objects every 100k allocations instead of 700. With ~10^6 live tree
    objects, the default thresholds make the collector rescan them so often that it costs more
    than the search itself (measured: 2,000 × MCTS(40) ≈ 3x the time). A long-running
    evaluation would want the same; see the report on runtime/evaluate.py."""
    old = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _ctx(cfg: StrategyConfig, latency_rng: random.Random | None) -> SolveContext:
    return SolveContext(engine=_engine(latency_rng), sandbox=InstantSandbox(), strategy=cfg,
                        sandbox_config=SandboxConfig())


@pytest.mark.slow
@pytest.mark.usefixtures("roomy_gc")
async def test_2000_concurrent_mcts_trees_match_sequential_runs(tmp_path: Path) -> None:
    cfg = build_config(load_preset("mcts_n40")).strategy
    assert cfg.iterations == 40
    strategy = MCTSStrategy(cfg)
    ctx = _ctx(cfg, random.Random(1234))
    problems = _problems()
    sample = {p.id for p in random.Random(5).sample(problems, N_SEQUENTIAL)}
    sample_json: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    exhausted: dict[str, bool] = {}
    in_flight = peak_in_flight = 0

    async def solve(problem: Problem) -> SearchResult:
        nonlocal in_flight, peak_in_flight
        in_flight += 1
        peak_in_flight = max(peak_in_flight, in_flight)
        try:
            return await strategy.solve(problem, ctx)
        finally:
            in_flight -= 1

    async def grade(reference: tuple[str, ...], prediction: str | None) -> bool:
        return prediction in reference

    def to_row(problem: Problem, result: SearchResult, correct: bool) -> dict[str, Any]:
        fingerprints[problem.id] = _fingerprint(result.tree)
        exhausted[problem.id] = result.tree.root.terminal
        if problem.id in sample:
            sample_json[problem.id] = json.dumps(result.tree.to_json())
        return {"id": problem.id, "prediction": result.prediction, "correct": correct,
                "stats": result.stats.to_json(), "error": None}

    writer = ResultsWriter(tmp_path / "results.jsonl")
    t0 = time.perf_counter()
    try:
        summary = await run_problems(problems, solve=solve, grade=grade, to_row=to_row,
                                     writer=writer, skip_ids=set(), concurrency=N_PROBLEMS,
                                     config_hash="h", strategy_name="mcts")
    finally:
        await writer.aclose()
    wall = time.perf_counter() - t0

    # all finished, none failed, every row written, all of them in flight at once
    assert (summary.finished, summary.errors) == (N_PROBLEMS, 0)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(p.id for p in problems)
    assert peak_in_flight == N_PROBLEMS
    # every tree ran its 40 simulations, unless nothing was left to expand
    for row in rows:
        assert row["stats"]["engine_calls"] == 40 or exhausted[row["id"]], row["id"]
    sims = sum(r["stats"]["engine_calls"] for r in rows)
    requests = sims + sum(r["stats"]["value_calls"] for r in rows)

    # concurrency changed nothing: every tree equals a sequential run of its problem alone
    # (by fingerprint; the sample byte for byte as well)
    seq_ctx = _ctx(cfg, None)
    for problem in problems:
        alone = await strategy.solve(problem, seq_ctx)
        assert _fingerprint(alone.tree) == fingerprints[problem.id], problem.id
        if problem.id in sample:
            assert json.dumps(alone.tree.to_json()) == sample_json[problem.id], problem.id
    # and the trees differ from each other (the comparison is not vacuous)
    assert len(set(fingerprints.values())) > N_PROBLEMS // 2
    print(f"\n{N_PROBLEMS} MCTS(N=40) trees in flight on one loop: {wall:.1f} s wall, "
          f"{sims} simulations, {requests} engine requests "
          f"({wall / requests * 1e6:.0f} µs per request including 0–2 ms scripted latency)")


@pytest.mark.slow
@pytest.mark.usefixtures("roomy_gc")
async def test_peak_memory_per_in_flight_tree() -> None:
    """tracemalloc slows allocation ~4x, so memory is measured on 250 trees in flight (the
    2,000-tree run under tracemalloc alone takes ~45 s here); per tree it is the same."""
    n = 250
    cfg = build_config(load_preset("mcts_n40")).strategy
    strategy = MCTSStrategy(cfg)
    ctx = _ctx(cfg, random.Random(99))
    tracemalloc.start()
    try:
        results = await asyncio.gather(*(strategy.solve(p, ctx) for p in _problems()[:n]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nodes = sum(len(r.tree.nodes) for r in results)
    per_tree = peak / n
    print(f"\npeak traced memory {peak / 2**20:.1f} MiB for {n} MCTS(N=40) trees in flight: "
          f"{per_tree / 1024:.1f} KiB per tree ({nodes / n:.0f} nodes, "
          f"{peak / nodes:.0f} B per node); 4 GiB holds {int(4 * 2**30 // per_tree):,} trees")
    assert per_tree < 1 * 2**20  # generous: a regression (e.g. prompts kept per node) shows
