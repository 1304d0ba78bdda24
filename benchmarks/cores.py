"""Splitting this machine's cores between jobs that run side by side, and pinning a process to its
share. On a small CPU two jobs that each spread over every core slow each other far more than
sharing explains (`bench_side_by_side.py`: 2.31× the makespan of running in turn on 2 cores);
each pinned to its own cores they finish sooner than in turn (0.72×)."""

from __future__ import annotations

import os


def split_cores(parts: int) -> list[frozenset[int]]:
    """This process's allowed cores in `parts` disjoint, contiguous shares of near-equal size."""
    cores = sorted(os.sched_getaffinity(0))
    if not 1 <= parts <= len(cores):
        raise ValueError(f"cannot split {len(cores)} core(s) into {parts} shares")
    size, extra = divmod(len(cores), parts)
    shares, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        shares.append(frozenset(cores[start:end]))
        start = end
    return shares


def pinned_env(cores: frozenset[int]) -> dict[str, str]:
    """The thread-count variables a job on `cores` needs (OpenMP, which torch and vLLM's CPU
    kernels use, otherwise starts one thread per core of the machine, not of the share)."""
    return {"OMP_NUM_THREADS": str(len(cores))}


def pin_this_process(cores: frozenset[int]) -> None:
    """Pin the calling process (and every process it starts later) to `cores`; call before torch
    is imported, which reads OMP_NUM_THREADS once."""
    os.sched_setaffinity(0, cores)
    os.environ.update(pinned_env(cores))
