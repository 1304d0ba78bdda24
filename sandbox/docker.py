"""The Docker backend: a warm pool of hardened containers, each a long-lived executor server.

Each container runs `executor.py serve` (see its "server mode" comment): it preloads sympy and
numpy once, then serves ONE request at a time, each in a fresh forked child (rlimits, then
history replay + the new code), and after each run kills every leftover process and empties
/tmp. The child is pre-forked (forked and limited after the previous run's cleanup, waiting for
its request), so the fork is off the critical path. No interpreter state survives a run; a crash or a runaway run kills only that child.

Transport — a unix socket, not attached stdio: the runtime binds a socket in a private host
directory that is bind-mounted READ-ONLY into the container (a socket can be connected through a
read-only mount; nothing can be created there), and the server connects out to it. A round trip
is a `send` and a `recv` on a local socket (tens of µs), where attached stdio goes through the
Docker daemon's stream copier (≈ 3.5 ms a round trip here) and `docker exec` costs far more.
Frames are a 4-byte length + JSON. This needs the engine on this machine (not a remote
DOCKER_HOST).

Isolation of every container: `--network none`, `--ipc none`, read-only root, a size-capped
noexec tmpfs on /tmp owned by the sandbox uid (`uid=`/`gid=` options), cgroup memory = memory+
swap, `--pids-limit`, a CPU quota, `--cap-drop ALL`, `no-new-privileges`, a non-root user,
`--init` (so SIGTERM/SIGKILL semantics are those of a real init), an explicit minimal
environment, no logs, and no host mount but the socket directory. The server sets itself
non-dumpable so a same-uid child cannot ptrace it.

Lifecycle: a run that times out, is cancelled, whose child died by a signal, whose server
vanished, that left something it could not clean, or that reached its budget retires its
container: `docker kill` (a python PID 1 would ignore SIGTERM; `--init` and SIGKILL do not care)
and `auto_remove`, then a replacement starts in the background. Planned retirement costs no
waiting: a container whose budget is nearly spent (the last quarter) starts its successor
first and keeps serving meanwhile, and the budgets of the first pool are staggered (`max_uses`,
then 3/4, 1/2, ... of it), so containers do not all come up for replacement at once; a run
waits on a start-up only when no other container is there (a pool of one, or crashes).
Background tasks hold a small `_Pool` state, never the sandbox (STYLE.md 6); `aclose()` ends
them. Containers are labelled
`alphamath.sandbox`; start-up removes those whose owning process is gone (crashed runs), and
`clean_containers()` (`cli.py sandbox clean`) removes them on demand. Pool start is concurrent,
and `run()` takes the first container that is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import tempfile
import time
import warnings
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from sandbox.base import ExecResult
from sandbox.bwrap import _executor_source, timeout_message
from sandbox.errors import SandboxError, SandboxUnavailable
from sandbox.image import BUILD_COMMAND
from sandbox.limits import SandboxLimits

__all__ = ["DockerSandbox", "clean_containers", "docker_ready"]

logger = structlog.get_logger(__name__)

LABEL = "alphamath.sandbox"
OWNER_LABEL = "alphamath.owner"
PRELOAD = ("sympy", "numpy")
_MOUNT = "/run/alphamath"
_SOCKET = "s"
_FRAME = 4
_START_TIMEOUT_S = 120.0
_MAX_START_FAILURES = 3
_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_NO_ENGINE = (
    "no Docker engine answers: install and start one (as root: `apt-get install -y docker.io && "
    "dockerd >/tmp/dockerd.log 2>&1 &`, or `scripts/ensure_docker.sh`), or use --sandbox bwrap"
)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's (a shared engine): not ours to judge
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _client() -> Any:
    import docker

    try:
        return docker.from_env(timeout=30)
    except docker.errors.DockerException as exc:
        raise SandboxUnavailable(f"{_NO_ENGINE} ({str(exc).split(':')[0]})") from None


def docker_ready(image: str) -> str | None:
    """None when an engine answers and has `image`, else the reason with the fix (blocking)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not os.path.exists(host[len("unix://"):]):
        return _NO_ENGINE  # (and the docker SDK leaks the socket of a failed connect)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        reason = _docker_ready(image)
        gc.collect()
    return reason


