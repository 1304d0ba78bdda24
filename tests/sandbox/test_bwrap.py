"""The bubblewrap backend with real `bwrap` subprocesses, plus the package's public surface."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.loop_ticker import LoopTicker
from sandbox import (
    BwrapSandbox,
    ExecResult,
    Sandbox,
    SandboxLimits,
    SandboxUnavailable,
    open_sandbox,
)
from sandbox import bwrap as bwrap_module
from sandbox.bwrap import timeout_message

HAVE_BWRAP = os.path.exists("/usr/bin/bwrap")
MISSING = "!!! /usr/bin/bwrap MISSING: the sandbox is UNTESTED; run `apt-get install -y bubblewrap` !!!"
F = TypeVar("F", bound=Callable[..., Any])


def needs_bwrap(test: F) -> F:
    """Mark a test `bwrap` and skip it, loudly, where bubblewrap is not installed."""
    return pytest.mark.bwrap(pytest.mark.skipif(not HAVE_BWRAP, reason=MISSING)(test))  # type: ignore[no-any-return]


@pytest.fixture
async def box() -> AsyncIterator[BwrapSandbox]:
    sandbox_ = BwrapSandbox(SandboxLimits())
    try:
        yield sandbox_
    finally:
        await sandbox_.aclose()


async def observe(box: BwrapSandbox, code: str, *, timeout_s: float = 10, **kw: object) -> str:
    result = await box.run(code, timeout_s=timeout_s, **kw)  # type: ignore[arg-type]
    assert not result.timed_out, result
    return result.observation


# --- public surface (no bwrap needed) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory_mb", 0), ("cpu_s", 0), ("nproc", 1), ("max_output_bytes", 10), ("tmpfs_mb", -1),
     ("max_concurrency", 0), ("cpu_s", 1.5), ("memory_mb", True), ("python", "python3")],
)
def test_limits_validation(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SandboxLimits(**{field: value})  # type: ignore[arg-type]


def test_limits_defaults_and_frozen() -> None:
    limits = SandboxLimits()
    assert (limits.memory_mb, limits.cpu_s, limits.file_size_mb, limits.nproc) == (1024, 20, 16, 64)
    assert limits.max_concurrency == 2 * (os.cpu_count() or 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.cpu_s = 5  # type: ignore[misc]


async def test_open_sandbox_rejects_unknown_backends() -> None:
    # Docker's own errors (no engine, no image) are tested in test_docker.py.
    with pytest.raises(ValueError, match="auto, docker, bwrap"):
        async with open_sandbox("podman"):
            pass


def test_missing_bwrap_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match=r"apt-get install -y bubblewrap"):
        BwrapSandbox()


def test_missing_interpreter_names_the_fix() -> None:
    with pytest.raises(SandboxUnavailable, match="apt-get install"):
        BwrapSandbox(SandboxLimits(python="/nonexistent/python3"))


def test_root_drops_privileges_without_forking_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    # Popen's user/group/extra_groups make CPython fork the whole runtime (no vfork), stalling
    # its event loop; setpriv drops to the same ids in the child instead.
    limits = SandboxLimits(uid=1234, gid=5678)
    argv = ["/usr/bin/bwrap", "--", "python3"]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name, path=None: f"/usr/bin/{name}")
    assert bwrap_module._as_sandbox_user(argv, limits) == (
        ["/usr/bin/setpriv", "--reuid=1234", "--regid=5678", "--clear-groups", "--", *argv], {})
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)  # no setpriv: Popen does it
    assert bwrap_module._as_sandbox_user(argv, limits) == (
        argv, {"user": 1234, "group": 5678, "extra_groups": []})
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: nothing to drop
    assert bwrap_module._as_sandbox_user(argv, limits) == (argv, {})


# --- real sandbox runs -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "bwrap"])
@needs_bwrap
async def test_open_sandbox_yields_a_working_sandbox(backend: str) -> None:
    async with open_sandbox(backend) as box:
        assert isinstance(box, Sandbox)
        result = await box.run("```python\nprint(6 * 7)\n```", timeout_s=10)
    assert result == ExecResult(stdout="42", error=None, timed_out=False, duration_s=result.duration_s)
    assert 0 < result.duration_s < 10
    with pytest.raises(RuntimeError, match="after aclose"):
        await box.run("1", timeout_s=5)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("print(1)", "1"),
        ("1/3", "0.3333333333333333"),
        ("print(1/3)", "0.3333"),
        ("a=2;print(a);b=a*3;print(b)", "a: 2\nb: 6"),
        ("print(1)\nx=2", ""),
        ("x", "NameError: name 'x' is not defined"),
        ("import sympy; sympy.Rational(1,3)+1", "4/3"),
        ("import numpy as np\nprint(np.arange(3).sum())", "3"),
        ("import os; os.getuid()", str(65534 if os.geteuid() == 0 else os.geteuid())),
        ("raise SystemExit(3)", "SystemExit: 3"),
        # The captured last statement gets its own stdout even if user code closed the real one.
        ("import sys; sys.stdout.close(); print(1)", "1"),
    ],
)
@needs_bwrap
async def test_observations(box: BwrapSandbox, code: str, expected: str) -> None:
    assert await observe(box, code) == expected


@needs_bwrap
async def test_history_replay_across_runs(box: BwrapSandbox) -> None:
    history = ["import sympy\nx = sympy.Symbol('x')", "1/0", "eq = x**2 - 4"]
    assert await observe(box, "sorted(sympy.solve(eq, x))", history=history) == "[-2, 2]"
    # Nothing persists between runs: each is a fresh process.
    assert await observe(box, "eq") == "NameError: name 'eq' is not defined"


@needs_bwrap
@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(1000)"])
async def test_wall_clock_timeout(box: BwrapSandbox, code: str) -> None:
    started = time.monotonic()
    result = await box.run(code, timeout_s=2)
    assert time.monotonic() - started < 4
    assert result.timed_out
    assert result.error == timeout_message(2)
    assert result.error == (
        "TimeoutError: Execution of the code snippet has timed out for exceeding 2 seconds."
    )
    assert await observe(box, "print(5)") == "5"


@needs_bwrap
async def test_cpu_rlimit_is_a_timeout() -> None:
    box = BwrapSandbox(SandboxLimits(cpu_s=1))
    try:
        started = time.monotonic()
        result = await box.run("while True: pass", timeout_s=30)
        assert time.monotonic() - started < 5
        assert result.timed_out and result.error == timeout_message(30)
    finally:
        await box.aclose()


@needs_bwrap
async def test_memory_bomb(box: BwrapSandbox) -> None:
    assert (await observe(box, "x = bytearray(4*10**9)")).startswith("MemoryError")


@needs_bwrap
async def test_fork_bomb(box: BwrapSandbox) -> None:
    started = time.monotonic()
    result = await box.run("import os\nwhile True: os.fork()", timeout_s=10)
    assert time.monotonic() - started < 11
    assert result.observation  # some observation (BlockingIOError, or the timeout)
    assert await observe(box, "print(2)") == "2"


@needs_bwrap
async def test_no_network(box: BwrapSandbox) -> None:
    out = await observe(box, "import socket\nsocket.create_connection(('1.1.1.1', 80), 2)")
    assert out.startswith("OSError:"), out


@needs_bwrap
@pytest.mark.parametrize("path", ["/root/.bashrc", "/etc/shadow"])
async def test_cannot_read_secrets(box: BwrapSandbox, path: str) -> None:
    out = await observe(box, f"open({path!r}).read()")
    assert out.startswith(("PermissionError:", "FileNotFoundError:")), out
    if path == "/etc/shadow":
        assert out.startswith("PermissionError:"), out


@needs_bwrap
@pytest.mark.parametrize("path", ["/home/x", "/usr/x", "/dev/x", "/etc/x"])
async def test_cannot_write_outside_tmp(box: BwrapSandbox, path: str) -> None:
    out = await observe(box, f"open({path!r}, 'w').write('x')")
    assert out.startswith(("OSError: [Errno 30]", "PermissionError:")), out
    assert await observe(box, "open('/tmp/x', 'w').write('abc')") == "3"


@needs_bwrap
async def test_tmpfs_is_size_capped() -> None:
    box = BwrapSandbox(SandboxLimits(tmpfs_mb=2, file_size_mb=16))
    try:
        out = await observe(box, "open('/tmp/big', 'wb').write(b'x' * (8 << 20))")
        assert out.startswith("OSError: [Errno 28]"), out  # No space left on device
    finally:
        await box.aclose()


@needs_bwrap
async def test_host_environment_is_hidden(box: BwrapSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHAMATH_TEST_SECRET", "hunter2")
    assert await observe(box, "import os; print(os.environ.get('ALPHAMATH_TEST_SECRET'))") == "None"


@needs_bwrap
async def test_raw_writes_cannot_corrupt_the_reply(box: BwrapSandbox) -> None:
    code = "import os\nos.write(1, b'garbage\\n{')\nos.write(2, b'err')\nprint('fine')"
    assert await observe(box, code) == "fine"


@needs_bwrap
async def test_reply_flood_is_capped() -> None:
    box = BwrapSandbox(SandboxLimits(max_output_bytes=4096))
    # User code can find the private reply fd; what it floods there is cut at the cap.
    code = "import os\nfor fd in range(3, 10):\n    try: os.write(fd, b'x' * 20000)\n    except OSError: pass"
    try:
        result = await box.run(code, timeout_s=10)
        assert result.error == "RuntimeError: sandbox output exceeded 4096 bytes"
    finally:
        await box.aclose()


@needs_bwrap
async def test_crash_is_an_observation(box: BwrapSandbox) -> None:
    # A real fault (the interpreter is its namespace's pid 1, so a self-sent signal is ignored).
    out = await observe(box, "import ctypes\nctypes.string_at(0)")
    assert out == "RuntimeError: sandbox process died (SIGSEGV, signal 11)"


@needs_bwrap
async def test_concurrent_runs_do_not_block_the_loop() -> None:
    box = BwrapSandbox(SandboxLimits(max_concurrency=10))
    try:
        async with LoopTicker(0.01) as ticker:
            started = time.monotonic()
            results = await asyncio.gather(
                *(box.run("import time; time.sleep(1)\nprint('ok')", timeout_s=20) for _ in range(10))
            )
            elapsed = time.monotonic() - started
    finally:
        await box.aclose()
    ticks = ticker.ticks
    assert [r.observation for r in results] == ["ok"] * 10
    assert elapsed < 5, elapsed
    assert ticks >= 30, ticks  # ~100 expected in >= 1 s; a blocked loop would give ~1


@needs_bwrap
async def test_semaphore_bounds_concurrency() -> None:
    box = BwrapSandbox(SandboxLimits(max_concurrency=2))
    try:
        started = time.monotonic()
        await asyncio.gather(*(box.run("import time; time.sleep(1)", timeout_s=20) for _ in range(4)))
        assert time.monotonic() - started >= 2
    finally:
        await box.aclose()


@needs_bwrap
async def test_aclose_and_cancellation_kill_running_processes() -> None:
    box = BwrapSandbox(SandboxLimits())
    task = asyncio.create_task(box.run("import time; time.sleep(1000)", timeout_s=500))
    while not box._processes:  # wait until the process exists
        await asyncio.sleep(0.01)
    (process,) = box._processes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert process.returncode is not None and not box._processes

    slow = asyncio.create_task(box.run("import time; time.sleep(1000)", timeout_s=500))
    while not box._processes:
        await asyncio.sleep(0.01)
    (process,) = box._processes
    await box.aclose()
    assert process.returncode is not None
    result = await slow
    assert result.error == "RuntimeError: the sandbox was closed while the code ran"
    assert not result.timed_out


@needs_bwrap
async def test_a_cancellation_while_the_sandbox_starts_neither_hangs_nor_leaks() -> None:
    # CPython gh-103847: a task cancelled inside `create_subprocess_exec` while it connects the
    # pipes waited forever for the killed child's transport (a Ctrl-C froze `eval` about once in
    # 15). Cancel after every number of loop turns up to past the start, so one lands in there.
    before = _children_of_us()
    box = BwrapSandbox(SandboxLimits())
    try:
        for turns in range(12):
            task = asyncio.create_task(box.run("print(1)", timeout_s=10))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=10)
            assert done, f"cancelled after {turns} loop turns, the run never ended"
            assert task.cancelled() or task.result().observation.strip() == "1"
            assert not box._processes
    finally:
        await box.aclose()
    assert _children_of_us() <= before, "a sandbox outlived its cancelled run"


def _children_of_us() -> set[str]:
    pid = os.getpid()
    return set(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


@needs_bwrap
async def test_check_passes(box: BwrapSandbox) -> None:
    await box.check()


def _break_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """bwrap with an option it rejects: stands in for a host where bwrap cannot start."""
    real = bwrap_module._argv

    def broken(*args: Any) -> list[str]:
        argv = real(*args)
        return [argv[0], "--no-such-option", *argv[1:]]

    monkeypatch.setattr(bwrap_module, "_argv", broken)


@needs_bwrap
async def test_check_reports_bwrap_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    _break_bwrap(monkeypatch)
    box = BwrapSandbox(SandboxLimits())
    try:
        with pytest.raises(SandboxUnavailable, match="no-such-option"):
            await box.check()
        result = await box.run("print(1)", timeout_s=10)
        assert result.error is not None
        assert result.error.startswith("RuntimeError: sandbox process failed (exit code 1): bwrap:")
    finally:
        await box.aclose()


@needs_bwrap
async def test_wait_ready_waits_for_the_whole_pool() -> None:
    box = BwrapSandbox(SandboxLimits(bwrap_pool=True, pool_size=2, tmpfs_mb=8))
    try:
        with pytest.raises(RuntimeError, match="before start"):
            await box.wait_ready()
        await box.start()
        await asyncio.wait_for(box.wait_ready(), 120)
        assert len(box._pool.workers) == 2 and box.workers_started == 2  # type: ignore[union-attr]
        assert await observe(box, "print(1)") == "1"
    finally:
        await box.aclose()


@needs_bwrap
async def test_one_shot_wait_ready_has_nothing_to_wait_for(box: BwrapSandbox) -> None:
    await asyncio.wait_for(box.wait_ready(), 1)
    assert box.workers_started == 0


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox user is dropped to only when we are root")
async def test_root_runs_bwrap_as_the_sandbox_user_with_no_groups() -> None:
    box = BwrapSandbox(SandboxLimits(bwrap_pool=True, pool_size=1, tmpfs_mb=8))
    try:
        await box.start()
        (worker,) = box._pool.workers  # type: ignore[union-attr]
        with open(f"/proc/{worker.handle.pid}/status") as status:  # bwrap itself, on the host
            fields = dict(line.split(":", 1) for line in status)
        assert fields["Uid"].split() == ["65534"] * 4  # real, effective, saved, fs
        assert fields["Gid"].split() == ["65534"] * 4
        assert fields["Groups"].split() == []
        code = "import os; print(os.getuid(), os.getgid(), os.getgroups())"
        assert await observe(box, code) == "65534 65534 []"
    finally:
        await box.aclose()


@needs_bwrap
async def test_pool_start_reports_bwrap_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    _break_bwrap(monkeypatch)
    box = BwrapSandbox(SandboxLimits(bwrap_pool=True, pool_size=1))
    with pytest.raises(SandboxUnavailable, match="no-such-option"):
        await box.start()  # each start fails fast (bwrap exits), not after the 120 s accept timeout
    with pytest.raises(RuntimeError, match="after aclose"):
        await box.run("1", timeout_s=5)
