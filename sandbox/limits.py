"""Resource limits for one sandboxed code run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sandbox.image import IMAGE

__all__ = ["FRESH_MAX_USES", "REUSE_MAX_USES", "SandboxLimits", "default_max_uses"]

FRESH_MAX_USES = 100  # the Docker issue's default: a container per 100 fresh-process runs
# Reuse mode: a replacement (~1 CPU-s) must be rare against ~0.2 ms runs. What one run can leave
# behind lives in the worker process, which a fresh fork replaces every `worker_runs` runs; the
# sandbox around it is checked clean after every run, so it can serve far longer.
REUSE_MAX_USES = 100_000


def default_max_uses(reuse_process: bool) -> int:
    """The runtime's `max_uses` when none is given, for the mode."""
    return REUSE_MAX_USES if reuse_process else FRESH_MAX_USES


def _default_concurrency() -> int:
    return 2 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class SandboxLimits:
    """Limits applied to every run, validated on construction (no I/O here).

    `memory_mb`, `cpu_s`, `file_size_mb` and `nproc` become RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE
    and RLIMIT_NPROC inside the sandbox (soft = hard, so user code cannot raise them).
    `tmpfs_mb` caps each writable tmpfs (/tmp, /dev/shm). `max_output_bytes` caps what we read
    back from one run, so a flood cannot exhaust the runtime's memory. `max_concurrency` bounds
    the number of sandbox processes alive at once. `python` is the interpreter run inside the
    sandbox; `uid`/`gid` the unprivileged identity it runs as when we are root (RLIMIT_NPROC does
    not bind root).

    Pools (the Docker backend always; bwrap with `bwrap_pool`): `pool_size` warm sandboxes
    (default 2 × CPUs), each serving one run at a time and replaced after `max_uses` runs
    (`max_concurrency` bounds only one-shot bwrap processes). `reuse_process`: each server runs
    its requests in one process, resetting its state between runs, instead of a fresh forked
    process per run — ≈ 10-40x the throughput with a large `max_uses` (thousands: a replacement
    costs ~1 CPU-s), weaker isolation between runs on one sandbox (see
    `sandbox/server.py`); implies `bwrap_pool` for bwrap. There, `worker_runs` bounds how long
    one process's leftovers can last: after that many runs the sandbox's supervisor (which never
    runs user code) forks a fresh worker from its preloaded image — a fork, milliseconds, where
    replacing the sandbox costs ~1 CPU-s. Docker only: per container a cgroup
    memory limit of `container_memory_mb` (memory+swap the same: no swap), `pids_limit`
    processes and `cpus` CPUs; `image` is what `cli.py sandbox build` produces.
    """

    memory_mb: int = 1024
    cpu_s: int = 20
    file_size_mb: int = 16
    nproc: int = 64
    tmpfs_mb: int = 64
    max_output_bytes: int = 1_000_000
    max_concurrency: int = field(default_factory=_default_concurrency)
    python: str = "/usr/bin/python3"
    uid: int = 65534
    gid: int = 65534
    pool_size: int = field(default_factory=_default_concurrency)
    max_uses: int = FRESH_MAX_USES  # the runtime passes REUSE_MAX_USES with reuse_process
    container_memory_mb: int = 1536
    pids_limit: int = 128
    cpus: float = 1.0
    image: str = IMAGE
    reuse_process: bool = False
    worker_runs: int = 1_000
    bwrap_pool: bool = False

    def __post_init__(self) -> None:
        minimums = {
            # A python interpreter with sympy imported needs well over 64 MiB of address space.
            "memory_mb": 64,
            "cpu_s": 1,
            "file_size_mb": 1,
            # bwrap's init, the interpreter and a little room for user code.
            "nproc": 4,
            "tmpfs_mb": 1,
            # The reply of an ordinary run is a few hundred bytes; below 4 KiB errors get cut.
            "max_output_bytes": 4096,
            "max_concurrency": 1,
            "uid": 0,
            "gid": 0,
            "pool_size": 1,
            "max_uses": 1,
            "worker_runs": 1,
            # the server, its init and one child, with room for user code's helpers.
            "pids_limit": 8,
            "container_memory_mb": 128,
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"SandboxLimits.{name} must be an int, got {value!r}")
            if value < minimum:
                raise ValueError(f"SandboxLimits.{name} must be >= {minimum}, got {value}")
        for name in ("reuse_process", "bwrap_pool"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SandboxLimits.{name} must be a bool, got {getattr(self, name)!r}")
        if isinstance(self.cpus, bool) or not isinstance(self.cpus, (int, float)) or not self.cpus >= 0.01:
            raise ValueError(f"SandboxLimits.cpus must be a number >= 0.01, got {self.cpus!r}")
        if not isinstance(self.image, str) or not self.image:
            raise ValueError(f"SandboxLimits.image must be a non-empty image name, got {self.image!r}")
        if not isinstance(self.python, str) or not os.path.isabs(self.python):
            raise ValueError(
                f"SandboxLimits.python must be an absolute path to an interpreter, got {self.python!r}"
            )
