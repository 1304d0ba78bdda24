"""Run untrusted python for one ReAct step, never in our process.

`open_sandbox(backend)` yields a `Sandbox`; `Sandbox.run(code, history=..., timeout_s=...)`
returns an `ExecResult` whose `observation` is exactly what AlphaMath's python tool would show.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog

from sandbox.base import ExecResult, Sandbox
from sandbox.bwrap import BwrapSandbox
from sandbox.errors import SandboxError, SandboxUnavailable
from sandbox.limits import SandboxLimits

__all__ = [
    "BACKENDS",
    "BwrapSandbox",
    "ExecResult",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxUnavailable",
    "open_sandbox",
]

BACKENDS = ("auto", "docker", "bwrap")

logger = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def open_sandbox(
    backend: str = "auto", limits: SandboxLimits | None = None
) -> AsyncIterator[Sandbox]:
    """Yield a ready, checked `Sandbox` for `backend` and close it on exit.

    "bwrap": bubblewrap. "docker": not implemented yet (raises SandboxUnavailable). "auto":
    bubblewrap for now — it will prefer Docker once that backend exists.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "docker":
        raise SandboxUnavailable("the Docker backend is not implemented yet; use --sandbox bwrap")
    if backend == "auto":
        logger.info(
            "sandbox_selected", backend="bwrap", reason="the Docker backend is not implemented yet"
        )
    sandbox = BwrapSandbox(limits or SandboxLimits())
    try:
        await sandbox.check()
        yield sandbox
    finally:
        await sandbox.aclose()
