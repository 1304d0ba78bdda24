"""The process-pool machinery behind `Grader`: memory-capped spawn workers, slots, an LRU.

Kept apart from `grader.py` so the policy (what to grade, when to time out) reads on its own.
Nothing here knows what a comparison is; a worker runs whatever picklable task it is handed.
Workers are started with "spawn" (never "fork": the caller may have threads) and capped by
`RLIMIT_AS`, so a sympy blow-up is a MemoryError (or a dead worker, which is replaced), not a
machine-wide OOM. Timeouts are enforced from outside by killing the pool, never with signals.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Generic, Hashable, TypeVar

import structlog

log = structlog.get_logger("evals.grader")

K = TypeVar("K", bound=Hashable)


def init_worker(memory_limit: int | None, barrier: Any) -> None:
    import logging
    import resource

    global _worker_barrier
    _worker_barrier = barrier
    if memory_limit is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    # math-verify warns once per process that we disabled its (signal) timeouts: we know.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import evals.equivalence  # noqa: F401 - import once here, not inside the first comparison


_worker_barrier: Any = None


def ping(timeout_s: float) -> int:
    """Wait until every worker of the pool runs a ping: proves all of them started."""
    _worker_barrier.wait(timeout_s)
    return os.getpid()


# --- small thread-safe parts -------------------------------------------------------------------


class Slots:
    """A semaphore whose acquire returns a Future, so threads (`.result()`) and coroutines
    (`await asyncio.wrap_future`) can both wait for it without blocking an event loop."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: list[cf.Future[None]] = []
        self._lock = threading.Lock()

    def acquire(self) -> cf.Future[None]:
        ticket: cf.Future[None] = cf.Future()
        with self._lock:
            if self._free > 0:
                self._free -= 1
                ticket.set_running_or_notify_cancel()
                ticket.set_result(None)
            else:
                self._waiters.append(ticket)
        return ticket

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                ticket = self._waiters.pop(0)
                if ticket.set_running_or_notify_cancel():  # False: the waiter gave up
                    break
            else:
                self._free += 1
                return
        ticket.set_result(None)


class LRU(Generic[K]):
    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[K, bool] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key: K) -> bool | None:
        with self._lock:
            verdict = self._data.get(key)
            if verdict is not None:
                self._data.move_to_end(key)
            return verdict

    def put(self, key: K, verdict: bool) -> None:
        with self._lock:
            self._data[key] = verdict
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(eq=False)
class Pool:
    executor: cf.ProcessPoolExecutor
    ready: cf.Future[None]  # set once every worker answered a ping
    processes: list[Any] = field(default_factory=list)


def kill(pool: Pool) -> None:
    """Kill the workers (a hung one never returns by itself) and let the executor wind down."""
    procs = {id(p): p for p in pool.processes}
    procs.update({id(p): p for p in (pool.executor._processes or {}).values()})
    for proc in procs.values():
        try:
            proc.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
    pool.executor.shutdown(wait=False)


class State:
    """What a Grader owns that must be cleaned up; kept apart so a finalizer needn't hold self."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pool: Pool | None = None
        self.closed = False

    def close(self) -> None:
        with self.lock:
            self.closed = True
            pool, self.pool = self.pool, None
        if pool is not None:
            kill(pool)


def discard(state: State, pool: Pool, reason: str) -> None:
    """Drop `pool` (if still current) and kill its workers; the next call builds a new one."""
    with state.lock:
        if state.pool is pool:
            state.pool = None
    log.warning("grader_pool_replaced", reason=reason)
    kill(pool)


def watch_abandoned(
    state: State, pool: Pool, fut: cf.Future[bool], timeout_s: float | None
) -> None:
    """A cancelled caller no longer enforces its timeout: a timer thread does, so a hung
    comparison nobody waits for cannot hold a worker forever. Holds no Grader reference."""
    if timeout_s is None or fut.done():
        return

    def check() -> None:
        if not fut.done():
            discard(state, pool, "timeout (caller cancelled)")

    timer = threading.Timer(timeout_s, check)
    timer.daemon = True
    timer.start()




def start_pool(ctx: Any, n: int, memory_limit: int | None, startup_timeout_s: float) -> Pool:
    """Start `n` spawn workers; the Pool's `ready` is set once every one answered a ping."""
    barrier = ctx.Barrier(n)
    executor = cf.ProcessPoolExecutor(
        n,
        mp_context=ctx,
        initializer=init_worker,
        initargs=(memory_limit, barrier),
    )
    ready: cf.Future[None] = cf.Future()
    ready.set_running_or_notify_cancel()  # shared by many waiters: nobody may cancel it
    pool = Pool(executor, ready)
    pings = [executor.submit(ping, startup_timeout_s) for _ in range(n)]
    pool.processes = list(executor._processes.values())  # all n are started by now
    remaining = [n]
    lock = threading.Lock()

    def onping(f: cf.Future[int]) -> None:
        exc = f.exception()
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if ready.done():
            return
        if exc is not None:
            try:
                ready.set_exception(exc)
            except cf.InvalidStateError:
                pass
        elif last:
            try:
                ready.set_result(None)
            except cf.InvalidStateError:
                pass

    for p in pings:
        p.add_done_callback(onping)
    return pool
