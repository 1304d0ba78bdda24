"""End-to-end runtime throughput: our scheduler against a lock-step driver, same workload.

    .venv/bin/python benchmarks/bench_runtime.py                     # default: a few min on 2 cores
    .venv/bin/python benchmarks/bench_runtime.py --problems 500 --sandbox-problems 500
                                                                     # the issue's workload (~35 min)
    .venv/bin/python benchmarks/bench_runtime.py --problems 0 --sandbox-problems 500 \
        --code arithmetic                                            # the same, trivial code steps
    .venv/bin/python benchmarks/bench_runtime.py --problems 0 --sandbox-problems 16 \
        --no-sandbox-reuse --sandbox-concurrency 4                   # one-shot bwrap, to compare

Workload: the synthetic policy of `runtime.engines.workload` (a deterministic hash of the prompt
into code steps, erroring code, answers, unparsable samples) served by `SimulatedEngine`, a
continuous-batching cost model of one GPU, searched by the unmodified SBS(3,5) and MCTS(N=40)
strategies (presets `sbs_3_5`, `mcts_n40`). Two drivers:

(a) ours: every problem is an independent asyncio task (as `runtime.scheduler.run_problems`
    runs them; here a plain gather under a semaphore of `--batch`), each awaiting the engine
    and the sandbox whenever it needs them; the engine batches whatever is in flight.
(b) lock-step: what the original AlphaMath driver does: the batch of trees advances one step at
    a time in phases — all generations of the step, then (only when every generation is back)
    all code runs, then all value calls — so the engine idles during code runs and the tail of
    each phase runs at a shrinking batch. Implemented as `LockStep`, a wrapper around the
    engine and the sandbox (the strategies are NOT rewritten): each call is parked until the
    whole batch is quiescent (every released call is back and no tree has anything runnable),
    then all parked calls of the current phase are released together. A tree that finishes
    simply issues no more calls, so it leaves the barrier; requests a tree issues concurrently
    (SBS: one generate per beam; MCTS: V(leaf) alongside its generate) are parked together
    and released in their own phase, so nothing waits on itself (no deadlock).

Two parts:

1. Validation, zero sandbox time (`InstantSandbox`, `time_scale=0`: a pure discrete-event
   engine, exact and deterministic): the ratio must be what continuous batching explains. For
   each driver the table shows the mean running batch (rows per engine step); the cost model
   then predicts decode tokens/s = rows / (decode_step_s + decode_s_per_row × rows), and the
   "predicted ratio" is that of the two drivers' mean batches. The measured ratio should be
   close to it (prefill and the batch-size distribution make the rest). With zero sandbox time
   the lock-step driver only loses the drain at the end of each generate phase (the engine's
   own continuous batching refills rows inside a phase), so both sit near the 256-row cap and
   the ratio is ~1.0x (measured 1.01-1.02x at 500 problems). The 1.5-1.8x the issue expects
   comes from the code-run phases, during which a lock-step engine has nothing to do: part 2.
2. Real sandbox (`open_sandbox("bwrap")`, every code step really executed in bubblewrap),
   `time_scale=1`: engine steps sleep their cost in real time and the wall time spent on code
   runs shows as idle engine time. Sandbox modes: by default (`--sandbox-reuse`) a warm pool of
   `--sandbox-pool` bubblewrap sandboxes, each running its requests in one reused process
   (`SandboxLimits(reuse_process=True, max_uses=REUSE_MAX_USES)`: 4,000-8,000 trivial runs/s
   on this machine; weaker isolation between runs on one sandbox, see sandbox/server.py);
   `--no-sandbox-reuse`: one-shot bubblewrap, a fresh sandbox and interpreter per run (~40
   runs/s here), at most `--sandbox-concurrency` at once. The table title names the mode.
   What the code steps compute (`--code`, same tree shapes and tokens either way): `sympy`
   (default), a sympy `solve` per code step, which is what AlphaMath's policy writes (its
   prompt names math/sympy/scipy/numpy and nothing is pre-imported) and, with the path's
   earlier blocks replayed, several ms of CPU a run; or `arithmetic`, `x5 = 5 * 7`, ~0.2 ms.
   What the lock-step driver loses is the time its engine waits through code phases, so the
   ratio follows code time over generation time: with arithmetic code the code phases are
   ~10% of its run and the ratio ~1.15x; with sympy code on this 2-core machine they take
   about as long as the generate phases, and overlapping two serial phases of equal length
   gains at most 2x. With more cores per GPU than here the code phases shrink, and the gain
   with them.
   Targets (the issue's "Throughput" item 5: >= 500 problems, both strategies, real sandbox):
   engine busy >= 95% under our scheduler, and >= 1.5x the lock-step driver's tokens/s.

Clocks. Part 1: virtual engine seconds of the discrete-event model ("wall s" = the engine's
busy + idle; "sim s" is only how long the simulation took). Part 2: real seconds. "wall s" is
the real monotonic time the driver took, tokens/s = generated tokens / that, and the engine's
busy fraction is the modelled GPU time over the real time since its first request: the engine's
real-time mode reads its clock from the event loop, so sleep overshoot and late wake-ups (the
loop busy with search or sandbox I/O) count as idle — shown separately as "stall", the share of
the engine's elapsed time when requests were queued or running but the modelled GPU was not
computing (busy + stall = the share of time the engine had work). (Before,
the engine clock advanced by step times and dropped the overshoot: the reported 2.37x ratio was
~1.37x in real seconds. There is no separate engine-clock figure any more: in part 2 it is the
real clock.)

Where the modelled GPU runs, `--engine-core` (part 2; `SimulatedEngine(core=...)`):
`own-process` (default) models vLLM v1 as it runs on a GPU: the engine core is a separate
process that steps its running batch back to back while the front end's event loop does other
work, so a busy loop delays only the delivery of outputs and the submission of new requests,
never a step already running; what is left idle is time with nothing submitted. `in-loop`
makes the GPU a task on the benchmark's own event loop, so every late wake-up of that task is
GPU time lost ("stall"): the conservative bound, and what this script measured before. On this
2-core machine, where one Python process runs 500 searches, the sandbox client and the engine
model, the two differ by the loop's lateness (a few % of busy). Both drivers get the same core.

Cost model (one 7B-8B model, one H100 80GB, bf16), constants fixed from published figures
before running, not tuned to the result:
- decode_step_s = 4.6 ms and decode_s_per_row = 30 us: NVIDIA NIM LLM benchmarking, "Performance",
  Llama-3.1-8B-Instruct on 1x H100 (NIM 1.8.0): inter-token latency 4.63 ms at concurrency 1
  and 7.57 ms at concurrency 100, i.e. 4.6 ms + (7.57-4.63)/99 ms = 0.030 ms per running row.
  https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance
  Cross-check against vLLM's own nightly (Buildkite "performance-benchmark", build 9515,
  latency_llama8B_tp1: batch 8, 32 in / 128 out, 833 ms mean => ~6.5 ms per decode step, but
  on an H200, https://buildkite.com/vllm/performance-benchmark/builds/9515): same order.
  NIM serves the 8B with TensorRT-LLM or vLLM; we found no vLLM-published per-step H100 figure
  for a 7B, so these are the closest published H100 numbers we could cite.
- prefill_s_per_token = 93 us (~10.7k prompt tok/s): SGLang `bench_latency`, Llama-3-8B on one
  H100 80GB, 128-token prefill in 11.94 ms (gist jerryzh168/caa3f3a87f403091b238f85f7b22c20e).
  Short-prompt prefill is launch-bound, so this is a conservative (slow) figure; long prompts
  prefill faster. Prefix caching (16-token blocks) removes most prompt tokens anyway.
- max_running = 256 rows: vLLM's default `max_num_seqs`.

Caveats: this machine's CPUs run the sandbox, the search and the simulated engine's event loop
(2 cores), so part 2 defaults to 16 problems and a pool of 4; on a 16-core host raise the pool
(`--sandbox-pool 16`), and expect a smaller gain with sympy code there (shorter code phases).
"ms/run" is the mean real time of one code run as the strategies see it (queueing for a
sandbox included). A standalone script: nothing in the package or the tests imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.config import SandboxConfig, compose_config  # noqa: E402
from runtime.engine import Completion, SamplingParams  # noqa: E402
from runtime.engines import workload  # noqa: E402
from runtime.engines.simulated import CORES, Core, CostModel, SimulatedEngine  # noqa: E402
from runtime.problem import Problem  # noqa: E402
from sandbox import SandboxLimits, open_sandbox  # noqa: E402
from sandbox.base import ExecResult  # noqa: E402
from sandbox.limits import REUSE_MAX_USES  # noqa: E402
from strategies import make_strategy  # noqa: E402
from strategies.base import SolveContext  # noqa: E402

T = TypeVar("T")

# See the module docstring for the sources. Fixed before the first run.
H100_7B = CostModel(prefill_s_per_token=93e-6, decode_step_s=4.6e-3, decode_s_per_row=30e-6,
                    block_size=16, max_model_len=4096)
MAX_RUNNING = 256
PRESETS = {"SBS(3,5)": "sbs_3_5", "MCTS(N=40)": "mcts_n40"}
GEN, CODE, VALUE = "generate", "code", "value"
QUIET_TICKS = 30  # loop turns with no new call before the batch counts as quiescent


class LockStep:
    """Phase barrier over a batch of trees; see the module docstring.

    Calls are parked by kind. The driver task waits until nothing released is in flight and no
    new call has arrived for `QUIET_TICKS` loop turns (every still-active tree is blocked on the
    barrier), then releases every parked call of the current phase at once and moves on:
    generate -> code -> value -> generate ... The value phase repeats while trees keep issuing
    values (MCTS scores terminal children right after V(leaf)), as the original scores all new
    nodes of a step in one value batch. A phase with nothing parked is skipped.
    """

    def __init__(self) -> None:
        self.parked: dict[str, list[tuple[Callable[[], Awaitable[Any]], asyncio.Future[Any]]]] = {
            GEN: [], CODE: [], VALUE: []}
        self.in_flight = 0
        self.drained = asyncio.Event()  # set when the last released call is back
        self.arrivals = 0
        self.phases = {GEN: 0, CODE: 0, VALUE: 0}
        self.done = False

    async def call(self, kind: str, fn: Callable[[], Awaitable[T]]) -> T:
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.parked[kind].append((fn, fut))
        self.arrivals += 1
        return await fut

    async def _run(self, fn: Callable[[], Awaitable[Any]], fut: asyncio.Future[Any]) -> None:
        try:
            fut.set_result(await fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the parked caller
            if not fut.done():
                fut.set_exception(exc)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.drained.set()

    async def _quiesce(self) -> None:
        while True:
            # Sleep until the phase's calls are back. (This used to spin on sleep(0): on 2 cores
            # the spinning loop took CPU from the sandbox during every code phase; sleeping cut
            # the lock-step driver's mean code run by 6-8% and its wall time by 1-5%.)
            while self.in_flight:
                self.drained.clear()
                await self.drained.wait()
            seen = self.arrivals
            for _ in range(QUIET_TICKS):
                await asyncio.sleep(0)
                if self.in_flight or self.arrivals != seen:
                    break
            else:
                return

    async def drive(self) -> None:
        order = (GEN, CODE, VALUE)
        phase = 0
        tasks: set[asyncio.Task[None]] = set()
        while not self.done:
            await self._quiesce()
            kind = order[phase]
            batch, self.parked[kind] = self.parked[kind], []
            if batch:
                self.phases[kind] += 1
                self.in_flight += len(batch)
                for fn, fut in batch:
                    t = asyncio.ensure_future(self._run(fn, fut))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                if kind == VALUE:
                    continue  # drain chained value calls before the next generate phase
            elif not any(self.parked.values()):
                await asyncio.sleep(0.001 if not self.done else 0)  # nothing parked: idle
            phase = (phase + 1) % 3


class LockEngine:
    def __init__(self, engine: Any, lock: LockStep) -> None:
        self.engine, self.lock = engine, lock

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        return await self.lock.call(GEN, lambda: self.engine.generate(prompt, params))

    async def value(self, prompts: Sequence[str]) -> list[float]:
        return await self.lock.call(VALUE, lambda: self.engine.value(prompts))

    async def aclose(self) -> None:
        pass


class LockSandbox:
    def __init__(self, sandbox: Any, lock: LockStep) -> None:
        self.sandbox, self.lock = sandbox, lock

    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        return await self.lock.call(CODE, lambda: self.sandbox.run(code, history=history,
                                                                   timeout_s=timeout_s))

    async def aclose(self) -> None:
        pass


class PerPromptValues:
    """Send a multi-prompt value call as one engine request per prompt, concurrently.

    `SimulatedEngine.value` hashes all prompts of one call as a single token sequence, so every
    prompt after the first misses the prefix cache; vLLM caches each sequence of a batch on its
    own. Splitting restores that (the requests still arrive together and share engine steps)."""

    def __init__(self, engine: SimulatedEngine) -> None:
        self.engine = engine

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        return await self.engine.generate(prompt, params)

    async def value(self, prompts: Sequence[str]) -> list[float]:
        out = await asyncio.gather(*(self.engine.value([p]) for p in prompts))
        return [v for (v,) in out]

    async def aclose(self) -> None:
        pass


class CountingSandbox:
    def __init__(self, sandbox: Any) -> None:
        self.sandbox, self.runs, self.busy_s = sandbox, 0, 0.0

    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        t0 = time.monotonic()
        try:
            return await self.sandbox.run(code, history=history, timeout_s=timeout_s)
        finally:
            self.runs += 1
            self.busy_s += time.monotonic() - t0

    async def aclose(self) -> None:
        pass


@dataclass
class Result:
    strategy: str
    driver: str
    problems: int
    wall_s: float
    busy: float
    tokens: int
    mean_rows: float
    real_s: float
    code_runs: int
    answered: int
    phases: str = ""
    hit: float = 0.0
    prompt_tokens: int = 0
    stall: float = 0.0  # share of the engine's elapsed time with work but no modelled compute
    code_ms: float = 0.0  # mean real time of one sandbox run (queueing included)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


async def run_one(label: str, driver: str, n: int, sandbox: Any, time_scale: float,
                  batch: int, core: Core = "in-loop", code: str = "arithmetic") -> Result:
    cfg = compose_config(PRESETS[label]).strategy
    engine = SimulatedEngine(H100_7B, script=workload.script_for(code), values=workload.value,
                             max_running=MAX_RUNNING, time_scale=time_scale, core=core)
    engine.script.calls = deque(maxlen=0)  # type: ignore[assignment]
    policy = PerPromptValues(engine)
    counting = CountingSandbox(sandbox)
    strategy = make_strategy(cfg)
    problems = [Problem(id=f"p{i}", question=f"What is {i} * 7?", answer=(str(7 * i),))
                for i in range(n)]
    t0 = time.monotonic()
    results: list[Any] = []
    phases = ""
    for start in range(0, n, batch):
        chunk = problems[start:start + batch]
        if driver == "ours":
            # ours keeps `batch` problems in flight: a slot is refilled as soon as one finishes
            ctx = SolveContext(engine=policy, sandbox=counting, strategy=cfg,
                               sandbox_config=SandboxConfig())
            slots = asyncio.Semaphore(batch)

            async def one(p: Problem, ctx: SolveContext = ctx, slots: asyncio.Semaphore = slots) -> Any:
                async with slots:
                    return await strategy.solve(p, ctx)

            results += await asyncio.gather(*(one(p) for p in problems))
            break
        lock = LockStep()
        ctx = SolveContext(engine=LockEngine(policy, lock), sandbox=LockSandbox(counting, lock),
                           strategy=cfg, sandbox_config=SandboxConfig())
        driver_task = asyncio.ensure_future(lock.drive())
        try:
            results += await asyncio.gather(*(strategy.solve(p, ctx) for p in chunk))
        finally:
            lock.done = True
            await driver_task
        phases = "/".join(str(lock.phases[k]) for k in (GEN, CODE, VALUE))
    real = time.monotonic() - t0
    s = engine.stats()
    await engine.aclose()
    elapsed = s["busy_s"] + s["idle_s"]
    # part 1 (time_scale 0): the engine's virtual seconds; part 2: real seconds of the whole run
    wall = real if time_scale > 0 else elapsed
    return Result(label, driver, n, wall, s["busy_fraction"],
                  int(s["generated_tokens"]), s["mean_running"], real, counting.runs,
                  sum(r.prediction is not None for r in results), phases, s["prefix_hit_rate"],
                  int(s["prompt_tokens"]), s["stall_s"] / elapsed if elapsed else 0.0,
                  1e3 * counting.busy_s / counting.runs if counting.runs else 0.0)


def predicted_tok_s(rows: float) -> float:
    return rows / (H100_7B.decode_step_s + H100_7B.decode_s_per_row * rows) if rows else 0.0


def table(title: str, rows: list[Result], targets: bool) -> None:
    """`targets`: part 2 (real clock): wall = real seconds, plus stall and ms/run columns; else
    part 1 (engine clock): wall = virtual engine seconds, plus how long the simulation took."""
    print(f"\n{title}")
    extra = f"{'stall':>6} {'ms/run':>7}" if targets else f"{'sim s':>7}"
    head = (f"{'strategy':<11} {'driver':<9} {'probs':>5} {'wall s':>8} {'busy':>6} {'tokens':>9} "
            f"{'tok/s':>8} {'rows/step':>9} {'code runs':>9} {extra} {'prompt tok':>10} {'hit':>5}"
            "  phases g/c/v")
    print(head)
    print("-" * len(head))
    for r in rows:
        more = f"{r.stall:>6.1%} {r.code_ms:>7.1f}" if targets else f"{r.real_s:>7.1f}"
        print(f"{r.strategy:<11} {r.driver:<9} {r.problems:>5} {r.wall_s:>8.2f} {r.busy:>6.1%} "
              f"{r.tokens:>9} {r.tok_s:>8.0f} {r.mean_rows:>9.1f} {r.code_runs:>9} {more}"
              f" {r.prompt_tokens:>10} {r.hit:>5.0%}  {r.phases}")
    print()
    for label in PRESETS:
        ours = next((r for r in rows if r.strategy == label and r.driver == "ours"), None)
        lock = next((r for r in rows if r.strategy == label and r.driver == "lock-step"), None)
        if ours is None or lock is None:
            continue
        ratio = ours.tok_s / lock.tok_s if lock.tok_s else float("inf")
        pred = predicted_tok_s(ours.mean_rows) / predicted_tok_s(lock.mean_rows)
        line = (f"{label:<11} ours/lock-step tokens/s = {ratio:.2f}x   (batch-size model predicts "
                f"{pred:.2f}x from the mean running rows; same tokens: "
                f"{'yes' if ours.tokens == lock.tokens else f'no, {ours.tokens} vs {lock.tokens}'})")
        if targets and lock.busy and ours.busy:
            # tokens/s = busy x tokens per busy second: the gain from overlap, times the price
            # of running the GPU with smaller batches while trees wait on code
            line += (f"\n{'':<11} = engine busy {ours.busy / lock.busy:.2f}x (overlap) x tokens "
                     f"per busy second {ours.tok_s / ours.busy / (lock.tok_s / lock.busy):.2f}x "
                     f"(batching)")
        if targets:
            line += (f"\n{'':<11} targets: busy {ours.busy:.1%} >= 95% "
                     f"{'HOLDS' if ours.busy >= 0.95 else 'FAILS'};  ratio {ratio:.2f}x >= 1.5x "
                     f"{'HOLDS' if ratio >= 1.5 else 'FAILS'}")
        print(line)


async def main(args: argparse.Namespace) -> None:
    labels = [k for k in PRESETS if PRESETS[k] in args.strategies.split(",")]
    c = H100_7B
    print(f"cost model (H100, 7-8B, sourced in the docstring): prefill {c.prefill_s_per_token * 1e6:.0f} "
          f"us/token, decode step {c.decode_step_s * 1e3:.1f} ms + {c.decode_s_per_row * 1e6:.0f} us/row, "
          f"max_running {MAX_RUNNING}, prefix blocks {c.block_size}")
    if args.problems:
        rows = []
        for label in labels:
            for driver in ("ours", "lock-step"):
                rows.append(await run_one(label, driver, args.problems, workload.InstantSandbox(),
                                          0.0, args.batch or args.problems))
        table("1) validation: zero sandbox time, pure discrete-event engine (time_scale=0)",
              rows, targets=False)
    if args.sandbox_problems:
        if args.sandbox_reuse:
            limits = SandboxLimits(reuse_process=True, max_uses=args.sandbox_max_uses,
                                   pool_size=args.sandbox_pool)
            mode = (f"warm pool of {args.sandbox_pool}, reused process, max_uses "
                    f"{args.sandbox_max_uses:,}")
        else:
            limits = SandboxLimits(max_concurrency=args.sandbox_concurrency)
            mode = f"one-shot, {args.sandbox_concurrency} concurrent runs"
        print(f"part 2 sandbox: bwrap, {mode}", flush=True)
        async with open_sandbox("bwrap", limits) as box:
            rows = []
            for label in labels:
                for driver in ("ours", "lock-step"):
                    rows.append(await run_one(label, driver, args.sandbox_problems, box, 1.0,
                                              args.batch or args.sandbox_problems, args.engine_core,
                                              args.code))
                    print(f"  done: {label} {driver} ({rows[-1].real_s:.0f} s)", flush=True)
        table(f"2) real bubblewrap sandbox ({mode}), {args.code} code steps, time_scale=1, "
              f"engine core {args.engine_core}; wall, busy and tok/s on real seconds", rows,
              targets=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=500,
                   help="problems for part 1 (zero sandbox time); 0 skips it")
    p.add_argument("--sandbox-problems", type=int, default=16,
                   help="problems for part 2 (real bwrap sandbox); 0 skips it")
    p.add_argument("--sandbox-reuse", action=argparse.BooleanOptionalAction, default=True,
                   help="part 2: a warm pool of bwrap sandboxes reusing one process each "
                        "(default); --no-sandbox-reuse: one-shot bwrap, a fresh sandbox per run")
    p.add_argument("--sandbox-pool", type=int, default=4,
                   help="warm sandboxes in the pool (reuse mode; this machine: 2 cores)")
    p.add_argument("--sandbox-max-uses", type=int, default=REUSE_MAX_USES,
                   help="runs before a pooled sandbox is replaced (reuse mode; the runtime's default)")
    p.add_argument("--sandbox-concurrency", type=int, default=4,
                   help="one-shot bubblewrap processes alive at once (--no-sandbox-reuse)")
    p.add_argument("--batch", type=int, default=0,
                   help="trees in flight (ours) / per lock-step batch; 0 = all problems at once")
    p.add_argument("--strategies", default="sbs_3_5,mcts_n40")
    p.add_argument("--code", choices=workload.CODE_STYLES, default="sympy",
                   help="part 2: what the code steps compute: sympy calls, as AlphaMath's policy "
                        "writes them (default), or trivial arithmetic (~0.2 ms a run)")
    p.add_argument("--engine-core", choices=CORES, default="own-process",
                   help="part 2: where the modelled GPU runs: its own timeline, as vLLM v1's "
                        "engine core process (default), or a task on this event loop, stalled "
                        "whenever the loop is late (the conservative bound)")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
