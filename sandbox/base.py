"""The `Sandbox` protocol: run untrusted python for one ReAct step, never in our process."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ExecResult:
    """What one code action produced.

    `stdout` is the observation text exactly as AlphaMath's tool would show it (already rounded,
    truncated and stripped). `error` is `"Type: message"` when the new code raised, else None; the
    observation for an error is `error` itself. `timed_out` is set when the wall-clock or CPU limit
    killed the run.
    """

    stdout: str
    error: str | None
    timed_out: bool
    duration_s: float

    @property
    def observation(self) -> str:
        """The text fed back to the model."""
        return self.error if self.error is not None else self.stdout


@runtime_checkable
class Sandbox(Protocol):
    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        """Replay `history` silently, then run `code` and return only its observation."""
        ...

    async def aclose(self) -> None: ...
