"""Run untrusted python for one ReAct step, never in our process.

`open_sandbox(backend)` yields a `Sandbox`; `Sandbox.run(code, history=..., timeout_s=...)`
returns an `ExecResult` whose `observation` is exactly what AlphaMath's python tool would show.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog

from sandbox.base import ExecResult, Sandbox
from sandbox.bwrap import BwrapSandbox
from sandbox.docker import DockerSandbox, clean_containers, docker_ready
from sandbox.errors import SandboxError, SandboxUnavailable
from sandbox.image import IMAGE, build_image
from sandbox.limits import SandboxLimits

__all__ = [
    "BACKENDS",
    "IMAGE",
    "BwrapSandbox",
    "DockerSandbox",
    "ExecResult",
    "Sandbox",
    "SandboxError",
    "SandboxLimits",
    "SandboxUnavailable",
    "build_image",
    "clean_containers",
    "docker_ready",
    "open_sandbox",
]

BACKENDS = ("auto", "docker", "bwrap")

logger = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def open_sandbox(
    backend: str = "auto", limits: SandboxLimits | None = None
) -> AsyncIterator[Sandbox]:
    """Yield a ready, checked `Sandbox` for `backend` and close it on exit.

    "docker": the warm container pool; raises SandboxUnavailable naming the exact command when
    no engine answers or the image is missing. "bwrap": bubblewrap (one-shot, or a warm pool with
    `limits.bwrap_pool` / `limits.reuse_process`). "auto": docker when an
    engine answers and the image exists, else bubblewrap; logs which and why.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    limits = limits or SandboxLimits()
    if backend == "auto":
        reason = await asyncio.to_thread(docker_ready, limits.image)
        backend = "docker" if reason is None else "bwrap"
        logger.info("sandbox_selected", backend=backend,
                    reason="a Docker engine answers and the image exists" if reason is None else reason)
    sandbox: DockerSandbox | BwrapSandbox = (
        DockerSandbox(limits) if backend == "docker" else BwrapSandbox(limits))
    try:
        await sandbox.start()
        await sandbox.check()
        yield sandbox
    finally:
        await sandbox.aclose()