def _docker_ready(image: str) -> str | None:
    try:
        client = _client()
    except Exception:
        return _NO_ENGINE
    try:
        client.ping()
        # `images.list`, not `images.get`: a 404's response would keep its socket alive.
        if not any(image in (img.tags or []) for img in client.images.list(name=image.split(":")[0])):
            return f"the sandbox image {image} is missing: run `{BUILD_COMMAND}` (once per machine)"
    except Exception:
        return _NO_ENGINE
    finally:
        client.close()
    return None


def clean_containers(*, include_live: bool = False) -> int:
    """Remove labelled sandbox containers of dead owners (all of them with `include_live`);
    returns how many were removed. Blocking: call it from a thread in async code."""
    client = _client()
    removed = 0
    try:
        for container in client.containers.list(all=True, filters={"label": LABEL}, ignore_removed=True):
            owner = container.labels.get(OWNER_LABEL, "")
            if include_live or not _owner_alive(owner):
                with contextlib.suppress(Exception):
                    container.remove(force=True)
                    removed += 1
    finally:
        client.close()
    return removed


class _Overflow(Exception):
    pass


async def _read_frame(reader: asyncio.StreamReader, cap: int) -> Any:
    size = int.from_bytes(await reader.readexactly(_FRAME), "big")
    if size > cap:
        raise _Overflow
    return json.loads(await reader.readexactly(size))


@dataclass(eq=False)
class _Worker:
    container: Any
    sockdir: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    budget: int  # runs before retirement (<= max_uses; the first pool's budgets are staggered)
    uses: int = 0
    successor: bool = False  # its replacement is already starting


@dataclass(eq=False)
class _Pool:
    """What the pool's background tasks share with `DockerSandbox`: they take this, never the
    sandbox itself (STYLE.md 6), and `DockerSandbox.aclose()` shuts them down through it."""

    limits: SandboxLimits
    command: list[str]
    client: Any = None
    root: str = ""
    idle: asyncio.Queue[_Worker | BaseException] = field(default_factory=asyncio.Queue)
    workers: set[_Worker] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    failures: int = 0
    closed: bool = False


def _background(pool: _Pool, coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro)
    pool.tasks.add(task)
    task.add_done_callback(pool.tasks.discard)


def _spawn_later(pool: _Pool, budget: int, delay_s: float = 0.0) -> None:
    _background(pool, _spawn(pool, budget, delay_s))


async def _spawn(pool: _Pool, budget: int, delay_s: float) -> None:
    """Start one container and add it to the pool; on failure retry with a back-off."""
    if delay_s:
        await asyncio.sleep(delay_s)
    if pool.closed:
        return
    try:
        worker = await _start_container(pool, budget)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        pool.failures += 1
        logger.error("sandbox_container_start_failed", backend="docker", error=str(exc),
                     failures=pool.failures)
        if pool.failures >= _MAX_START_FAILURES and not pool.workers:
            pool.idle.put_nowait(SandboxError(f"Docker sandbox containers fail to start: {exc}"))
        else:
            _spawn_later(pool, budget, min(0.5 * pool.failures, 5.0))
        return
    pool.failures = 0
    if pool.closed:
        await _kill(pool, worker)
        return
    pool.workers.add(worker)
    pool.idle.put_nowait(worker)


def _run_kwargs(pool: _Pool, sockdir: str) -> dict[str, Any]:
    from docker.types import LogConfig

    limits = pool.limits
    uid, gid = limits.uid, limits.gid
    memory = f"{limits.container_memory_mb}m"
    return {
        "image": limits.image,
        "command": pool.command,
        "detach": True,
        "auto_remove": True,
        "init": True,
        "user": f"{uid}:{gid}",
        "network_mode": "none",
        "ipc_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={limits.tmpfs_mb}m,uid={uid},gid={gid}"},
        "mem_limit": memory,
        "memswap_limit": memory,
        "pids_limit": limits.pids_limit,
        "nano_cpus": int(limits.cpus * 1e9),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "environment": dict(_ENV),
        "volumes": {sockdir: {"bind": _MOUNT, "mode": "ro"}},
        "labels": {LABEL: "1", OWNER_LABEL: _owner()},
        "working_dir": "/tmp",
        "hostname": "sandbox",
        "log_config": LogConfig(type="none"),
    }


