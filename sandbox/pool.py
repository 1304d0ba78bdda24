"""A warm pool of sandbox servers (`sandbox/server.py`), shared by the Docker and bwrap backends.

A backend supplies a `Launcher` (start one sandbox whose server connects to a given socket
directory, tell why it ended, kill it); the pool does the rest. Each worker is one sandbox
running the executor server; it serves ONE request at a time.

Transport — a unix socket, not attached stdio: the pool binds a socket in a private host
directory that the launcher bind-mounts READ-ONLY into the sandbox at `MOUNT` (a socket can be
connected through a read-only mount; nothing can be created there), and the server connects out
to it. A round trip is a `send` and a `recv` on a local socket (tens of µs), where Docker's
attached stdio goes through the daemon's stream copier (≈ 3.5 ms a round trip) and `docker exec`
costs far more. Frames are a 4-byte length + JSON.

Lifecycle: a run that times out, is cancelled, whose process died by a signal, whose server
vanished, that left something the server could not clean (`dirty`), or that reached its budget
retires its worker: `Launcher.kill`, then a replacement starts in the background. Planned
retirement costs no waiting: a worker whose budget is nearly spent (the last quarter) starts its
successor first and keeps serving meanwhile, and the budgets of the first pool are staggered
(`max_uses`, then 3/4, 1/2, ... of it), so workers do not all come up for replacement at once; a
run waits on a start-up only when no other worker is there (a pool of one, or crashes).
Background tasks hold a small `_Pool` state, never the sandbox (STYLE.md 6); `aclose()` ends
them. Pool start is concurrent, and `run()` takes the first worker that is ready;
`wait_ready()` waits for the whole pool (benchmarks measure steady state from there).

Fairness: runs waiting for a worker get one first come, first served. A released worker is
handed straight to the longest waiter; with a plain `asyncio.Queue` the caller that just released
it would take it back at once (its next `get()` finds the queue non-empty before the woken waiter
runs), so with more callers than workers the same callers kept the workers and the others waited
for a whole series of their runs (the p99 of `benchmarks/bench_sandbox.py` was 20 service times).

Reuse mode (`SandboxLimits.reuse_process`): the server runs every request in one process (see
server.py for what that does and does not isolate). Each request then carries a random id the
reply must echo: a reply with another id was written by an earlier run's code into the socket,
so the worker is retired and the request rerun once on another worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.resources
import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from sandbox.base import ExecResult
from sandbox.errors import SandboxError, SandboxUnavailable
from sandbox.limits import SandboxLimits

__all__ = ["MOUNT", "PRELOAD", "Launcher", "WorkerPool", "executor_source", "server_config", "timeout_message"]

logger = structlog.get_logger(__name__)

PRELOAD = ("sympy", "numpy")  # imported once per server, before any request
MOUNT = "/run/alphamath"  # where the socket directory appears inside the sandbox
_SOCKET = "s"
_FRAME = 4
_START_TIMEOUT_S = 120.0
_MAX_START_FAILURES = 3
_HELLO_CAP = 4096  # the largest hello frame; replies may be up to `_Pool.cap`


def timeout_message(timeout_s: float) -> str:
    """AlphaMath's timeout observation, with our limit in place of its 15 s."""
    return (
        f"TimeoutError: Execution of the code snippet has timed out for exceeding {timeout_s:g} seconds."
    )


def executor_source() -> str:
    """The program run inside every sandbox: executor.py, then server.py (whose `from __future__`
    line must go: it may only open a file, and executor.py's already covers the whole text)."""
    files = importlib.resources.files("sandbox")
    executor = files.joinpath("executor.py").read_text(encoding="utf-8")
    server = files.joinpath("server.py").read_text(encoding="utf-8")
    return executor + "\n\n" + server.replace("from __future__ import annotations\n", "", 1)


def server_config(limits: SandboxLimits, preload: Sequence[str], *, nproc: bool) -> str:
    """The server's CONFIG argument. `nproc`: set RLIMIT_NPROC (not under Docker, where it would
    count the uid across every container; the cgroup's pids limit bounds processes there)."""
    rlimits: dict[str, Any] = {
        "memory_mb": limits.memory_mb,
        "cpu_s": limits.cpu_s,
        "file_size_mb": limits.file_size_mb,
        "max_output_bytes": limits.max_output_bytes,
    }
    if nproc:
        rlimits["nproc"] = limits.nproc
    return json.dumps({"limits": rlimits, "preload": list(preload), "reuse": limits.reuse_process,
                       "refresh": limits.worker_runs})


