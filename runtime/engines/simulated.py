"""`SimulatedEngine`: scripted text, GPU-like latency. For benchmarks of the scheduler only.

    engine = SimulatedEngine(CostModel(prefill_s_per_token=2e-4, decode_step_s=0.02),
                             script=lambda prompt, params: ["<step>…</step>"], time_scale=0.01)

Text comes from a `ScriptedEngine` over `script` / `values` (its fake tokens: one per word).
Latency comes from a continuous-batching loop, like vLLM's scheduler, run as one background task:

    each step:  1) admit waiting requests (FIFO) while the running rows stay <= max_running
                   (a request with n samples is n rows; a request wider than max_running runs
                   alone); value requests are prefill-only and take no row
                2) step time = decode_step_s + decode_s_per_row × running rows
                               + prefill_s_per_token × uncached prompt tokens of the admitted
                3) every running row gets one token; a request finishes when all its rows have
                   produced their completion's length (at least 1, at most max_tokens)

Prefix cache: prompts are cut into blocks of `block_size` tokens; a block is a hit if the same
token prefix up to and including it was prefilled before (a dict of prefix hashes, as vLLM's
block hashes; never evicted). A request is prefilled once for all its n samples. The policy and
the value model have separate caches (they are separate models).

Time, in "virtual" seconds (model seconds: real seconds / time_scale):
- `time_scale == 0`: nothing sleeps; a pure discrete-event model. The clock advances by step
  times only, idle time is 0, everything is exact and deterministic (for unit tests of the cost
  model and for comparing drivers on batching alone).
- `time_scale > 0`: each step sleeps `time_scale × step time` of real time, and the clock IS the
  real clock: elapsed = (loop time now − loop time of the first request) / time_scale, read from
  the event loop's monotonic clock. `busy_s` is the modelled GPU time (the sum of step times) and
  `idle_s` = elapsed − busy_s is everything else, so busy + idle add up to the real elapsed time
  and tokens / elapsed is a real-seconds rate. Outside work (sandbox runs, grading) shows up as
  idle, and so does `stall_s`: time when requests were waiting or running but the modelled GPU
  was not computing — sleep overshoot, the loop task waking late because the event loop was
  busy with other work, the engine loop's own Python. Stall counts as idle, not busy, on
  purpose: a GPU finishes its step in the step time whatever the host does, so time spent
  waiting for a late host is idle GPU time; counting it as busy would let a CPU-starved run
  report a fully busy engine. Before this accounting the clock advanced by step times plus idle
  gaps and dropped the overshoot, overstating tokens/s on a loaded machine (by ~1.7x in one
  benchmark run).

Where the modelled GPU runs (`core`, real-time mode only):
- `"in-loop"` (default): the GPU is a task on the caller's event loop, so it starts a step only
  when that loop gets round to it — a busy loop stalls it (the conservative bound above).
- `"own-process"`: the GPU keeps its own timeline, as vLLM v1's engine core does in its own
  process: a step starts the moment the previous one ends (or, with nothing running, when the
  first waiting request arrived), admitting only requests that had arrived by then, and its
  outputs are delivered when the loop next runs. A late wake-up of the engine task therefore
  costs no GPU time; the steps it missed are run back to back on wake-up (catch-up), never ahead
  of the real clock. What is left idle is time with no request submitted — the host not keeping
  up. `stall_s` is then time requests spent in the engine beyond GPU time: outputs waiting for
  the loop to collect them.
`stats()` reports virtual seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.engine import Completion, SamplingParams
from runtime.engines.scripted import Script, ScriptedEngine, Values, fake_token_ids
from runtime.errors import EngineError, PromptTooLongError

__all__ = ["CORES", "CostModel", "Core", "SimulatedEngine"]

Core = Literal["in-loop", "own-process"]
CORES: tuple[Core, ...] = ("in-loop", "own-process")


@dataclass(frozen=True)
class CostModel:
    """Seconds of GPU time. Defaults: roughly a 7B model on one A100 (prefill ~10k tok/s,
    a decode step ~25 ms plus a little per running sequence)."""

    prefill_s_per_token: float = 1e-4
    decode_step_s: float = 0.025
    decode_s_per_row: float = 5e-5
    block_size: int = 16
    max_model_len: int = 4096

    def __post_init__(self) -> None:
        if min(self.prefill_s_per_token, self.decode_step_s, self.decode_s_per_row) < 0:
            raise ValueError("cost model times must be >= 0")
        if self.block_size < 1 or self.max_model_len < 2:
            raise ValueError("block_size must be >= 1 and max_model_len >= 2")


@dataclass(eq=False)
class _Request:
    tokens: tuple[int, ...]
    rows: list[int]  # tokens still to produce per sample; empty for a value request
    result: Any
    future: asyncio.Future[Any]
    value: bool = False
    arrival: float = 0.0


@dataclass
class _State:
    """Everything the loop task and the engine share (the task never sees the engine)."""

    cost: CostModel
    max_running: int
    time_scale: float
    own_timeline: bool  # core == "own-process" and time_scale > 0
    waiting: deque[_Request] = field(default_factory=deque)
    running: list[_Request] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    policy_blocks: set[bytes] = field(default_factory=set)
    value_blocks: set[bytes] = field(default_factory=set)
    clock: float = 0.0  # virtual seconds (time_scale == 0 only; otherwise derived from `origin`)
    origin: float | None = None  # loop time of the first request (time_scale > 0)
    started: float | None = None  # virtual time of the first request
    busy_s: float = 0.0  # modelled GPU seconds: the sum of step times
    gpu_free_at: float = 0.0  # virtual end of the last step (own timeline only)
    work_mark: float | None = None  # loop time the engine last went from no work to work (time_scale > 0)
    work_s: float = 0.0  # virtual seconds with requests waiting or running, closed spans (time_scale > 0)
    steps: int = 0
    row_steps: int = 0  # sum over steps of running rows
    max_rows_seen: int = 0
    requests: int = 0
    value_requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    closed: bool = False

    def now(self) -> float:
        """Virtual time: the event loop's monotonic clock / time_scale in real-time mode (0 before
        the first request), else the discrete-event clock."""
        if self.time_scale > 0:
            if self.origin is None:
                return 0.0
            return (asyncio.get_running_loop().time() - self.origin) / self.time_scale
        return self.clock

    def work_seconds(self) -> float:
        """Virtual seconds during which requests were waiting or running (time_scale > 0)."""
        if self.work_mark is None:
            return self.work_s
        return self.work_s + (asyncio.get_running_loop().time() - self.work_mark) / self.time_scale


def _uncached(tokens: Sequence[int], blocks: set[bytes], block_size: int) -> int:
    """Prompt tokens not covered by cached full blocks; records the prompt's blocks."""
    h = hashlib.blake2b(digest_size=16)
    hit_tokens, missed = 0, False
    for end in range(block_size, len(tokens) + 1, block_size):
        h.update(b"".join(t.to_bytes(4, "little", signed=True) for t in tokens[end - block_size : end]))
        key = h.copy().digest()
        if not missed and key in blocks:
            hit_tokens = end
        else:
            missed = True
            blocks.add(key)
    return len(tokens) - hit_tokens