async def _start_container(pool: _Pool, budget: int) -> _Worker:
    sockdir = tempfile.mkdtemp(dir=pool.root)
    os.chmod(sockdir, 0o755)
    path = os.path.join(sockdir, _SOCKET)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    container = None
    try:
        listener.bind(path)
        os.chmod(path, 0o777)  # the container's non-root user connects
        listener.listen(1)
        listener.setblocking(False)
        container = await asyncio.to_thread(pool.client.containers.run, **_run_kwargs(pool, sockdir))
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(_START_TIMEOUT_S):
            conn, _ = await loop.sock_accept(listener)
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=1 << 20)
            hello = await _read_frame(reader, 4096)
        if not isinstance(hello, dict) or not hello.get("hello"):
            raise SandboxError(f"unexpected hello from the sandbox server: {hello!r}")
        return _Worker(container=container, sockdir=sockdir, reader=reader, writer=writer,
                       budget=budget)
    except BaseException:
        if container is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(container.kill)
        shutil.rmtree(sockdir, ignore_errors=True)
        raise
    finally:
        listener.close()


async def _kill(pool: _Pool, worker: _Worker) -> None:
    """`docker kill` (auto_remove then deletes it) and forget the worker."""
    import docker.errors

    pool.workers.discard(worker)
    worker.writer.close()
    try:
        await asyncio.to_thread(worker.container.kill, signal="SIGKILL")
    except docker.errors.NotFound:
        pass  # already gone (its server died and --rm removed it)
    except docker.errors.APIError as exc:
        if "is not running" not in str(exc):
            logger.warning("sandbox_kill_failed", backend="docker", error=str(exc))
            with contextlib.suppress(Exception):
                await asyncio.to_thread(worker.container.remove, force=True)
    finally:
        shutil.rmtree(worker.sockdir, ignore_errors=True)


def _retire(pool: _Pool, worker: _Worker) -> None:
    """Kill `worker`'s container in the background; start its replacement unless that already
    started (`successor`)."""
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
    pool.idle.put_nowait(worker)