class Launcher(Protocol):
    """Starts and kills the sandboxes of one backend."""

    backend: str  # for logs and messages

    async def start(self, sockdir: str) -> Any:
        """Start a sandbox whose server connects to `MOUNT`/s, with `sockdir` mounted there
        read-only; return a handle."""
        ...

    async def ended(self, handle: Any) -> str:
        """Return (why) once the sandbox has ended; used to fail a start-up early. May never
        return where ending is not cheaply observable."""
        ...

    async def kill(self, handle: Any) -> None:
        """Kill the sandbox and everything in it; idempotent."""
        ...


class _Overflow(Exception):
    pass


class _Channel(asyncio.Protocol):
    """The pool's end of one server's socket: requests out, and each reply frame in to the run
    waiting for it (a worker serves one run at a time, so at most one waits).

    A protocol, not a StreamReader/StreamWriter pair, because of the client's CPU per run: two
    `readexactly` coroutines (each with its own wake-up future) and a `drain` made the pool's
    side of a trivial run ~0.16 ms, ~0.13 ms this way (one-off probes, 8 callers, 4 Docker
    workers); on a 2-core host that CPU is taken from the sandboxes. A frame that arrives while
    no run waits (the hello, or one an earlier run's code wrote) is kept for the next run,
    whose id check then catches a stale one. After EOF, a connection error or an oversized
    frame the channel is `closed`: frames already in are still read, then every wait fails at
    once, so no run hangs on a dead server."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._frames: collections.deque[bytes] = collections.deque()
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self._error: Exception = ConnectionError("the sandbox server closed its socket")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= _FRAME and not self.closed:
            size = int.from_bytes(buffer[:_FRAME], "big")
            if size > self.cap:
                self._shut(_Overflow())
                return
            end = _FRAME + size
            if len(buffer) < end:
                return
            self._put(bytes(buffer[_FRAME:end]))
            del buffer[:end]

    def connection_lost(self, exc: Exception | None) -> None:
        self._shut(exc if exc is not None else self._error)

    def send(self, frame: bytes) -> asyncio.Future[bytes]:
        """Write a request; the future gets the next frame (parse it with `json.loads`)."""
        future = self.receive()
        if not self.closed and self.transport is not None:
            self.transport.write(frame)
        return future

    def receive(self) -> asyncio.Future[bytes]:
        """The next frame, sending nothing (the server's hello)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self._frames:
            future.set_result(self._frames.popleft())
        elif self.closed:
            future.set_exception(self._error)
        else:
            self._waiting.append(future)
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _put(self, frame: bytes) -> None:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():  # skip a timed-out or cancelled run (its worker is retired)
                future.set_result(frame)
                return
        self._frames.append(frame)

    def _shut(self, error: Exception) -> None:
        if self.closed:
            return
        self.closed, self._error = True, error
        self._buffer.clear()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self.close()


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


@dataclass(eq=False)
class _Worker:
    handle: Any
    sockdir: str
    channel: _Channel
    budget: int  # runs before retirement (<= max_uses; the first pool's budgets are staggered)
    uses: int = 0
    successor: bool = False  # its replacement is already starting


@dataclass(eq=False)
class _Pool:
    """What the pool's background tasks share with `WorkerPool`: they take this, never the
    sandbox itself (STYLE.md 6), and `WorkerPool.aclose()` shuts them down through it.

    Invariant: `idle` and `waiters` are never both non-empty (`_offer` serves waiters first)."""

    limits: SandboxLimits
    launcher: Launcher
    cap: int  # the largest reply frame: max_output_bytes (the server caps replies) + framing
    root: str = ""
    idle: collections.deque[_Worker] = field(default_factory=collections.deque)
    # Runs waiting for a worker, oldest first; a future's result is a worker, or None when
    # `error` was set (every waiter, and every later run, sees it).
    waiters: collections.deque[asyncio.Future[_Worker | None]] = field(default_factory=collections.deque)
    error: SandboxError | None = None
    workers: set[_Worker] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    starting: int = 0  # worker starts scheduled or in flight (retries included)
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set while `starting` is 0
    started: int = 0  # workers that came up, replacements included
    failures: int = 0
    closed: bool = False


def _offer(pool: _Pool, worker: _Worker) -> None:
    """Give an idle worker to the longest-waiting run, or park it in `idle` when none waits."""
    while pool.waiters:
        waiter = pool.waiters.popleft()
        if not waiter.done():
            waiter.set_result(worker)
            return
    pool.idle.append(worker)


def _fail(pool: _Pool, error: SandboxError) -> None:
    """Make every waiting run, and every later one, raise `error`."""
    pool.error = error
    pool.settled.set()  # wait_ready() reports it rather than waiting on starts that gave up
    while pool.waiters:
        waiter = pool.waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)


