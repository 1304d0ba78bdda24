"""`ScriptedEngine`: an `Engine` whose answers are written by the test, for testing search logic.

    engine = ScriptedEngine(
        {"<question> 1+1 </question>\\n": ["<step>\\n<p>\\nFinal Answer: 2\\n</p>\\n"]},
        values={"<question> 1+1 </question>\\n": 0.5},
    )

- `script` decides the completions of a prompt: a mapping prompt -> texts, or a callable
  `(prompt, params) -> texts`. `generate` returns `params.n` completions, cycling the list when
  `n` is larger than it. A text may also be a ready `Completion`, returned as it is.
- Fake tokens: one token per whitespace-separated word (ids are stable hashes of the words) and
  `cumulative_logprob = logprob_per_token * #tokens`, so priors are deterministic.
- `values` decides `value()`: a mapping (missing prompts get `default_value`) or a callable.
- `latency_s` (a number or a zero-argument callable) is awaited with `asyncio.sleep` per call.
- Every call is recorded in `calls` (`ScriptedCall(kind, prompt, params)`), in order.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from runtime.engine import Completion, SamplingParams
from runtime.errors import EngineError

__all__ = ["ScriptedCall", "ScriptedEngine"]

Script = Callable[[str, SamplingParams], Sequence[str | Completion]] | Mapping[str, Sequence[str | Completion]]
Values = Callable[[str], float] | Mapping[str, float]


@dataclass(frozen=True)
class ScriptedCall:
    kind: str  # "generate" or "value"
    prompt: str
    params: SamplingParams | None = None


def _tail(prompt: str, width: int = 60) -> str:
    return repr(prompt if len(prompt) <= width else "…" + prompt[-width:])


def fake_token_ids(text: str) -> tuple[int, ...]:
    """One stable id per whitespace-separated word."""
    return tuple(zlib.crc32(word.encode()) % 50_000 for word in text.split())


class ScriptedEngine:
    """An `Engine` that answers from a script; see the module docstring."""

    def __init__(
        self,
        script: Script,
        values: Values | None = None,
        *,
        default_value: float = 0.0,
        latency_s: float | Callable[[], float] = 0.0,
        logprob_per_token: float = -0.1,
    ) -> None:
        self._script = script
        self._values = values
        self.default_value = default_value
        self._latency_s = latency_s
        self.logprob_per_token = logprob_per_token
        self.calls: list[ScriptedCall] = []
        self.closed = False

    async def _sleep(self) -> None:
        delay = self._latency_s() if callable(self._latency_s) else self._latency_s
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)  # still a scheduling point, like a real engine

    def _check_open(self) -> None:
        if self.closed:
            raise EngineError("scripted engine is closed")

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        self._check_open()
        self.calls.append(ScriptedCall("generate", prompt, params))
        if isinstance(self._script, Mapping):
            if prompt not in self._script:
                raise EngineError(f"scripted engine has no completions for prompt ending {_tail(prompt)}")
            texts = self._script[prompt]
        else:
            texts = self._script(prompt, params)
        if not texts:
            raise EngineError(f"script gave no completions for prompt ending {_tail(prompt)}")
        await self._sleep()
        out = []
        for i in range(params.n):
            item = texts[i % len(texts)]
            if isinstance(item, Completion):
                out.append(item)
                continue
            ids = fake_token_ids(item)
            out.append(
                Completion(
                    text=item,
                    token_ids=ids,
                    cumulative_logprob=self.logprob_per_token * len(ids),
                    finish_reason="stop",
                )
            )
        return out

    async def value(self, prompts: Sequence[str]) -> list[float]:
        self._check_open()
        for p in prompts:
            self.calls.append(ScriptedCall("value", p))
        await self._sleep()
        if self._values is None:
            return [self.default_value for _ in prompts]
        if isinstance(self._values, Mapping):
            return [float(self._values.get(p, self.default_value)) for p in prompts]
        return [float(self._values(p)) for p in prompts]

    @property
    def generate_calls(self) -> list[ScriptedCall]:
        return [c for c in self.calls if c.kind == "generate"]

    @property
    def value_calls(self) -> list[ScriptedCall]:
        return [c for c in self.calls if c.kind == "value"]

    async def aclose(self) -> None:
        self.closed = True

    async def __aenter__(self) -> ScriptedEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
