"""Sandboxes for the tests, one per backend, shared by a whole session (a warm pool is the point).

`any_box` is parametrized over every real backend, so the attack suite runs against each. The
Docker backend is tested for real wherever an engine answers and the image exists
(`scripts/ensure_docker.sh` arranges both, `make test` runs it); elsewhere its tests skip with a
loud reason, also repeated in the terminal summary.
"""

from __future__ import annotations

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
BACKENDS = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not HAVE_BWRAP, reason=BWRAP_MISSING)),
    pytest.param("docker", marks=pytest.mark.skipif(DOCKER_REASON is not None, reason=DOCKER_MISSING)),
]
needs_docker = pytest.mark.skipif(DOCKER_REASON is not None, reason=DOCKER_MISSING)

# Small limits keep the bombs quick; a pool of 2 shows that replacements keep it serving.
TEST_LIMITS = SandboxLimits(pool_size=2, max_concurrency=4, memory_mb=512, container_memory_mb=768,
                            tmpfs_mb=8, cpu_s=20)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if DOCKER_REASON is not None:
        terminalreporter.write_sep("!", "DOCKER SANDBOX TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(DOCKER_MISSING, red=True, bold=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def docker_box() -> AsyncIterator[DockerSandbox]:
    if DOCKER_REASON is not None:
        pytest.skip(DOCKER_MISSING)
    box = DockerSandbox(TEST_LIMITS)
    await box.start()
    try:
        yield box
    finally:
        await box.aclose()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def bwrap_box() -> AsyncIterator[BwrapSandbox]:
    if not HAVE_BWRAP:
        pytest.skip(BWRAP_MISSING)
    box = BwrapSandbox(TEST_LIMITS)
    try:
        yield box
    finally:
        await box.aclose()


@pytest.fixture(params=BACKENDS)
def any_box(request: pytest.FixtureRequest) -> Sandbox:
    """The session's sandbox of each backend in turn."""
    box: Sandbox = request.getfixturevalue(f"{request.param}_box")
    return box