def _background(pool: _Pool, coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro)
    pool.tasks.add(task)
    task.add_done_callback(pool.tasks.discard)


def _spawn_later(pool: _Pool, budget: int, delay_s: float = 0.0) -> None:
    pool.starting += 1
    pool.settled.clear()
    _background(pool, _spawn(pool, budget, delay_s))


async def _spawn(pool: _Pool, budget: int, delay_s: float) -> None:
    """Start one worker and add it to the pool; on failure retry with a back-off."""
    try:
        await _spawn_once(pool, budget, delay_s)
    finally:
        pool.starting -= 1  # a retry was counted before this (its `_spawn_later`)
        if pool.starting == 0:
            pool.settled.set()


async def _spawn_once(pool: _Pool, budget: int, delay_s: float) -> None:
    if delay_s:
        await asyncio.sleep(delay_s)
    if pool.closed:
        return
    try:
        worker = await _start_worker(pool, budget)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        pool.failures += 1
        logger.error("sandbox_worker_start_failed", backend=pool.launcher.backend, error=str(exc),
                     failures=pool.failures)
        if pool.failures >= _MAX_START_FAILURES and not pool.workers:
            _fail(pool, SandboxError(f"{pool.launcher.backend} sandboxes fail to start: {exc}"))
        else:
            _spawn_later(pool, budget, min(0.5 * pool.failures, 5.0))
        return
    pool.failures = 0
    if pool.closed:
        await _kill(pool, worker)
        return
    pool.workers.add(worker)
    pool.started += 1
    _offer(pool, worker)


async def _start_worker(pool: _Pool, budget: int) -> _Worker:
    sockdir = tempfile.mkdtemp(dir=pool.root)
    os.chmod(sockdir, 0o755)
    path = os.path.join(sockdir, _SOCKET)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    handle = None
    try:
        listener.bind(path)
        os.chmod(path, 0o777)  # the sandbox's unprivileged user connects
        listener.listen(1)
        listener.setblocking(False)
        handle = await pool.launcher.start(sockdir)
        loop = asyncio.get_running_loop()
        ended = asyncio.ensure_future(pool.launcher.ended(handle))
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                accept = asyncio.ensure_future(loop.sock_accept(listener))
                await asyncio.wait({accept, ended}, return_when=asyncio.FIRST_COMPLETED)
                if not accept.done():
                    accept.cancel()
                    raise SandboxError(f"the sandbox ended before its server connected: {ended.result()}")
                conn, _ = accept.result()
                _, channel = await loop.connect_accepted_socket(lambda: _Channel(_HELLO_CAP), conn)
                try:
                    hello = json.loads(await channel.receive())
                except BaseException:
                    channel.close()
                    raise
                channel.cap = pool.cap
        finally:
            ended.cancel()
        if not isinstance(hello, dict) or not hello.get("hello"):
            channel.close()
            raise SandboxError(f"unexpected hello from the sandbox server: {hello!r}")
        return _Worker(handle=handle, sockdir=sockdir, channel=channel, budget=budget)
    except BaseException:
        if handle is not None:
            with contextlib.suppress(Exception):
                await pool.launcher.kill(handle)
        shutil.rmtree(sockdir, ignore_errors=True)
        raise
    finally:
        listener.close()


async def _kill(pool: _Pool, worker: _Worker) -> None:
    """Kill the worker's sandbox and forget it."""
    pool.workers.discard(worker)
    worker.channel.close()
    try:
        await pool.launcher.kill(worker.handle)
    finally:
        shutil.rmtree(worker.sockdir, ignore_errors=True)


