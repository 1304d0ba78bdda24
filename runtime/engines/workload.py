"""A synthetic search workload for scripted engines: realistic tree shapes, no model.

The policy is a deterministic hash of the prompt into a fixed menu of steps (code steps, some of
which error; final answers; unparsable samples), the value a hash of the prompt in [-1, 1], and
`InstantSandbox` answers at once. So a tree depends only on its problem and seed, whatever order
concurrent requests finish in. The code steps are trivial arithmetic by default, or sympy calls
(`script_for("sympy")`) for a benchmark that runs them in a real sandbox. Used by the scale
test, `benchmarks/bench_scheduler.py` and `benchmarks/bench_runtime.py`.
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


# What the code steps compute. "arithmetic" (`x5 = 5 * 7`) costs ~0.2 ms a run in a warm sandbox,
# so code time stays small next to generation. "sympy" is what AlphaMath's policy writes: its
# prompt names math/sympy/scipy/numpy as the packages to use and nothing is pre-imported
# (ALPHAMATH.md §1.1, §1.3), and every run replays the path's earlier blocks, so a run costs
# several ms of CPU (a fresh `solve` of a quadratic: 3.5-8 ms here).
CODE_STYLES = ("arithmetic", "sympy")


def _code(style: str, i: int) -> str:
    if style == "sympy":
        return (f"from sympy import symbols, solve\nx = symbols('x')\n"
                f"r{i} = solve(x**2 - {i + 1}*x + {i}, x)\nprint(r{i})")
    return f"x{i} = {i} * 7\nprint(x{i})"


def _menu(style: str = "arithmetic") -> tuple[Completion, ...]:
    out = []
    for i in range(16):
        if i < 2:
            text = _FMT.format_step(f"So the answer is {i}.", final_answer=str(i))
        elif i == 2:
            text = "<step>\n<p>\nrambling without code or an answer"
        elif i < 5:
            text = _FMT.format_step(f"Try {i}.", code=f"y = 1/0  # {i}")
        else:
            text = _FMT.format_step(f"Compute part {i}.", code=_code(style, i))
        n_tok = 20 + 3 * i
        # priors from a few distinct mean logprobs: some exact PUCT ties, some not
        out.append(Completion(text=text, token_ids=(0,) * n_tok,
                              cumulative_logprob=-0.02 * (1 + i % 5) * n_tok))
    return tuple(out)


MENUS = {style: _menu(style) for style in CODE_STYLES}
MENU = MENUS["arithmetic"]


def script_for(style: str) -> Callable[[str, SamplingParams], list[Completion]]:
    """The policy with code steps of `style` (one of `CODE_STYLES`); the same tree shapes and
    token counts whatever the style."""
    menu = MENUS[style]

    def script(prompt: str, params: SamplingParams) -> list[Completion]:
        h = zlib.crc32(prompt.encode())
        return [menu[(h >> (4 * i)) % len(menu)] for i in range(params.n)]

    return script


script = script_for("arithmetic")


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
