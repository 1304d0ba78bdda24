"""The bubblewrap backend: one fresh `bwrap` process per code run, or a warm pool of them.

One-shot (the default): every run starts `bwrap ... python3 -I -B -c SOURCE`, which reads one
request on stdin and replies on stdout (executor.py's `main()`): the strongest per-run isolation
and the slowest (a new interpreter and namespaces per run, ≈ 30-70 ms here). Pool
(`SandboxLimits.bwrap_pool`, implied by `reuse_process`): `pool_size` long-lived bwrap sandboxes
each running the executor server (`sandbox/pool.py`, `sandbox/server.py`), the same machinery as
the Docker backend, with the socket directory bind-mounted read-only at `pool.MOUNT`, /run
otherwise an empty read-only tmpfs and no writable /dev/shm (a pool's sandbox outlives a run, so
the only writable place is /tmp, which the server empties after each run).

Isolation: new user/pid/net/ipc/uts/cgroup namespaces (`--unshare-all`), read-only host root,
size-capped tmpfs on /tmp and /dev/shm, read-only /dev, a clean environment, a new session (no
TIOCSTI on our terminal), and rlimits (address space, CPU, file size, processes, no core) set by
the executor before any user code runs. When we are root, bwrap itself is started as an
unprivileged uid/gid (65534 by default) because RLIMIT_NPROC does not bind root. The interpreter
is its pid namespace's pid 1 (`--as-pid-1`): when it exits, everything it forked dies with it,
and bwrap reaps it directly (bwrap's own init would be orphaned to host pid 1 as a zombie).

It is weaker than the Docker backend: the sandbox shares the host kernel and there is no cgroup
memory or pids limit — rlimits only (RLIMIT_AS is per process, RLIMIT_NPROC is per uid).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sandbox.base import ExecResult
from sandbox.errors import SandboxUnavailable
from sandbox.limits import SandboxLimits
from sandbox.pool import MOUNT, PRELOAD, WorkerPool, executor_source, server_config, timeout_message

__all__ = ["BwrapSandbox", "timeout_message"]

logger = structlog.get_logger(__name__)

_INSTALL_BWRAP = "bubblewrap not found: run `apt-get install -y bubblewrap`"
_STDERR_CAP = 64 * 1024
_CHUNK = 64 * 1024
# bwrap exits with 128 + signal when the sandboxed process was killed by a signal.
_SIGNAL_BASE = 128
_CPU_LIMIT_SIGNALS = {signal.SIGXCPU, signal.SIGKILL}


class _Overflow(Exception):
    """The sandbox wrote more than `max_output_bytes` to its reply channel."""


async def _read_capped(stream: asyncio.StreamReader, cap: int, *, overflow: bool) -> bytes:
    """Read to EOF keeping at most `cap` bytes; past it raise `_Overflow` or drop the rest."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(_CHUNK):
        if size + len(chunk) > cap:
            if overflow:
                raise _Overflow
            chunk = chunk[: max(cap - size, 0)]
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """Kill one sandbox and reap it, leaving no zombie behind.

    Killing the outer bwrap first would orphan its child (the sandbox's pid-namespace init) to
    host pid 1, which may never reap it (e.g. our own process as pid 1 in a container). So kill
    the child first — the whole pid namespace dies with it — and let bwrap reap it and exit;
    only then, or if that does not happen within a second, SIGKILL bwrap's process group.
    """
    if process.returncode is not None:
        return
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.kill(int(child), signal.SIGKILL)
    if children:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await process.wait()
    _kill_group(process)
    await process.wait()