def _retire(pool: _Pool, worker: _Worker) -> None:
    """Kill `worker` in the background; start its replacement unless that already started
    (`successor`)."""
    pool.workers.discard(worker)
    _background(pool, _kill(pool, worker))
    if not pool.closed and not worker.successor:
        worker.successor = True
        _spawn_later(pool, pool.limits.max_uses)


def _release(pool: _Pool, worker: _Worker, keep: bool) -> None:
    """After a run: back to the pool, or retired. A worker near the end of its budget starts its
    successor first and keeps serving meanwhile, so reaching `max_uses` never empties the pool."""
    worker.uses += 1
    if not keep or pool.closed or worker.uses >= worker.budget:
        if worker in pool.workers:
            _retire(pool, worker)
        return
    if not worker.successor and worker.budget - worker.uses <= max(1, worker.budget // 4):
        worker.successor = True
        _spawn_later(pool, pool.limits.max_uses)
    _offer(pool, worker)


class WorkerPool:
    """The `Sandbox` run logic over a warm pool of launcher-started servers. `await start()`
    before `run()`; `aclose()` kills every sandbox."""

    def __init__(self, limits: SandboxLimits, launcher: Launcher) -> None:
        self.limits = limits
        # The reply is capped in the sandbox to max_output_bytes; allow for JSON framing.
        self._pool = _Pool(limits=limits, launcher=launcher, cap=limits.max_output_bytes + 4096)
        self._reuse = limits.reuse_process
        self._backend = launcher.backend
        self._started = False

    @property
    def workers(self) -> set[_Worker]:
        return self._pool.workers

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @property
    def workers_started(self) -> int:
        """How many workers have come up so far: the first pool, then every replacement."""
        return self._pool.started

    async def start(self) -> None:
        """Start the pool; wait for the first worker (raise SandboxUnavailable if none comes)."""
        if self._started:
            return
        pool = self._pool
        pool.root = tempfile.mkdtemp(prefix=f"alphamath-{self._backend}-")
        os.chmod(pool.root, 0o711)  # an unprivileged sandbox (bwrap) must reach its socket dir
        self._started = True
        # Staggered budgets (max_uses, then 3/4, 1/2, ... of it for a pool of 4): the first
        # workers reach the end of their budgets at different times, not all at once.
        size, max_uses = self.limits.pool_size, self.limits.max_uses
        for i in range(size):
            _spawn_later(pool, max_uses - (i * max_uses) // size)
        # The first run must not wait for the whole pool, but start() reports a broken setup.
        try:
            first = await self._acquire()
        except SandboxError as exc:
            await self.aclose()
            raise SandboxUnavailable(f"cannot start a {self._backend} sandbox: {exc}") from exc
        _offer(pool, first)

    async def wait_ready(self) -> None:
        """Wait until no worker start is scheduled or in flight: the whole pool is up (a
        successor of a worker near its budget counts too). Raise SandboxError when the sandboxes
        fail to start or the pool is closed. `start()` first."""
        if not self._started:
            raise RuntimeError("WorkerPool.wait_ready() called before start()")
        await self._pool.settled.wait()
        if self._pool.error is not None:
            raise SandboxError(str(self._pool.error))
        if self._pool.closed:
            raise SandboxError(f"the {self._backend} sandbox was closed")

    async def aclose(self) -> None:
        """Kill every sandbox (in-flight runs then report the close); later runs raise."""
        pool = self._pool
        if pool.closed:
            return
        pool.closed = True
        _fail(pool, SandboxError(f"the {self._backend} sandbox was closed"))  # runs waiting for a worker
        await asyncio.gather(*(_kill(pool, w) for w in list(pool.workers)), return_exceptions=True)
        while pool.tasks:  # spawns in flight kill their own sandbox once they see `closed`
            await asyncio.gather(*list(pool.tasks), return_exceptions=True)
        pool.idle.clear()
        if pool.root:
            shutil.rmtree(pool.root, ignore_errors=True)

    async def _acquire(self) -> _Worker:
        """The next free worker, first come first served (see "Fairness" above)."""
        pool = self._pool
        while True:
            if pool.error is not None:  # every run sees it, waiting or later
                raise SandboxError(str(pool.error)) from pool.error
            worker = pool.idle.popleft() if pool.idle else await _wait_turn(pool)
            if worker is not None and worker in pool.workers:
                if worker.channel.closed:  # its server died while idle
                    _retire(pool, worker)
                    continue
                return worker

    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        request: dict[str, Any] = {"history": list(history), "code": code}
        for _ in range(2):  # a second attempt only after a stale reply (reuse mode)
            request_id = os.urandom(8).hex() if self._reuse else None
            if request_id is not None:
                request["id"] = request_id
            payload = json.dumps(request).encode("ascii")
            outcome = await self._attempt(len(payload).to_bytes(_FRAME, "big") + payload, request_id,
                                          timeout_s)
            if outcome is not None:
                return outcome
        return ExecResult(stdout="", error="RuntimeError: malformed reply from the sandbox server",
                          timed_out=False, duration_s=0.0)

    async def _attempt(self, frame: bytes, request_id: str | None, timeout_s: float) -> ExecResult | None:
        """One run on one worker; None when its reply was stale (another run's id)."""
        worker = await self._acquire()
        started = time.monotonic()
        keep = False
        # A bare timer on the reply's future, not `asyncio.timeout` (a context manager and a task
        # reschedule per run). A timed-out or cancelled run retires the worker either way.
        reply_future = worker.channel.send(frame)
        timer = asyncio.get_running_loop().call_later(timeout_s, _expire, reply_future)
        try:
            try:
                reply = json.loads(await reply_future)
            except TimeoutError:
                return _result("", timeout_message(timeout_s), True, started)
            except _Overflow:
                return _result(
                    "", f"RuntimeError: sandbox output exceeded {self.limits.max_output_bytes} bytes",
                    False, started)
            except (ConnectionError, OSError, ValueError):
                if self.closed:
                    return _result("", "RuntimeError: the sandbox was closed while the code ran",
                                   False, started)
                return _result("", "RuntimeError: sandbox server died", False, started)
            if (request_id is not None and isinstance(reply, dict) and "signal" not in reply
                    and reply.get("id") != request_id):
                logger.warning("sandbox_stale_reply", backend=self._backend)
                return None
            stdout, error, timed_out, keep = self._interpret(reply, timeout_s)
            return _result(stdout, error, timed_out, started)
        finally:
            timer.cancel()
            _release(self._pool, worker, keep)

    def _interpret(self, reply: Any, timeout_s: float) -> tuple[str, str | None, bool, bool]:
        """(stdout, error, timed_out, keep_worker) from the server's reply."""
        if not isinstance(reply, dict):
            return "", "RuntimeError: malformed reply from the sandbox server", False, False
        keep = not reply.get("dirty")
        if reply.get("overflow"):
            return "", f"RuntimeError: sandbox output exceeded {self.limits.max_output_bytes} bytes", False, keep
        if "signal" in reply:
            number = int(reply["signal"])
            cpu = float(reply.get("cpu_s", 0.0))
            if number in (signal.SIGXCPU, signal.SIGKILL) and cpu >= self.limits.cpu_s - 0.5:
                return "", timeout_message(timeout_s), True, False  # RLIMIT_CPU
            try:
                name = signal.Signals(number).name
                return "", f"RuntimeError: sandbox process died ({name}, signal {number})", False, False
            except ValueError:
                return "", f"RuntimeError: sandbox process died (signal {number})", False, False
        fatal = reply.get("fatal")
        if isinstance(fatal, str):
            logger.error("sandbox_setup_failed", backend=self._backend, detail=fatal)
            return "", f"RuntimeError: {fatal}", False, False
        stdout, error = reply.get("stdout"), reply.get("error")
        if isinstance(stdout, str) and (error is None or isinstance(error, str)):
            return stdout, error, False, keep
        return "", "RuntimeError: malformed reply from the sandbox server", False, False


async def _wait_turn(pool: _Pool) -> _Worker | None:
    """Queue up behind the runs already waiting; the worker `_offer` hands over, or None once
    `pool.error` is set."""
    waiter: asyncio.Future[_Worker | None] = asyncio.get_running_loop().create_future()
    pool.waiters.append(waiter)
    try:
        return await waiter
    except asyncio.CancelledError:
        if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
            _offer(pool, waiter.result())  # handed over just as we were cancelled: pass it on
        else:
            with contextlib.suppress(ValueError):
                pool.waiters.remove(waiter)
        raise


def _result(stdout: str, error: str | None, timed_out: bool, started: float) -> ExecResult:
    return ExecResult(stdout=stdout, error=error, timed_out=timed_out,
                      duration_s=time.monotonic() - started)
