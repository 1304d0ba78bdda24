"""A synthetic search workload for scripted engines: realistic tree shapes, no model.

The policy is a deterministic hash of the prompt into a fixed menu of steps (code steps, some of
which error; final answers; unparsable samples), the value a hash of the prompt in [-1, 1], and
the sandbox answers at once. So a tree depends only on its problem and seed, whatever order
concurrent requests finish in. Used by the scale test and `benchmarks/bench_scheduler.py`.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Sequence

from runtime.engine import Completion, SamplingParams
from runtime.engines.scripted import ScriptedEngine
from runtime.react import get_format
from sandbox.base import ExecResult

_FMT = get_format("react_sft")


def _menu() -> tuple[Completion, ...]:
    out = []
    for i in range(16):
        if i < 2:
            text = _FMT.format_step(f"So the answer is {i}.", final_answer=str(i))
        elif i == 2:
            text = "<step>\n<p>\nrambling without code or an answer"
        elif i < 5:
            text = _FMT.format_step(f"Try {i}.", code=f"y = 1/0  # {i}")
        else:
            text = _FMT.format_step(f"Compute part {i}.", code=f"x{i} = {i} * 7\nprint(x{i})")
        n_tok = 20 + 3 * i
        # priors from a few distinct mean logprobs: some exact PUCT ties, some not
        out.append(Completion(text=text, token_ids=(0,) * n_tok,
                              cumulative_logprob=-0.02 * (1 + i % 5) * n_tok))
    return tuple(out)


MENU = _menu()


def script(prompt: str, params: SamplingParams) -> list[Completion]:
    h = zlib.crc32(prompt.encode())
    return [MENU[(h >> (4 * i)) % len(MENU)] for i in range(params.n)]


def value(prompt: str) -> float:
    return (zlib.crc32(prompt.encode(), 7) % 2001) / 1000 - 1.0


def workload_engine(latency_s: float | Callable[[], float] = 0.0) -> ScriptedEngine:
    engine = ScriptedEngine(script, values=value, latency_s=latency_s)
    # Thousands of trees × ~100 requests of multi-kB prompts would otherwise be kept in `calls`
    # and swamp any memory measurement; a zero-length deque keeps nothing.
    engine.calls = deque(maxlen=0)  # type: ignore[assignment]
    return engine


class InstantSandbox:
    """Answers at once: `1/0` observes an error, anything else "7". Records nothing."""

    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        if "1/0" in code:
            return ExecResult(stdout="", error="ZeroDivisionError: division by zero",
                              timed_out=False, duration_s=0.0)
        return ExecResult(stdout="7", error=None, timed_out=False, duration_s=0.0)

    async def aclose(self) -> None:
        pass
