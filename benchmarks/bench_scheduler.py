"""How much Python the search runtime spends per engine request, and how many MCTS trees fit in
memory at once.

    .venv/bin/python benchmarks/bench_scheduler.py [--problems 500] [--iterations 40]

1. Overhead: N MCTS problems (the mcts_n40 settings) run concurrently on one event loop against a
   zero-latency `ScriptedEngine` and an instant sandbox, so the wall time is nothing but our
   Python (selection, prompt building, parsing, backups, task switching) plus the scripted
   engine's own bookkeeping. Reported per engine request (generate + value), next to a bare
   `await engine.generate(...)` loop on the same engine: the floor any strategy pays.
   Target: ≤ 50 µs per request, i.e. negligible next to a GPU step of tens of milliseconds.
   Times are CPU seconds of this process (`time.process_time`), so other load on the machine
   does not inflate them. Run once with Python's default GC thresholds and once with "roomy"
   ones: with ~10^5–10^6 live tree objects the default thresholds rescan them very often.
2. Memory: the same run under `tracemalloc`; the peak divided by the number of trees in flight
   is what one in-flight tree costs, and 4 GiB / that is how many trees a 4 GiB budget holds
   (the scheduler's `concurrency`).

The scripted policy is a deterministic hash of the prompt: code steps (some erroring), answers
and unparsable samples, so trees are realistic in shape (~5 children per node, depth ≤ 9).
A standalone script: nothing in the package or the tests imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc

from runtime.config import SandboxConfig, build_config, load_preset
from runtime.engine import SamplingParams
from runtime.engines.workload import InstantSandbox, workload_engine
from runtime.problem import Problem
from runtime.react import get_format
from strategies.base import SolveContext
from strategies.mcts import MCTSStrategy

FMT = get_format("react_sft")
GIB = 1024**3
# gen-0 collection every 100k allocations instead of 700 (see the module docstring)
ROOMY_GC = (100_000, 50, 1000)


async def run_mcts(n_problems: int, iterations: int) -> tuple[float, int, int]:
    """(wall seconds, engine requests, value requests) of n concurrent problems."""
    cfg = build_config(load_preset("mcts_n40")).strategy.model_copy(update={"iterations": iterations})
    ctx = SolveContext(engine=workload_engine(), sandbox=InstantSandbox(), strategy=cfg,
                       sandbox_config=SandboxConfig())
    strategy = MCTSStrategy(cfg)
    problems = [Problem(id=f"b{i}", question=f"What is {i} * 7?", answer=(str(7 * i),))
                for i in range(n_problems)]
    t0 = time.process_time()
    results = await asyncio.gather(*(strategy.solve(p, ctx) for p in problems))
    wall = time.process_time() - t0
    return (wall, sum(r.stats.engine_calls for r in results),
            sum(r.stats.value_calls for r in results))


async def bare_generate(n_calls: int) -> float:
    engine = workload_engine()
    params = SamplingParams(temperature=0.6, n=5, stop=FMT.stop)
    prompt = FMT.build_prompt("What is 6 * 7?", [])
    t0 = time.process_time()
    for _ in range(n_calls):
        await engine.generate(prompt, params)
    return time.process_time() - t0


async def memory_per_tree(n_problems: int, iterations: int) -> tuple[float, int]:
    gc.collect()
    tracemalloc.start()
    try:
        await run_mcts(n_problems, iterations)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / n_problems, peak


async def main(args: argparse.Namespace) -> None:
    requests = 0
    mcts_us: dict[str, float] = {}
    default_threshold = gc.get_threshold()
    for label, threshold in (("default gc", default_threshold), ("roomy gc", ROOMY_GC)):
        gc.set_threshold(*threshold)
        cpu = []
        for _ in range(args.repeats):
            gc.collect()
            seconds, gen, val = await run_mcts(args.problems, args.iterations)
            cpu.append(seconds)
            requests = gen + val
        mcts_us[label] = statistics.median(cpu) / requests * 1e6
    gc.set_threshold(*default_threshold)
    base_us = statistics.median([await bare_generate(args.baseline_calls)
                                 for _ in range(args.repeats)]) / args.baseline_calls * 1e6
    per_tree, peak = await memory_per_tree(args.memory_problems, args.iterations)

    rows = [
        ("MCTS problems in flight", f"{args.problems} (N={args.iterations}), {requests} requests"),
        ("bare `await engine.generate`, per call", f"{base_us:.1f} µs"),
    ]
    for label, us in mcts_us.items():
        rows.append((f"MCTS per request, {label}",
                     f"{us:.1f} µs  = {us / base_us:.1f}x bare, +{us - base_us:.1f} µs  (target ≤ 50)"))
    rows += [
        ("peak traced memory", f"{peak / 2**20:.1f} MiB for {args.memory_problems} trees in flight"),
        ("peak memory per in-flight tree", f"{per_tree / 1024:.1f} KiB"),
        ("trees in flight in 4 GiB", f"{int(4 * GIB // per_tree):,}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value   (CPU time of this process; median of {args.repeats})")
    print(f"{'-' * width}  {'-' * 50}")
    for key, val in rows:
        print(f"{key:<{width}}  {val}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=500, help="MCTS problems run concurrently")
    p.add_argument("--iterations", type=int, default=40, help="simulations per problem")
    p.add_argument("--memory-problems", type=int, default=500,
                   help="problems in flight for the memory measurement (under tracemalloc)")
    p.add_argument("--baseline-calls", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3, help="timing runs; the median is reported")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
