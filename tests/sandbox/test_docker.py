"""The Docker backend: hardening, lifecycle, no state leaks, selection. Needs a running engine
and the image (`scripts/ensure_docker.sh`); otherwise these skip loudly (conftest)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

import sandbox
from sandbox import DockerSandbox, SandboxLimits, SandboxUnavailable, clean_containers, open_sandbox
from sandbox.docker import LABEL, OWNER_LABEL
from sandbox.image import IMAGE
from tests.loop_ticker import LoopTicker
from tests.sandbox.conftest import TEST_LIMITS, needs_docker

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def one_box() -> AsyncIterator[DockerSandbox]:
    """A pool of ONE container, so consecutive runs provably share it."""
    box = DockerSandbox(SandboxLimits(pool_size=1, max_uses=5, tmpfs_mb=8))
    await box.start()
    try:
        yield box
    finally:
        await box.aclose()


def _container_ids(box: DockerSandbox) -> set[str]:
    return {w.handle.id for w in box._workers}


async def _observe(box: DockerSandbox, code: str, timeout_s: float = 20) -> str:
    return (await box.run(code, timeout_s=timeout_s)).observation


# --- no Docker needed -------------------------------------------------------------------------


async def test_limits_docker_fields() -> None:
    limits = SandboxLimits()
    assert limits.max_uses == 100 and limits.pool_size >= 2 and limits.image == IMAGE
    for field, value in [("pool_size", 0), ("max_uses", 0), ("pids_limit", 2), ("cpus", 0),
                         ("cpus", True), ("image", ""), ("container_memory_mb", 16)]:
        with pytest.raises(ValueError, match=field):
            SandboxLimits(**{field: value})  # type: ignore[arg-type]


async def test_missing_engine_names_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxUnavailable, match=r"dockerd"):
        async with open_sandbox("docker"):
            pass


@needs_docker
async def test_missing_image_names_the_command() -> None:
    with pytest.raises(SandboxUnavailable, match=r"python cli\.py sandbox build"):
        async with open_sandbox("docker", SandboxLimits(image="alphamath-sandbox:nonexistent")):
            pass


async def test_auto_falls_back_to_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    async with open_sandbox("auto") as box:
        assert isinstance(box, sandbox.BwrapSandbox)


# --- real containers --------------------------------------------------------------------------


@needs_docker
async def test_open_sandbox_docker_and_auto() -> None:
    for backend in ("docker", "auto"):
        async with open_sandbox(backend, TEST_LIMITS) as box:
            assert isinstance(box, DockerSandbox)
            result = await box.run("```python\nimport sympy\nx = sympy.Symbol('x')\nsympy.solve(x**2 - 4, x)\n```",
                                   history=["y = 1"], timeout_s=30)
            assert result.observation == "[-2, 2]"
        with pytest.raises(RuntimeError, match="after aclose"):
            await box.run("1", timeout_s=5)


@needs_docker
async def test_container_is_hardened(docker_box: DockerSandbox) -> None:
    worker = next(iter(docker_box._workers))
    attrs = await asyncio.to_thread(lambda: (worker.handle.reload(), worker.handle.attrs)[1])
    host = attrs["HostConfig"]
    limits = docker_box.limits
    assert host["NetworkMode"] == "none" and host["IpcMode"] == "none"
    assert host["ReadonlyRootfs"] is True and host["Init"] is True
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == limits.container_memory_mb << 20
    assert host["PidsLimit"] == limits.pids_limit and host["NanoCpus"] == int(limits.cpus * 1e9)
    assert f"uid={limits.uid}" in host["Tmpfs"]["/tmp"] and "size=8m" in host["Tmpfs"]["/tmp"]
    assert [m["RW"] for m in attrs["Mounts"]] == [False]  # only the socket directory, read-only
    assert attrs["Config"]["User"] == f"{limits.uid}:{limits.gid}"
    assert attrs["Config"]["Labels"][LABEL] == "1"
    inside = json.loads(await _observe(
        docker_box, "import os, json\nprint(json.dumps([os.getuid(), os.getgid(), sorted(os.environ)]))"))
    assert inside[:2] == [limits.uid, limits.gid]
    assert set(inside[2]) <= {"PATH", "HOME", "LANG", "HOSTNAME", "OPENBLAS_NUM_THREADS",
                              "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
    caps = await _observe(docker_box, "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0])")
    assert caps.endswith("0000000000000000"), caps


@needs_docker
async def test_no_state_leaks_between_runs(one_box: DockerSandbox) -> None:
    (before,) = _container_ids(one_box)
    plant = (
        "import os, subprocess, sys, builtins\n"
        "open('/tmp/leak', 'w').write('x')\n"
        "os.makedirs('/tmp/d/e'); os.chmod('/tmp/d', 0)\n"
        "leak_global = 1\n"
        "builtins.LEAK = 1\n"
        "sys.modules['json'] = None\n"
        "subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
        "print('planted')"
    )
    assert await _observe(one_box, plant) == "planted"
    check = (
        "import os, sys, builtins\n"
        "print(sorted(os.listdir('/tmp')), hasattr(builtins, 'LEAK'), sys.modules.get('json') is None,"
        " 'leak_global' in globals(), len([p for p in os.listdir('/proc') if p.isdigit()]))"
    )
    # Same container (pool of one), nothing left: /tmp empty, no builtins/module patch, only
    # init + server + this run's child alive.
    assert await _observe(one_box, check) == "[] False False False 3"
    assert _container_ids(one_box) == {before}


@needs_docker
async def test_max_uses_replaces_the_container(one_box: DockerSandbox) -> None:
    (first,) = _container_ids(one_box)
    for _ in range(one_box.limits.max_uses):
        assert await _observe(one_box, "print(1)") == "1"
    assert await _observe(one_box, "print(2)") == "2"  # served by the replacement
    assert _container_ids(one_box) - {first}
    assert first not in _container_ids(one_box)


@needs_docker
async def test_successor_starts_before_the_container_retires(one_box: DockerSandbox) -> None:
    (first,) = _container_ids(one_box)
    for _ in range(one_box.limits.max_uses - 1):  # the last quarter of the budget starts
        assert await _observe(one_box, "print(1)") == "1"
    deadline = time.monotonic() + 120
    while len(_container_ids(one_box)) < 2:  # the successor joins while `first` still serves
        assert time.monotonic() < deadline, "the successor never came up"
        await asyncio.sleep(0.05)
    assert first in _container_ids(one_box)
    assert await _observe(one_box, "print(5)") == "5"  # the last run of `first` (FIFO)
    (successor,) = _container_ids(one_box)
    assert successor != first
    assert await _observe(one_box, "print(6)") == "6"
    assert _container_ids(one_box) == {successor}  # no second replacement was started


@needs_docker
async def test_wait_ready_waits_for_every_container() -> None:
    box = DockerSandbox(SandboxLimits(pool_size=2, tmpfs_mb=8))
    try:
        with pytest.raises(RuntimeError, match="before start"):
            await box.wait_ready()
        await box.start()
        await asyncio.wait_for(box.wait_ready(), 120)
        assert len(_container_ids(box)) == 2 and box.workers_started == 2
        assert await _observe(box, "print(1)") == "1"
    finally:
        await box.aclose()


@needs_docker
async def test_workers_started_counts_replacements(one_box: DockerSandbox) -> None:
    started = one_box.workers_started
    for _ in range(one_box.limits.max_uses):
        assert await _observe(one_box, "print(1)") == "1"
    await asyncio.wait_for(one_box.wait_ready(), 120)
    assert one_box.workers_started == started + 1  # the successor of the retired container


@needs_docker
async def test_each_run_is_a_fresh_limited_child(one_box: DockerSandbox) -> None:
    code = ("import os, resource\nprint(os.getpid(), os.getppid(), resource.getrlimit(resource.RLIMIT_AS)[0],"
            " resource.getrlimit(resource.RLIMIT_CPU)[0])")
    first = (await _observe(one_box, code)).split()
    second = (await _observe(one_box, code)).split()
    assert first[0] != second[0] and first[1] == second[1]  # a new child of the same server
    limits = one_box.limits
    assert first[2:] == second[2:] == [str(limits.memory_mb << 20), str(limits.cpu_s)]


@needs_docker
async def test_timeout_kills_and_replaces_the_container(one_box: DockerSandbox) -> None:
    import docker

    (first,) = _container_ids(one_box)
    result = await one_box.run("import time\ntime.sleep(100)", timeout_s=1)
    assert result.timed_out
    assert await _observe(one_box, "print(3)") == "3"
    assert first not in _container_ids(one_box)
    client = docker.from_env()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                await asyncio.to_thread(client.containers.get, first)
            except docker.errors.NotFound:
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the timed-out container is still there")
    finally:
        client.close()


@needs_docker
async def test_cancellation_retires_the_container(one_box: DockerSandbox) -> None:
    (first,) = _container_ids(one_box)
    task = asyncio.create_task(one_box.run("import time\ntime.sleep(100)", timeout_s=60))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _observe(one_box, "print(4)") == "4"
    assert first not in _container_ids(one_box)


@needs_docker
async def test_startup_sweeps_leftovers_and_clean_removes_them() -> None:
    import docker

    client = docker.from_env()
    try:
        dead = await asyncio.to_thread(
            client.containers.run, IMAGE, ["sleep", "1000"], detach=True, network_mode="none",
            labels={LABEL: "1", OWNER_LABEL: f"{__import__('socket').gethostname()}:999999999"})
        box = DockerSandbox(SandboxLimits(pool_size=1))
        await box.start()
        try:
            with pytest.raises(docker.errors.NotFound):
                await asyncio.to_thread(client.containers.get, dead.id)
            # Live owners' containers (ours, the session pool's) are kept.
            assert await asyncio.to_thread(clean_containers) == 0
            assert _container_ids(box) <= {c.id for c in await asyncio.to_thread(
                client.containers.list, filters={"label": LABEL}, ignore_removed=True)}
        finally:
            await box.aclose()
    finally:
        client.close()


@needs_docker
async def test_concurrent_runs_do_not_block_the_loop(docker_box: DockerSandbox) -> None:
    async with LoopTicker(0.01) as ticker:
        started = time.monotonic()
        results = await asyncio.gather(
            *(docker_box.run("import time; time.sleep(0.5)\nprint('ok')", timeout_s=20) for _ in range(8)))
        elapsed = time.monotonic() - started
    ticks = ticker.ticks
    assert [r.observation for r in results] == ["ok"] * 8
    assert elapsed < 5, elapsed  # 4 rounds of 0.5 s through a pool of 2
    assert ticks >= 50, ticks


@needs_docker
async def test_aclose_kills_every_container_and_reports_inflight_runs() -> None:
    import docker

    box = DockerSandbox(SandboxLimits(pool_size=2))
    await box.start()
    slow = asyncio.create_task(box.run("import time; time.sleep(100)", timeout_s=60))
    await asyncio.sleep(0.5)
    ids = _container_ids(box)
    await box.aclose()
    result = await slow
    assert result.error == "RuntimeError: the sandbox was closed while the code ran"
    client = docker.from_env()
    try:
        for _ in range(100):
            left = [c for c in await asyncio.to_thread(client.containers.list, all=True, ignore_removed=True) if c.id in ids]
            if not left:
                break
            await asyncio.sleep(0.1)
        assert not left
    finally:
        client.close()
