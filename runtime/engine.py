"""The `Engine` protocol: what every strategy awaits to get text and values.

Batching is the engine's job: a strategy submits ONE request (one prompt, `n` samples) and awaits
it; an engine packs whatever requests are in flight into batches. `n` samples of one prompt are one
request so that the prompt is prefilled once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request. `temperature == 0` means greedy (argmax) decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 2000
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@dataclass(frozen=True)
class Completion:
    """One sample. `text` excludes the stop string that ended it (as vLLM does by default).

    `cumulative_logprob` is the sum of the sampled tokens' log-probabilities under the model's
    unmodified distribution; MCTS priors are `exp(cumulative_logprob / len(token_ids))`.
    `finish_reason` is "stop" (a stop string or EOS) or "length" (max_tokens reached).
    """

    text: str
    token_ids: tuple[int, ...] = ()
    cumulative_logprob: float | None = None
    finish_reason: str = "stop"
    stop_reason: str | None = field(default=None)  # the stop string that matched, if any


@runtime_checkable
class Engine(Protocol):
    """A policy (and optionally value) model behind one async interface."""

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        """Return `params.n` samples continuing `prompt`."""
        ...

    async def value(self, prompts: Sequence[str]) -> list[float]:
        """Return the value head's estimate in [-1, 1] for each prompt (read at its last token)."""
        ...

    async def aclose(self) -> None: ...
