"""The Docker backend: a warm pool (`sandbox/pool.py`) of hardened containers, each a
long-lived executor server (`sandbox/server.py`).

Each container preloads sympy and numpy once, then serves ONE request at a time: by default each
in a fresh pre-forked child (no interpreter state survives a run; a crash or a runaway run kills
only that child), or, with `SandboxLimits.reuse_process`, in the server's worker process itself
with its state reset between runs (≈ 40x the throughput of trivial runs with a large
`max_uses`, which it needs: a container start costs ~1 CPU-s; see server.py for what it does not
isolate). The pool connects to the server through a unix socket in a host directory mounted
read-only at `pool.MOUNT`; this needs the engine on this machine (not a remote DOCKER_HOST).

Isolation of every container: `--network none`, `--ipc none`, read-only root, a size-capped
noexec tmpfs on /tmp owned by the sandbox uid (`uid=`/`gid=` options), cgroup memory = memory+
swap, `--pids-limit`, a CPU quota, `--cap-drop ALL`, `no-new-privileges`, a non-root user,
`--init` (so SIGTERM/SIGKILL semantics are those of a real init), an explicit minimal
environment, no logs, and no host mount but the socket directory. The server sets itself
non-dumpable so a same-uid child cannot ptrace it.

A retired container is `docker kill`ed and removed by `auto_remove`. Containers are labelled
`alphamath.sandbox`; start-up removes those whose owning process is gone (crashed runs), and
`clean_containers()` (`cli.py sandbox clean`) removes them on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from sandbox.base import ExecResult
from sandbox.errors import SandboxUnavailable
from sandbox.image import BUILD_COMMAND
from sandbox.limits import SandboxLimits
from sandbox.pool import MOUNT, PRELOAD, WorkerPool, executor_source, server_config

__all__ = ["DockerSandbox", "clean_containers", "docker_ready"]

logger = structlog.get_logger(__name__)

LABEL = "alphamath.sandbox"
OWNER_LABEL = "alphamath.owner"
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


def _run_kwargs(limits: SandboxLimits, command: list[str], sockdir: str) -> dict[str, Any]:
    from docker.types import LogConfig

    uid, gid = limits.uid, limits.gid
    memory = f"{limits.container_memory_mb}m"
    return {
        "image": limits.image,
        "command": command,
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
        "volumes": {sockdir: {"bind": MOUNT, "mode": "ro"}},
        "labels": {LABEL: "1", OWNER_LABEL: _owner()},
        "working_dir": "/tmp",
        "hostname": "sandbox",
        "log_config": LogConfig(type="none"),
    }


@dataclass(eq=False)
class _DockerLauncher:
    """`pool.Launcher` for hardened containers; a handle is a docker-py `Container`."""

    limits: SandboxLimits
    command: list[str]
    client: Any = None
    backend: str = "docker"

    async def start(self, sockdir: str) -> Any:
        return await asyncio.to_thread(self.client.containers.run,
                                       **_run_kwargs(self.limits, self.command, sockdir))

    async def ended(self, handle: Any) -> str:
        # Waiting on a container holds a thread of the default executor; errors in `start`
        # and the start-up timeout cover a container that dies before its server connects.
        await asyncio.Event().wait()
        return ""

    async def kill(self, handle: Any) -> None:
        """`docker kill` (a python PID 1 would ignore SIGTERM; `--init` and SIGKILL do not
        care); `auto_remove` then deletes it."""
        import docker.errors

        try:
            await asyncio.to_thread(handle.kill, signal="SIGKILL")
        except docker.errors.NotFound:
            pass  # already gone (its server died and --rm removed it)
        except docker.errors.APIError as exc:
            if "is not running" not in str(exc):
                logger.warning("sandbox_kill_failed", backend="docker", error=str(exc))
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(handle.remove, force=True)


class DockerSandbox:
    """`Sandbox` backed by a warm pool of Docker containers. `await start()` (or use
    `open_sandbox("docker")`) before `run()`; `aclose()` kills every container."""

    def __init__(self, limits: SandboxLimits | None = None, *, preload: Sequence[str] = PRELOAD) -> None:
        self.limits = limits or SandboxLimits()
        command = [self.limits.python, "-I", "-B", "-c", executor_source(), "serve",
                   f"{MOUNT}/s", server_config(self.limits, preload, nproc=False)]
        self._launcher = _DockerLauncher(limits=self.limits, command=command)
        self._pool = WorkerPool(self.limits, self._launcher)
        self._started = False

    @property
    def _workers(self) -> set[Any]:
        return self._pool.workers

    @property
    def _closed(self) -> bool:
        return self._pool.closed

    async def start(self) -> None:
        """Check engine and image, sweep leftovers, start the pool; wait for the first container."""
        if self._started:
            return
        reason = await asyncio.to_thread(docker_ready, self.limits.image)
        if reason is not None:
            raise SandboxUnavailable(reason)
        self._launcher.client = await asyncio.to_thread(_client)
        swept = await asyncio.to_thread(clean_containers)
        if swept:
            logger.info("sandbox_swept_leftovers", backend="docker", containers=swept)
        self._started = True
        await self._pool.start()

    async def wait_ready(self) -> None:
        """Wait until every container of the pool is up (`start()` waits for the first only);
        raise SandboxError when they fail to start. For measurements of the steady state."""
        if not self._started:
            raise RuntimeError("DockerSandbox.wait_ready() called before start()")
        await self._pool.wait_ready()

    @property
    def workers_started(self) -> int:
        """How many containers have come up so far: the first pool, then every replacement."""
        return self._pool.workers_started

    async def aclose(self) -> None:
        """Kill every container (in-flight runs then report the close); later runs raise."""
        await self._pool.aclose()
        if self._launcher.client is not None:
            with contextlib.suppress(Exception):
                self._launcher.client.close()

    async def run(self, code: str, *, history: Sequence[str] = (), timeout_s: float) -> ExecResult:
        if self._closed:
            raise RuntimeError("DockerSandbox.run() called after aclose()")
        if not self._started:
            raise RuntimeError("DockerSandbox.run() called before start()")
        return await self._pool.run(code, history=history, timeout_s=timeout_s)

    async def check(self) -> None:
        """Run `print(1)`; raise SandboxUnavailable if that fails."""
        result = await self.run("print(1)", timeout_s=60)
        if result.error is not None or result.stdout != "1":
            raise SandboxUnavailable(f"the Docker sandbox cannot run code: {result.observation}")