async def _loop(state: _State) -> None:
    """The scheduler: one step at a time while there is work, otherwise wait for a request."""
    cost = state.cost
    while not state.closed:
        if not state.waiting and not state.running:
            if state.work_mark is not None:  # close the span with work (time_scale > 0)
                state.work_s = state.work_seconds()
                state.work_mark = None
            state.wake.clear()
            await state.wake.wait()
            continue
        start = 0.0
        if state.own_timeline:  # back to back, or from the first arrival of an idle spell
            start = state.gpu_free_at if state.running else max(state.gpu_free_at, state.waiting[0].arrival)
        # 1) admit
        rows = sum(len(r.rows) for r in state.running)
        prefill = 0
        while state.waiting:
            req = state.waiting[0]
            if req.rows and rows and rows + len(req.rows) > state.max_running:
                break
            if state.own_timeline and req.arrival > start:
                break  # submitted after this step began (FIFO: so were the rest)
            state.waiting.popleft()
            blocks = state.value_blocks if req.value else state.policy_blocks
            miss = _uncached(req.tokens, blocks, cost.block_size)
            state.cached_tokens += len(req.tokens) - miss
            prefill += miss
            rows += len(req.rows)
            state.running.append(req)
        # 2) step time
        dt = cost.prefill_s_per_token * prefill + (cost.decode_step_s + cost.decode_s_per_row * rows
                                                   if rows else 0.0)
        if state.own_timeline:
            # never deliver before the step's real end; past it already (a late wake-up): no
            # sleep, the GPU ran this step while the loop was busy
            state.gpu_free_at = start + dt
            await asyncio.sleep(max(0.0, state.gpu_free_at - state.now()) * state.time_scale)
        elif state.time_scale > 0:
            # the clock is the loop's: overshoot and late wake-ups land in idle (stall), not busy
            await asyncio.sleep(dt * state.time_scale)
        else:
            await asyncio.sleep(0)
            state.clock += dt
        state.busy_s += dt
        state.steps += 1
        state.row_steps += rows
        state.max_rows_seen = max(state.max_rows_seen, rows)
        state.generated_tokens += rows
        # 3) advance rows, finish requests
        still: list[_Request] = []
        for req in state.running:
            req.rows = [k - 1 for k in req.rows if k > 1]
            if req.rows:
                still.append(req)
            elif not req.future.done():
                state.latencies.append(state.now() - req.arrival)
                req.future.set_result(req.result)
        state.running = still


