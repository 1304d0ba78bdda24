"""Sandboxes for the tests, one per backend, shared by a whole session (a warm pool is the point).

`any_box` is parametrized over every real backend, so the attack suite runs against each. The
Docker backend is tested for real wherever an engine answers and the image exists
(`scripts/ensure_docker.sh` arranges both, `make test` runs it); elsewhere its tests skip with a
loud reason, also repeated in the terminal summary.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sandbox import BwrapSandbox, DockerSandbox, Sandbox, SandboxLimits, docker_ready
from sandbox.image import IMAGE

HAVE_BWRAP = os.path.exists("/usr/bin/bwrap")
BWRAP_MISSING = "!!! /usr/bin/bwrap MISSING: the sandbox is UNTESTED; run `apt-get install -y bubblewrap` !!!"
DOCKER_REASON = docker_ready(IMAGE)
DOCKER_MISSING = (
    f"!!! DOCKER SANDBOX UNTESTED: {DOCKER_REASON} — run `scripts/ensure_docker.sh` (as root) !!!"
)
_NO_BWRAP = pytest.mark.skipif(not HAVE_BWRAP, reason=BWRAP_MISSING)
_NO_DOCKER = pytest.mark.skipif(DOCKER_REASON is not None, reason=DOCKER_MISSING)
# One-shot bwrap, the bwrap pool (fresh child per run, and reusing its process), Docker (same two).
BACKENDS = [
    pytest.param("bwrap", marks=_NO_BWRAP),
    pytest.param("bwrap_pool", marks=_NO_BWRAP),
    pytest.param("bwrap_reuse", marks=_NO_BWRAP),
    pytest.param("docker", marks=_NO_DOCKER),
    pytest.param("docker_reuse", marks=_NO_DOCKER),
]
needs_docker = pytest.mark.skipif(DOCKER_REASON is not None, reason=DOCKER_MISSING)

# Small limits keep the bombs quick; a pool of 2 shows that replacements keep it serving.
TEST_LIMITS = SandboxLimits(pool_size=2, max_concurrency=4, memory_mb=512, container_memory_mb=768,
                            tmpfs_mb=8, cpu_s=20)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if DOCKER_REASON is not None:
        terminalreporter.write_sep("!", "DOCKER SANDBOX TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(DOCKER_MISSING, red=True, bold=True)


async def _docker(limits: SandboxLimits) -> AsyncIterator[DockerSandbox]:
    if DOCKER_REASON is not None:
        pytest.skip(DOCKER_MISSING)
    box = DockerSandbox(limits)
    await box.start()
    try:
        yield box
    finally:
        await box.aclose()


async def _bwrap(limits: SandboxLimits) -> AsyncIterator[BwrapSandbox]:
    if not HAVE_BWRAP:
        pytest.skip(BWRAP_MISSING)
    box = BwrapSandbox(limits)
    await box.start()
    try:
        yield box
    finally:
        await box.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def docker_box() -> AsyncIterator[DockerSandbox]:
    async for box in _docker(TEST_LIMITS):
        yield box


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def docker_reuse_box() -> AsyncIterator[DockerSandbox]:
    async for box in _docker(dataclasses.replace(TEST_LIMITS, reuse_process=True)):
        yield box


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bwrap_box() -> AsyncIterator[BwrapSandbox]:
    async for box in _bwrap(TEST_LIMITS):
        yield box


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bwrap_pool_box() -> AsyncIterator[BwrapSandbox]:
    async for box in _bwrap(dataclasses.replace(TEST_LIMITS, bwrap_pool=True)):
        yield box


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bwrap_reuse_box() -> AsyncIterator[BwrapSandbox]:
    async for box in _bwrap(dataclasses.replace(TEST_LIMITS, reuse_process=True)):
        yield box


@pytest.fixture(params=BACKENDS)
def any_box(request: pytest.FixtureRequest) -> Sandbox:
    """The session's sandbox of each backend in turn."""
    box: Sandbox = request.getfixturevalue(f"{request.param}_box")
    return box
