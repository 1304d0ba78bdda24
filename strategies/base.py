"""The `Strategy` protocol and what a strategy gets and returns.

A strategy is plain sequential-looking async code for ONE problem. It awaits the engine and the
sandbox; it never builds batches (the engine does) and never runs many problems (the scheduler
does).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import structlog

from runtime.config import SandboxConfig, StrategyConfig
from runtime.engine import Engine
from runtime.errors import PromptTooLongError
from runtime.problem import Problem
from runtime.tree import Tree
from sandbox import Sandbox


_OWN_FIELDS = frozenset({"steps", "n_solutions", "started", "wall_s"})


@dataclass
class SolveStats:
    """Per-problem counters; `steps` is the depth of the chosen solution (the paper's "steps")."""

    steps: int = 0
    engine_calls: int = 0
    value_calls: int = 0
    generated_tokens: int = 0
    code_runs: int = 0
    code_timeouts: int = 0
    # Time this problem spent awaiting generations and code runs (they overlap across siblings,
    # so these are sums of waits, not shares of wall time).
    generate_wait_s: float = 0.0
    sandbox_wait_s: float = 0.0
    n_solutions: int = 0
    started: float = field(default_factory=time.monotonic)
    wall_s: float = 0.0

    def finish(self) -> None:
        self.wall_s = time.monotonic() - self.started

    def add_counts(self, other: SolveStats) -> None:
        """Add another search's counters and waits (a vote's runs); `steps`, `n_solutions` and
        the clock describe this search's own answer, so they are left alone."""
        for f in fields(self):
            if f.name not in _OWN_FIELDS:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "started"}


@dataclass
class Solution:
    answer: str
    node_id: int
    value: float | None = None


@dataclass
class SearchResult:
    """The whole tree, the chosen answer and the candidates it was chosen from (best first)."""

    tree: Tree
    prediction: str | None
    solutions: list[Solution]
    stats: SolveStats


TOO_LONG_VALUE = -1.0

Grade = Callable[[tuple[str, ...], str], Awaitable[bool]]


@dataclass
class SolveContext:
    """Everything a strategy may use; built once per run and shared by all problems.

    `value_engine` serves the value head when it is a separate model; by default the policy
    engine's own `value()` does. `grade` is the answer checker, for strategies that reward
    terminals with the ground truth (MCTS training-data mode).
    """

    engine: Engine
    sandbox: Sandbox
    strategy: StrategyConfig
    sandbox_config: SandboxConfig
    value_engine: Engine | None = None
    grade: Grade | None = None
    logger: Any = field(default_factory=lambda: structlog.get_logger("strategies"))

    async def values(self, prompts: Sequence[str]) -> list[float]:
        """V(state) per prompt; a state whose prompt no longer fits the context is worth −1, as
        in the original (its vLLM fork returned no value and the caller used −1)."""
        engine = self.value_engine or self.engine
        try:
            return await engine.value(prompts)
        except PromptTooLongError:
            if len(prompts) == 1:
                return [TOO_LONG_VALUE]
        return [v for prompt in prompts for v in await self.values([prompt])]


class Strategy(Protocol):
    name: str

    async def solve(self, problem: Problem, ctx: SolveContext) -> SearchResult: ...


StrategyFactory = Callable[[StrategyConfig], Strategy]
