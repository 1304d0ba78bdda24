"""The `Engine` protocol: what every strategy awaits to get text and values.

Batching is the engine's job: a strategy submits ONE request (one prompt, `n` samples) and awaits
it; an engine packs whatever requests are in flight into batches. `n` samples of one prompt are one
request so that the prompt is prefilled once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable


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

    def for_prompt(self, prompt: str) -> SamplingParams:
        """These settings as an engine samples `prompt` with them: `seed` replaced by
        `prompt_seed(seed, prompt)`. Every engine calls this, so that a seed names a reproducible
        draw *per prompt* rather than one noise stream shared by every prompt."""
        return self if self.seed is None else replace(self, seed=prompt_seed(self.seed, prompt))


def prompt_seed(seed: int, prompt: str) -> int:
    """The RNG seed that request seed `seed` samples `prompt` with.

    Why not `seed` itself: a seeded request draws its noise from its own generator (vLLM's
    per-request `torch.Generator`, ours in HFEngine), so every request with the same seed draws
    the *same* noise at each token position whatever its prompt. A search sends one seed with
    thousands of prompts — every node of every tree — and their samples came out correlated: in
    a ground-truth MCTS run of 400 questions, whether a root's i-th sample took one solution
    layout was decided by the seed for nearly every question at once (97% of them for one i, 0%
    for another; README, design notes). Hashing the prompt in keeps a seed reproducible (same
    seed and prompt, same samples, in any batch) and makes different prompts independent draws. 62 bits: vLLM seeds sample i
    of a request with `seed + i`, which must stay a signed 64-bit integer.
    """
    digest = hashlib.blake2b(f"{seed}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


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


@dataclass(frozen=True)
class EngineMetrics:
    """Engine-side counters over an engine's life, for the run summary.

    A step is one forward pass of the policy over its running batch; `batched_rows` sums the
    sequences in that batch (a request with `n` samples is `n` of them) over the `steps` that ran
    at least one. The prefix-cache counts are prompt tokens looked up in / found in the cache, None
    where the engine has no prefix cache. Plain counters, so two snapshots can be subtracted.
    """

    steps: int = 0
    batched_rows: int = 0
    prefix_cache_queries: int | None = None
    prefix_cache_hits: int | None = None

    @property
    def mean_running_batch(self) -> float | None:
        return self.batched_rows / self.steps if self.steps else None

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        if not self.prefix_cache_queries or self.prefix_cache_hits is None:
            return None
        return self.prefix_cache_hits / self.prefix_cache_queries

    def to_json(self) -> dict[str, Any]:
        return {"engine_steps": self.steps, "mean_running_batch": self.mean_running_batch,
                "prefix_cache_queries": self.prefix_cache_queries,
                "prefix_cache_hits": self.prefix_cache_hits,
                "prefix_cache_hit_rate": self.prefix_cache_hit_rate}


@runtime_checkable
class ReportsMetrics(Protocol):
    """An engine that can say how well it batched. Optional: not part of `Engine`, so scripted
    and remote engines need not pretend to know."""

    def metrics(self) -> EngineMetrics: ...


def engine_metrics(engine: object) -> EngineMetrics | None:
    """`engine.metrics()` where the engine reports them, else None."""
    return engine.metrics() if isinstance(engine, ReportsMetrics) else None