def _argv(bwrap: str, limits: SandboxLimits, command: list[str], sockdir: str | None) -> list[str]:
    """The bwrap command line; `sockdir` (a pool's sandbox) is mounted read-only at `MOUNT`."""
    tmpfs = str(limits.tmpfs_mb << 20)
    if sockdir is None:
        # One run per sandbox: a size-capped /dev/shm dies with it.
        scratch = ["--size", tmpfs, "--tmpfs", "/dev/shm"]
    else:
        # The sandbox serves many runs: nothing writable may outlive one but /tmp, which the
        # server empties; /run (host sockets) is hidden behind an empty read-only tmpfs.
        scratch = ["--tmpfs", "/run", "--ro-bind", sockdir, MOUNT, "--remount-ro", "/run"]
    return [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        # The interpreter is the namespace's pid 1, a direct child that bwrap waits for; with
        # bwrap's own init in between, that init is orphaned to host pid 1 on every exit.
        "--as-pid-1",
        "--new-session",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--size", tmpfs, "--tmpfs", "/tmp",
        *scratch,
        # /dev is otherwise an uncapped writable tmpfs.
        "--remount-ro", "/dev",
        "--chdir", "/tmp",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--setenv", "OPENBLAS_NUM_THREADS", "1",
        "--setenv", "OMP_NUM_THREADS", "1",
        "--setenv", "MKL_NUM_THREADS", "1",
        "--",
        *command,
    ]  # fmt: skip


def _as_sandbox_user(argv: list[str], limits: SandboxLimits) -> tuple[list[str], dict[str, Any]]:
    """(argv, Popen keywords) that start `argv` as `limits.uid`/`gid` with no supplementary
    groups when we are root (RLIMIT_NPROC does not bind root), else unchanged.

    Through `setpriv` (util-linux) where it exists: given `user`/`group`/`extra_groups`, CPython
    cannot use vfork and FORKS this whole process instead, which blocks the event loop for the
    copy of its page tables (10-60 ms per sandbox start for the benchmark's client here, more for
    a large runtime), stalling every run in flight. setpriv sets the same real, effective and
    saved ids and clears the groups, then execs bwrap in place (same pid)."""
    if os.geteuid() != 0:
        return argv, {}
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None:
        return argv, {"user": limits.uid, "group": limits.gid, "extra_groups": []}
    drop = [setpriv, f"--reuid={limits.uid}", f"--regid={limits.gid}", "--clear-groups", "--"]
    return [*drop, *argv], {}


async def _spawn(argv: list[str], limits: SandboxLimits, *, stdio: int) -> asyncio.subprocess.Process:
    """Start bwrap in its own session, as the sandbox user when we are root
    (`_as_sandbox_user`). `stdio`: PIPE (one-shot) or DEVNULL (a pool's server uses its socket)."""
    argv, user = _as_sandbox_user(argv, limits)
    # Never cancel `create_subprocess_exec` itself: cancelled while it connects the pipes, it
    # kills the child and then waits forever for the transport to say so (CPython gh-103847, on
    # the Pythons we support), which froze a Ctrl-C'd `eval` about once in 15. The start runs as
    # its own task; a cancellation waits for it (milliseconds), kills what it started, re-raises.
    start = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *argv,
        stdin=stdio,
        stdout=stdio,
        stderr=asyncio.subprocess.PIPE,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        start_new_session=True,
        **user,
    ))
    cancelled: asyncio.CancelledError | None = None
    while not start.done():
        try:
            await asyncio.wait([start])  # unlike `await start`, a cancellation leaves it running
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is None:
        return start.result()
    if not start.cancelled() and start.exception() is None:
        await _terminate(start.result())
    raise cancelled


@dataclass(eq=False)
class _BwrapLauncher:
    """`pool.Launcher` for long-lived bwrap sandboxes; a handle is the bwrap process."""

    bwrap: str
    limits: SandboxLimits
    command: list[str]
    backend: str = "bwrap"

    async def start(self, sockdir: str) -> asyncio.subprocess.Process:
        return await _spawn(_argv(self.bwrap, self.limits, self.command, sockdir), self.limits,
                            stdio=asyncio.subprocess.DEVNULL)

    async def ended(self, handle: asyncio.subprocess.Process) -> str:
        assert handle.stderr is not None
        stderr = await _read_capped(handle.stderr, _STDERR_CAP, overflow=False)
        returncode = await handle.wait()
        return f"exit code {returncode}: {stderr.decode('utf-8', 'replace').strip()[-2000:]}"

    async def kill(self, handle: asyncio.subprocess.Process) -> None:
        await _terminate(handle)


