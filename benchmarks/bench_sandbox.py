"""Sandbox throughput: executions/s and p50/p99 latency with 8 concurrent callers.

    .venv/bin/python benchmarks/bench_sandbox.py [--callers 8] [--seconds 5] [--pool-size N] [--max-uses N]
        [--worker-runs N]
        [--backends docker,docker-reuse,bwrap,bwrap-pool,bwrap-reuse,unsandboxed]
        [--workloads trivial,sympy solve,replay 3 blocks]

Workloads: a trivial snippet, a sympy `solve`, and a step that replays 3 earlier code blocks.
Backends: the Docker warm pool (a fresh forked child per run, or `-reuse`: the server's process
reused, `SandboxLimits.reuse_process`), bubblewrap (a fresh sandbox per run), the bubblewrap
pool (`bwrap_pool`; fresh child per run, or `-reuse`), and an UNSANDBOXED executor that forks a
fresh process pool per batch of `callers` runs, the way AlphaMath does.
Each cell runs for about `--seconds` (after a warm-up) and reports a markdown row. Every caller
of a sandbox backend is a closed loop (its next run as soon as its last one returns) for the
whole cell; the original's pattern runs in batches of `callers`, as it does.

Steady state, honestly: a pool's clock starts only once the whole pool is up (`wait_ready()`,
before each cell), so no cell measures runs competing with the first pool's start-up (each
sandbox imports sympy and numpy: ~1 CPU-s). Planned replacements are NOT kept out: a worker is
replaced after `max_uses` runs (by default the runtime's: 100, or REUSE_MAX_USES with reuse,
where a worker process also hands over to a fresh fork every `worker_runs` runs, inside the
sandbox and not counted as "new"; the first pool's budgets are staggered, so they come at the
steady-state rate, runs/s ÷ max_uses, from the first cell on), and each is a sandbox start that
production pays at the same rate. Column "new" counts the sandboxes that came up inside the
measured window; run with a `--max-uses` larger than a cell's run count to see serving alone.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox import BwrapSandbox, DockerSandbox, SandboxLimits  # noqa: E402
from sandbox.limits import REUSE_MAX_USES, default_max_uses  # noqa: E402
from sandbox.executor import execute  # noqa: E402

WORKLOADS: dict[str, tuple[list[str], str]] = {
    "trivial": ([], "print(1 + 1)"),
    "sympy solve": ([], "import sympy as sp\nx = sp.Symbol('x')\nsp.solve(x**2 - 5*x + 6, x)"),
    "replay 3 blocks": (
        ["import sympy as sp\nx = sp.Symbol('x')", "f = x**3 - 6*x**2 + 11*x - 6\nprint(f)",
         "roots = sp.solve(f, x)\nprint(roots)"],
        "print(sum(roots))",
    ),
}
READY_TIMEOUT_S = 300.0  # a pool of sandboxes starting on a loaded machine
BACKENDS: dict[str, tuple[type[DockerSandbox] | type[BwrapSandbox], dict[str, Any]]] = {
    "docker": (DockerSandbox, {}),
    "docker-reuse": (DockerSandbox, {"reuse_process": True}),
    "bwrap": (BwrapSandbox, {}),
    "bwrap-pool": (BwrapSandbox, {"bwrap_pool": True}),
    "bwrap-reuse": (BwrapSandbox, {"reuse_process": True}),
    "unsandboxed": (BwrapSandbox, {}),  # no sandbox object: see unsandboxed_submitter
}


def _unsandboxed_call(history: list[str], code: str) -> tuple[str, str | None]:
    return execute(history, code)


Submit = Callable[[list[str], str, int, float], Awaitable[list[float]]]


async def measure(submit: Submit, history: list[str],
                  code: str, callers: int, seconds: float,
                  box: DockerSandbox | BwrapSandbox | None) -> tuple[float, float, float, int, int]:
    """(runs/s, p50 ms, p99 ms, runs, sandboxes that came up in the window) of one cell."""
    if box is not None:  # not while a start-up (the first pool's, or a replacement's) runs
        await asyncio.wait_for(box.wait_ready(), READY_TIMEOUT_S)
    await submit(history, code, callers, 0.0)  # warm-up: one run per caller
    new_before = box.workers_started if box is not None else 0
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        latencies += await submit(history, code, callers, deadline)
    elapsed = time.perf_counter() - started
    new = (box.workers_started if box is not None else 0) - new_before
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / elapsed, statistics.median(latencies) * 1e3, p99 * 1e3, len(latencies), new


def sandbox_submitter(box: DockerSandbox | BwrapSandbox) -> Submit:
    """`n` callers, each a closed loop: its next run as soon as its last returns, until the
    deadline (at least one run each). No barrier between callers: the pool always has `n`
    runs in flight (batches of runs with a gather between them idled it at each batch's end)."""

    async def one_caller(history: list[str], code: str, deadline: float) -> list[float]:
        out = []
        while True:
            t = time.perf_counter()
            result = await box.run(code, history=history, timeout_s=60)
            if result.error is not None:
                raise RuntimeError(result.error)
            done = time.perf_counter()
            out.append(done - t)
            if done >= deadline:
                return out

    async def submit(history: list[str], code: str, n: int, deadline: float) -> list[float]:
        rounds = await asyncio.gather(*(one_caller(history, code, deadline) for _ in range(n)))
        return [x for r in rounds for x in r]

    return submit


def unsandboxed_submitter() -> Submit:
    """A fresh process pool per batch (AlphaMath's `ProcessPool` per step batch): one batch of
    `n` runs per call, whatever the deadline."""

    async def submit(history: list[str], code: str, n: int, deadline: float) -> list[float]:
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        with ProcessPoolExecutor(n) as pool:
            futures = [loop.run_in_executor(pool, _unsandboxed_call, history, code) for _ in range(n)]
            await asyncio.gather(*futures)
        # Every call of the batch completes with the batch.
        return [time.perf_counter() - t] * n

    return submit


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="a subset of: %(default)s")
    parser.add_argument("--pool-size", type=int, default=None, help="default: SandboxLimits'")
    parser.add_argument("--max-uses", type=int, default=None,
                        help="default: the runtime's (100; %d with reuse)" % REUSE_MAX_USES)
    parser.add_argument("--worker-runs", type=int, default=None,
                        help="reuse: runs per worker process (default: SandboxLimits')")
    args = parser.parse_args()
    overrides = {k: v for k, v in (("pool_size", args.pool_size), ("max_uses", args.max_uses),
                                   ("worker_runs", args.worker_runs)) if v}
    limits = SandboxLimits(**overrides)
    print(f"{args.callers} concurrent callers, ~{args.seconds:g} s per cell, pool_size={limits.pool_size}, "
          f"max_uses={args.max_uses or f'{limits.max_uses} ({REUSE_MAX_USES} with reuse)'}, "
          f"worker_runs={limits.worker_runs}")
    print("| backend | workload | exec/s | p50 ms | p99 ms | runs | new |")
    print("|---|---|---:|---:|---:|---:|---:|")
    workloads = args.workloads.split(",")
    for name in workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; allowed: {', '.join(WORKLOADS)}")
    rates: dict[tuple[str, str], float] = {}
    for backend in args.backends.split(","):
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)}")
        box: DockerSandbox | BwrapSandbox | None = None
        if backend == "unsandboxed":
            submit = unsandboxed_submitter()
        else:
            kind, options = BACKENDS[backend]
            if not args.max_uses:  # as `cli.py eval` does
                options = dict(options, max_uses=default_max_uses(options.get("reuse_process", False)))
            box = kind(dataclasses.replace(limits, **options))
            await box.start()
            submit = sandbox_submitter(box)
        try:
            for name in workloads:
                history, code = WORKLOADS[name]
                rate, p50, p99, n, new = await measure(submit, history, code, args.callers, args.seconds, box)
                print(f"| {backend} | {name} | {rate:,.0f} | {p50:.1f} | {p99:.1f} | {n} | {new} |", flush=True)
                rates[backend, name] = rate
        finally:
            if box is not None:
                await box.aclose()
    # Side by side with the original's pattern, measured in this same run.
    for (backend, name), rate in rates.items():
        base = rates.get(("unsandboxed", name))
        if backend != "unsandboxed" and base:
            print(f"{backend} / unsandboxed fresh pool per batch, {name}: {rate / base:.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