class SimulatedEngine:
    """An `Engine` with scripted text and cost-model latency; see the module docstring."""

    def __init__(
        self,
        cost: CostModel | None = None,
        *,
        script: Script,
        values: Values | None = None,
        default_value: float = 0.0,
        max_running: int = 256,
        time_scale: float = 1.0,
        core: Core = "in-loop",
    ) -> None:
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale}")
        if core not in CORES:
            raise ValueError(f"core must be one of {', '.join(CORES)}, got {core!r}")
        self.cost = cost or CostModel()
        self.script = ScriptedEngine(script, values, default_value=default_value)
        self._state = _State(self.cost, max_running, time_scale,
                             own_timeline=core == "own-process" and time_scale > 0)
        self._task: asyncio.Task[None] | None = None

    async def _submit(self, tokens: tuple[int, ...], rows: list[int], result: Any, value: bool) -> Any:
        state = self._state
        if state.closed:
            raise EngineError("simulated engine is closed")
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = loop.create_task(_loop(state), name="simulated-engine")
        if state.time_scale > 0:
            if state.origin is None:
                state.origin, state.started = loop.time(), 0.0
            if state.work_mark is None and not state.waiting and not state.running:
                state.work_mark = loop.time()  # the engine goes from no work to work
        now = state.now()
        if state.started is None:
            state.started = now
        req = _Request(tokens, rows, result, loop.create_future(), value, now)
        state.waiting.append(req)
        state.wake.set()
        try:
            return await req.future
        except asyncio.CancelledError:  # abort: drop it from the queue / the running batch
            if req in state.waiting:
                state.waiting.remove(req)
            req.rows = []
            raise

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        tokens = fake_token_ids(prompt)
        if len(tokens) >= self.cost.max_model_len:
            raise PromptTooLongError(f"prompt is {len(tokens)} tokens, the model's context is "
                                     f"{self.cost.max_model_len}")
        completions = await self.script.generate(prompt, params)
        rows = [max(1, min(len(c.token_ids), params.max_tokens)) for c in completions]
        self._state.requests += 1
        self._state.prompt_tokens += len(tokens)
        return await self._submit(tokens, rows, completions, False)  # type: ignore[no-any-return]

    async def value(self, prompts: Sequence[str]) -> list[float]:
        values = await self.script.value(prompts)
        if not prompts:
            return []
        self._state.value_requests += 1
        tokens: list[int] = []
        for p in prompts:  # one request per call: prefill of all its prompts in one step
            tokens.extend(fake_token_ids(p))
            self._state.prompt_tokens += len(fake_token_ids(p))
        return await self._submit(tuple(tokens), [], values, True)  # type: ignore[no-any-return]

    def stats(self) -> dict[str, float]:
        """Virtual-time counters: busy/idle since the first request, batch sizes, cache hits.

        busy_s + idle_s = elapsed since the first request (real seconds / time_scale when
        time_scale > 0); stall_s is the part of idle_s with work queued or running (always 0
        when time_scale == 0). See the module docstring."""
        s = self._state
        now = s.now()
        elapsed = 0.0 if s.started is None else now - s.started
        idle = max(0.0, elapsed - s.busy_s)
        stall = min(idle, max(0.0, s.work_seconds() - s.busy_s)) if s.time_scale > 0 else 0.0
        return {
            "clock_s": now,
            "busy_s": s.busy_s,
            "idle_s": idle,
            "stall_s": stall,
            "busy_fraction": s.busy_s / (s.busy_s + idle) if s.busy_s + idle > 0 else 0.0,
            "steps": s.steps,
            "requests": s.requests,
            "value_requests": s.value_requests,
            "prompt_tokens": s.prompt_tokens,
            "cached_tokens": s.cached_tokens,
            "prefix_hit_rate": s.cached_tokens / s.prompt_tokens if s.prompt_tokens else 0.0,
            "generated_tokens": s.generated_tokens,
            "mean_running": s.row_steps / s.steps if s.steps else 0.0,
            "max_running_seen": s.max_rows_seen,
            "mean_latency_s": sum(s.latencies) / len(s.latencies) if s.latencies else 0.0,
        }

    async def aclose(self) -> None:
        state = self._state
        state.closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        for req in [*state.waiting, *state.running]:
            if not req.future.done():
                req.future.set_exception(EngineError("simulated engine closed before the request was served"))
        state.waiting.clear()
        state.running = []
        await self.script.aclose()

    async def __aenter__(self) -> SimulatedEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