class BwrapSandbox:
    """`Sandbox` backed by bubblewrap; see the module docstring for what it does and does not
    isolate. Construct, `await start()` (needed for the pool; `open_sandbox` does it), optionally
    `await check()`, then `await run(...)` from any number of tasks. One-shot: at most
    `limits.max_concurrency` sandbox processes exist at once. Pool: `limits.pool_size`
    sandboxes, each serving one run at a time."""

    def __init__(self, limits: SandboxLimits | None = None, *, preload: Sequence[str] = PRELOAD) -> None:
        self.limits = limits or SandboxLimits()
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable(_INSTALL_BWRAP)
        if not os.access(self.limits.python, os.X_OK):
            raise SandboxUnavailable(
                f"sandbox interpreter {self.limits.python} not found: run "
                "`apt-get install -y python3 python3-sympy python3-numpy python3-scipy` "
                "or set SandboxLimits(python=...) to an interpreter outside the repository"
            )
        self._bwrap = bwrap
        self._command = [self.limits.python, "-I", "-B", "-c", executor_source()]
        self._pool: WorkerPool | None = None
        if self.limits.bwrap_pool or self.limits.reuse_process:
            command = [*self._command, "serve", f"{MOUNT}/s",
                       server_config(self.limits, preload, nproc=True)]
            self._pool = WorkerPool(self.limits, _BwrapLauncher(bwrap, self.limits, command))
        self._semaphore = asyncio.Semaphore(self.limits.max_concurrency)
        self._processes: set[asyncio.subprocess.Process] = set()
        self._killed: set[asyncio.subprocess.Process] = set()  # by aclose()
        self._closed = False
        self._started = self._pool is None
        logger.warning(
            "sandbox_isolation_weaker",
            backend="bwrap",
            detail="bubblewrap shares the host kernel and has no cgroup memory/pids limit "
            "(rlimits only); the Docker backend isolates more strongly",
        )

    async def start(self) -> None:
        """Start the pool, if this sandbox uses one (a no-op for one-shot sandboxes)."""
        if self._pool is not None and not self._started:
            try:
                await self._pool.start()
            except BaseException:
                await self.aclose()
                raise
            self._started = True

    async def wait_ready(self) -> None:
        """Pool: wait until every sandbox of the pool is up (`start()` waits for the first only);
        raise SandboxError when they fail to start. One-shot: returns at once (nothing is warm)."""
        if self._pool is None:
            return
        if not self._started:
            raise RuntimeError("BwrapSandbox.wait_ready() called before start() (a pool sandbox)")
        await self._pool.wait_ready()

    @property
    def workers_started(self) -> int:
        """Pool: how many sandboxes have come up so far (the first pool, then every
        replacement); 0 one-shot."""
        return 0 if self._pool is None else self._pool.workers_started

    def _request(self, code: str, history: Sequence[str]) -> bytes:
        limits = self.limits
        request = {
            "history": list(history),
            "code": code,
            "limits": {
                "memory_mb": limits.memory_mb,
                "cpu_s": limits.cpu_s,
                "file_size_mb": limits.file_size_mb,
                "nproc": limits.nproc,
                "max_output_bytes": limits.max_output_bytes,
            },
        }
        return json.dumps(request).encode("utf-8")

    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        if self._closed:
            raise RuntimeError("BwrapSandbox.run() called after aclose()")
        if self._pool is not None:
            if not self._started:
                raise RuntimeError("BwrapSandbox.run() called before start() (a pool sandbox)")
            return await self._pool.run(code, history=history, timeout_s=timeout_s)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        request = self._request(code, history)
        async with self._semaphore:
            started = time.monotonic()
            stdout, error, timed_out = await self._run_process(request, timeout_s)
            return ExecResult(
                stdout=stdout,
                error=error,
                timed_out=timed_out,
                duration_s=time.monotonic() - started,
            )

    async def _run_process(self, request: bytes, timeout_s: float) -> tuple[str, str | None, bool]:
        """Returns (stdout, error, timed_out) of one sandbox process."""
        process = await _spawn(_argv(self._bwrap, self.limits, self._command, None), self.limits,
                               stdio=asyncio.subprocess.PIPE)
        self._processes.add(process)
        assert process.stdin and process.stdout and process.stderr
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    try:
                        process.stdin.write(request)
                        await process.stdin.drain()
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # it died before reading; its exit status tells why
                    finally:
                        process.stdin.close()
                    reply, stderr = await asyncio.gather(
                        _read_capped(process.stdout, self.limits.max_output_bytes, overflow=True),
                        _read_capped(process.stderr, _STDERR_CAP, overflow=False),
                    )
                    returncode = await process.wait()
            except TimeoutError:
                return "", timeout_message(timeout_s), True
            except _Overflow:
                return "", (
                    f"RuntimeError: sandbox output exceeded {self.limits.max_output_bytes} bytes"
                ), False
            if process in self._killed:
                return "", "RuntimeError: the sandbox was closed while the code ran", False
            return self._interpret(reply, stderr, returncode, timeout_s)
        finally:
            # 1) On timeout, overflow, cancellation or error: nothing of this run survives.
            await _terminate(process)
            self._processes.discard(process)
            self._killed.discard(process)

    def _interpret(
        self, reply: bytes, stderr: bytes, returncode: int, timeout_s: float
    ) -> tuple[str, str | None, bool]:
        lines = reply.strip().splitlines()
        parsed: Any = None
        if returncode == 0 and lines:
            with contextlib.suppress(ValueError):
                parsed = json.loads(lines[-1])
        if isinstance(parsed, dict):
            fatal = parsed.get("fatal")
            stdout, error = parsed.get("stdout"), parsed.get("error")
            if isinstance(fatal, str):
                logger.error("sandbox_setup_failed", backend="bwrap", detail=fatal)
                return "", f"RuntimeError: {fatal}", False
            if isinstance(stdout, str) and (error is None or isinstance(error, str)):
                return stdout, error, False
        # 2) No usable reply: the interpreter (or bwrap) died.
        if returncode - _SIGNAL_BASE in _CPU_LIMIT_SIGNALS:
            # bwrap reports its child's death by signal N as exit 128 + N. RLIMIT_CPU (soft =
            # hard) ends the interpreter with SIGXCPU/SIGKILL; we never signal the interpreter
            # (only bwrap itself, which then shows a negative returncode), so this is the CPU
            # limit (or, rarely, the kernel's OOM killer).
            return "", timeout_message(timeout_s), True
        number = -returncode if returncode < 0 else returncode - _SIGNAL_BASE
        if number > 0:
            with contextlib.suppress(ValueError):
                name = signal.Signals(number).name
                return "", f"RuntimeError: sandbox process died ({name}, signal {number})", False
            return "", f"RuntimeError: sandbox process died (signal {number})", False
        detail = stderr.decode("utf-8", "replace").strip()[-2000:]
        if returncode != 0:
            logger.warning("sandbox_process_failed", backend="bwrap", returncode=returncode, stderr=detail)
            suffix = f": {detail}" if detail else ""
            return "", f"RuntimeError: sandbox process failed (exit code {returncode}){suffix}", False
        return "", "RuntimeError: sandbox process exited without a reply", False

    async def check(self) -> None:
        """Run `print(1)`; raise SandboxUnavailable (with bwrap's own words) if that fails."""
        try:
            result = await self.run("print(1)", timeout_s=30)
        except OSError as exc:
            raise SandboxUnavailable(f"cannot start bubblewrap ({self._bwrap}): {exc}") from exc
        if result.error is not None or result.stdout != "1":
            raise SandboxUnavailable(
                "bubblewrap cannot run the sandbox here (user namespaces may be disabled: try "
                "`sysctl -w kernel.unprivileged_userns_clone=1` and, on Ubuntu 24.04+, "
                "`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`): "
                f"{result.observation or 'no output'}"
            )

    async def aclose(self) -> None:
        """Kill every sandbox process still running; later `run()` calls raise."""
        self._closed = True
        if self._pool is not None:
            await self._pool.aclose()
        processes = list(self._processes)
        self._killed.update(processes)
        await asyncio.gather(*(_terminate(process) for process in processes))
        self._processes.clear()
