"""Resource limits for one sandboxed code run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["SandboxLimits"]


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
        }
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"SandboxLimits.{name} must be an int, got {value!r}")
            if value < minimum:
                raise ValueError(f"SandboxLimits.{name} must be >= {minimum}, got {value}")
        if not isinstance(self.python, str) or not os.path.isabs(self.python):
            raise ValueError(
                f"SandboxLimits.python must be an absolute path to an interpreter, got {self.python!r}"
            )