class DockerSandbox:
    """`Sandbox` backed by a warm pool of Docker containers. `await start()` (or use
    `open_sandbox("docker")`) before `run()`; `aclose()` kills every container."""

    def __init__(self, limits: SandboxLimits | None = None, *, preload: Sequence[str] = PRELOAD) -> None:
        self.limits = limits or SandboxLimits()
        config = {
            "limits": {
                "memory_mb": self.limits.memory_mb,
                "cpu_s": self.limits.cpu_s,
                "file_size_mb": self.limits.file_size_mb,
                "max_output_bytes": self.limits.max_output_bytes,
            },
            "preload": list(preload),
        }
        command = [self.limits.python, "-I", "-B", "-c", _executor_source(), "serve",
                   f"{_MOUNT}/{_SOCKET}", json.dumps(config)]
        self._pool = _Pool(limits=self.limits, command=command)
        self._started = False
        # The reply is capped in the container to max_output_bytes; allow for JSON framing.
        self._cap = self.limits.max_output_bytes + 4096

    @property
    def _workers(self) -> set[_Worker]:
        return self._pool.workers

    @property
    def _closed(self) -> bool:
        return self._pool.closed

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Check engine and image, sweep leftovers, start the pool; wait for the first container."""
        if self._started:
            return
        pool = self._pool
        reason = await asyncio.to_thread(docker_ready, self.limits.image)
        if reason is not None:
            raise SandboxUnavailable(reason)
        pool.client = await asyncio.to_thread(_client)
        swept = await asyncio.to_thread(clean_containers)
        if swept:
            logger.info("sandbox_swept_leftovers", backend="docker", containers=swept)
        pool.root = tempfile.mkdtemp(prefix="alphamath-docker-")
        self._started = True
        # Staggered budgets (max_uses, then 3/4, 1/2, ... of it for a pool of 4): the first
        # containers reach the end of their budgets at different times, not all at once.
        size, max_uses = self.limits.pool_size, self.limits.max_uses
        for i in range(size):
            _spawn_later(pool, max_uses - (i * max_uses) // size)
        # The first run must not wait for the whole pool, but start() reports a broken setup.
        first = await pool.idle.get()
        if isinstance(first, BaseException):
            await self.aclose()
            raise SandboxUnavailable(f"cannot start a sandbox container: {first}") from first
        pool.idle.put_nowait(first)

    async def aclose(self) -> None:
        """Kill every container (in-flight runs then report the close); later runs raise."""
        pool = self._pool
        if pool.closed:
            return
        pool.closed = True
        await asyncio.gather(*(_kill(pool, w) for w in list(pool.workers)), return_exceptions=True)
        while pool.tasks:  # spawns in flight kill their own container once they see `closed`
            await asyncio.gather(*list(pool.tasks), return_exceptions=True)
        while not pool.idle.empty():
            pool.idle.get_nowait()
        if pool.client is not None:
            with contextlib.suppress(Exception):
                pool.client.close()
        if pool.root:
            shutil.rmtree(pool.root, ignore_errors=True)

    # --- runs --------------------------------------------------------------------------------

    async def _acquire(self) -> _Worker:
        pool = self._pool
        while True:
            item = await pool.idle.get()
            if isinstance(item, BaseException):
                pool.idle.put_nowait(item)  # every waiter sees it
                raise SandboxError(str(item)) from item
            if item in pool.workers:
                if item.reader.at_eof():  # its server died while idle
                    _retire(pool, item)
                    continue
                return item

    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        if self._closed:
            raise RuntimeError("DockerSandbox.run() called after aclose()")
        if not self._started:
            raise RuntimeError("DockerSandbox.run() called before start()")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        payload = json.dumps({"history": list(history), "code": code}).encode("ascii")
        frame = len(payload).to_bytes(_FRAME, "big") + payload
        worker = await self._acquire()
        started = time.monotonic()
        keep = False
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    worker.writer.write(frame)
                    await worker.writer.drain()
                    reply = await _read_frame(worker.reader, self._cap)
            except TimeoutError:
                return self._result("", timeout_message(timeout_s), True, started)
            except _Overflow:
                return self._result(
                    "", f"RuntimeError: sandbox output exceeded {self.limits.max_output_bytes} bytes",
                    False, started)
            except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
                if self._closed:
                    return self._result("", "RuntimeError: the sandbox was closed while the code ran",
                                        False, started)
                return self._result("", "RuntimeError: sandbox server died", False, started)
            stdout, error, timed_out, keep = self._interpret(reply, timeout_s)
            return self._result(stdout, error, timed_out, started)
        finally:
            _release(self._pool, worker, keep)

    @staticmethod
    def _result(stdout: str, error: str | None, timed_out: bool, started: float) -> ExecResult:
        return ExecResult(stdout=stdout, error=error, timed_out=timed_out,
                          duration_s=time.monotonic() - started)

    def _interpret(self, reply: Any, timeout_s: float) -> tuple[str, str | None, bool, bool]:
        """(stdout, error, timed_out, keep_container) from the server's reply."""
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
            logger.error("sandbox_setup_failed", backend="docker", detail=fatal)
            return "", f"RuntimeError: {fatal}", False, False
        stdout, error = reply.get("stdout"), reply.get("error")
        if isinstance(stdout, str) and (error is None or isinstance(error, str)):
            return stdout, error, False, keep
        return "", "RuntimeError: malformed reply from the sandbox server", False, False

    async def check(self) -> None:
        """Run `print(1)`; raise SandboxUnavailable if that fails."""
        result = await self.run("print(1)", timeout_s=60)
        if result.error is not None or result.stdout != "1":
            raise SandboxUnavailable(f"the Docker sandbox cannot run code: {result.observation}")
