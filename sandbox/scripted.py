"""A scripted `Sandbox` for testing search logic without running code.

Observations come from a mapping (code → observation) or a callable; every call is recorded with
its history so tests can assert what a strategy replayed. Never use it to test isolation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sandbox.base import ExecResult

TIMEOUT = object()  # script value meaning "this run times out"


@dataclass
class ScriptedSandbox:
    """`script` maps code to its observation (an `"Type: message"` string reads as an error), or
    to `TIMEOUT`; a callable gets (code, history). Unknown code observes `default`."""

    script: Mapping[str, object] | Callable[[str, tuple[str, ...]], object] = field(default_factory=dict)
    default: str = ""
    latency_s: float = 0.0
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        hist = tuple(history)
        self.calls.append((code, hist))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        out = self.script(code, hist) if callable(self.script) else self.script.get(code, self.default)
        if out is TIMEOUT:
            return ExecResult(stdout="", timed_out=True, duration_s=timeout_s,
                              error="TimeoutError: Execution of the code snippet has timed out "
                                    f"for exceeding {timeout_s:g} seconds.")
        text = str(out)
        head = text.split(":", 1)[0]
        is_error = ":" in text and head.isidentifier() and (head.endswith("Error") or head.endswith("Exception"))
        return ExecResult(stdout="" if is_error else text, error=text if is_error else None,
                          timed_out=False, duration_s=0.0)

    async def aclose(self) -> None:
        pass
