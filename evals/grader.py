"""Answer equivalence: `is_equiv(reference, prediction) -> bool`, safe from any thread or loop.

Equivalence itself is math-verify's (`parse` + `verify`), always called with its own timeouts
OFF: math-verify implements them with `signal.alarm`, which only works in a main thread and
would fire into whatever else runs there. Instead a `Grader` runs each comparison in a worker of
its own process pool and enforces the timeout from outside: a comparison that overruns (sympy
can take minutes on `2^{2^{2^{100}}}`) gets the verdict False, and the whole pool is killed and
replaced on next use. Workers are started with "spawn" (never "fork": the caller may have
threads) and capped by `RLIMIT_AS`, so a blow-up is a MemoryError inside the worker, not an OOM.

Cheap cases never reach the pool: None or empty → False (both None → False too: there is
nothing to be right about); equal after normalising → True; longer than `max_chars` → False.
Verdicts are cached (LRU). Nothing raises out of `is_equiv`: any failure is False.

The timeout clock of a comparison starts when it is handed to an idle worker, not when it is
queued: at most `max_workers` comparisons are in the pool at once, later ones wait for a slot.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import multiprocessing
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["Grader", "close_default_grader", "default_grader", "is_equiv"]

log = structlog.get_logger(__name__)

Reference = str | Sequence[str]
Task = Callable[[tuple[str, ...], str], bool]
_Key = tuple[tuple[str, ...], str]

_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_RETRIES = 1  # a comparison killed together with another one's timeout is tried once more


# --- normalisation and the comparison itself (the latter runs in workers) -----------------------


def _normalize(s: str) -> str:
    """Strip, drop one surrounding `$…$`, and remove thousands separators from plain numbers."""
    s = s.strip()
    if len(s) >= 2 and s[0] == "$" and s[-1] == "$" and "$" not in s[1:-1]:
        s = s[1:-1].strip()
    s = s.replace("{,}", ",")
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    return s


def _parse(s: str) -> list[Any]:
    from math_verify import parse

    # LatexExtractionConfig only looks inside math delimiters, so wrap bare answers in $…$
    # (a bare "\dfrac{1}{2}" or "\{1,2\}" parses to nothing otherwise); fall back to the raw
    # string for plain expressions such as "1/2".
    wrapped = s if s.startswith(("$", "\\(", "\\[")) else f"${s}$"
    parsed: list[Any] = parse(wrapped, parsing_timeout=None)  # type: ignore[arg-type]
    if not parsed:
        parsed = parse(s, parsing_timeout=None)  # type: ignore[arg-type]
    return parsed


def verify_answer(references: tuple[str, ...], prediction: str) -> bool:
    """The math-verify comparison, in this process and WITHOUT a timeout; workers run this.

    Inputs are expected normalised (`_normalize`). Any exception → False.
    """
    from math_verify import verify

    try:
        pred = _parse(prediction)
        if not pred:
            return False
        for reference in references:
            gold = _parse(reference)
            if gold and verify(gold, pred, timeout_seconds=None):  # type: ignore[arg-type]
                return True
        return False
    except Exception:  # noqa: BLE001 - a grader returns False rather than raise
        return False


def _init_worker(memory_limit: int | None, barrier: Any) -> None:
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
    import math_verify  # noqa: F401 - import once here, not inside the first timed comparison


_worker_barrier: Any = None


def _ping(timeout_s: float) -> int:
    """Wait until every worker of the pool runs a ping: proves all of them started."""
    _worker_barrier.wait(timeout_s)
    return os.getpid()


# --- small thread-safe parts -------------------------------------------------------------------


class _Slots:
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


class _LRU:
    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[_Key, bool] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def get(self, key: _Key) -> bool | None:
        with self._lock:
            verdict = self._data.get(key)
            if verdict is not None:
                self._data.move_to_end(key)
            return verdict

    def put(self, key: _Key, verdict: bool) -> None:
        with self._lock:
            self._data[key] = verdict
            self._data.move_to_end(key)
            while len(self._data) > self._maxsize:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(eq=False)
class _Pool:
    executor: cf.ProcessPoolExecutor
    ready: cf.Future[None]  # set once every worker answered a ping
    processes: list[Any] = field(default_factory=list)


def _kill(pool: _Pool) -> None:
    """Kill the workers (a hung one never returns by itself) and let the executor wind down."""
    procs = {id(p): p for p in pool.processes}
    procs.update({id(p): p for p in (pool.executor._processes or {}).values()})
    for proc in procs.values():
        try:
            proc.kill()
        except Exception:  # noqa: BLE001 - already gone
            pass
    pool.executor.shutdown(wait=False)


class _State:
    """What a Grader owns that must be cleaned up; kept apart so a finalizer needn't hold self."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pool: _Pool | None = None
        self.closed = False

    def close(self) -> None:
        with self.lock:
            self.closed = True
            pool, self.pool = self.pool, None
        if pool is not None:
            _kill(pool)


# --- the Grader ----------------------------------------------------------------------------------


class Grader:
    """Owns a process pool of math-verify workers, a verdict cache and the timeout policy.

    Use as a context manager or call `close()`. `is_equiv` is for threads, `ais_equiv` for
    coroutines (never blocks the loop), `grade_many` grades a batch in parallel.
    `task` is the comparison run in a worker (a picklable top-level function); tests swap in a
    slow one to exercise the timeout path.
    """

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        memory_limit_bytes: int | None = 2 << 30,
        max_chars: int = 4096,
        cache_size: int = 100_000,
        startup_timeout_s: float = 120.0,
        mp_context: str = "spawn",
        task: Task = verify_answer,
    ) -> None:
        if mp_context == "fork":
            raise ValueError("mp_context 'fork' is unsafe when the caller has threads")
        self.max_workers = max_workers or max(1, min(4, os.cpu_count() or 1))
        self._memory_limit = memory_limit_bytes
        self._max_chars = max_chars
        self._startup_timeout_s = startup_timeout_s
        self._ctx = multiprocessing.get_context(mp_context)
        self._task = task
        self._cache = _LRU(cache_size)
        self._slots = _Slots(self.max_workers)
        self._state = _State()
        self._finalizer = weakref.finalize(self, self._state.close)
        self.pools_started = 0  # for tests and metrics: how many pools were (re)built

    # -- lifecycle

    def close(self) -> None:
        """Kill the workers. Later calls return False (and log) instead of starting a pool."""
        self._finalizer()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Grader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    # -- public grading API

    def is_equiv(
        self, reference: Reference | None, prediction: str | None, timeout_s: float | None = 5.0
    ) -> bool:
        """True when `prediction` matches `reference` (or any of a sequence of references).

        Blocks the calling thread; from a coroutine use `ais_equiv`. Never raises."""
        try:
            return self._is_equiv(reference, prediction, timeout_s)
        except Exception as exc:  # noqa: BLE001
            log.debug("grader_failed", error=repr(exc))
            return False

    def _is_equiv(
        self, reference: Reference | None, prediction: str | None, timeout_s: float | None
    ) -> bool:
        key = self._prepare(reference, prediction)
        if isinstance(key, bool):
            return key
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        for _attempt in range(_RETRIES + 1):
            self._slots.acquire().result()
            outcome = self._submit(key)
            if isinstance(outcome, bool):
                return outcome  # no pool (closed / failed to start): not cached
            pool, fut = outcome
            try:
                verdict = bool(fut.result(timeout=timeout_s))
            except TimeoutError:
                verdict = self._timed_out(pool, key, timeout_s)
            except (BrokenProcessPool, cf.CancelledError):
                self._discard(pool, "worker died")
                continue
            except Exception as exc:  # noqa: BLE001
                log.debug("grader_task_failed", error=repr(exc))
                verdict = False
            self._cache.put(key, verdict)
            return verdict
        self._cache.put(key, False)
        return False

    async def ais_equiv(
        self, reference: Reference | None, prediction: str | None, timeout_s: float | None = 5.0
    ) -> bool:
        """`is_equiv` for coroutines: waits with `asyncio.wrap_future`, never blocks the loop.
        Never raises (cancellation of the calling task propagates, as it must)."""
        try:
            return await self._ais_equiv(reference, prediction, timeout_s)
        except Exception as exc:  # noqa: BLE001
            log.debug("grader_failed", error=repr(exc))
            return False

    async def _ais_equiv(
        self, reference: Reference | None, prediction: str | None, timeout_s: float | None
    ) -> bool:
        key = self._prepare(reference, prediction)
        if isinstance(key, bool):
            return key
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        for _attempt in range(_RETRIES + 1):
            ticket = self._slots.acquire()
            try:
                await asyncio.wrap_future(ticket)
            except asyncio.CancelledError:
                if not ticket.cancel():  # the slot was granted as we were cancelled
                    self._slots.release()
                raise
            outcome = await self._asubmit(key)
            if isinstance(outcome, bool):
                return outcome
            pool, fut = outcome
            afut = asyncio.wrap_future(fut)
            try:
                done, _ = await asyncio.wait({afut}, timeout=timeout_s)
            except asyncio.CancelledError:
                afut.cancel()
                _watch_abandoned(self._state, pool, fut, timeout_s)
                raise
            if not done:
                afut.cancel()  # detach: the killed worker's error must not go unretrieved
                verdict = self._timed_out(pool, key, timeout_s)
            else:
                try:
                    verdict = bool(afut.result())
                except (BrokenProcessPool, asyncio.CancelledError):
                    self._discard(pool, "worker died")
                    continue
                except Exception as exc:  # noqa: BLE001
                    log.debug("grader_task_failed", error=repr(exc))
                    verdict = False
            self._cache.put(key, verdict)
            return verdict
        self._cache.put(key, False)
        return False

    def grade_many(
        self,
        pairs: Iterable[tuple[Reference | None, str | None]],
        timeout_s: float | None = 5.0,
    ) -> list[bool]:
        """Grade (reference, prediction) pairs in parallel over the pool, in input order."""
        items = list(pairs)
        if not items:
            return []
        with cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="grade") as threads:
            return list(threads.map(lambda p: self.is_equiv(p[0], p[1], timeout_s), items))

    # -- internals

    def _prepare(self, reference: Reference | None, prediction: str | None) -> _Key | bool:
        """Normalise; settle the cheap cases (a bool) or return the cache/work key."""
        try:
            if prediction is None or reference is None or not isinstance(prediction, str):
                return False
            refs_raw = (reference,) if isinstance(reference, str) else tuple(reference)
            pred = _normalize(prediction)
            refs = tuple(_normalize(r) for r in refs_raw if isinstance(r, str))
            refs = tuple(r for r in refs if r)
            if not pred or not refs:
                return False
            if pred in refs:
                return True
            if len(pred) > self._max_chars:
                return False
            refs = tuple(r for r in refs if len(r) <= self._max_chars)
            return (refs, pred) if refs else False
        except Exception as exc:  # noqa: BLE001
            log.debug("grader_bad_input", error=repr(exc))
            return False

    def _get_pool(self) -> _Pool | None:
        state = self._state
        with state.lock:
            if state.closed:
                return None
            if state.pool is None:
                state.pool = self._start_pool()
            return state.pool

    def _start_pool(self) -> _Pool:
        n = self.max_workers
        barrier = self._ctx.Barrier(n)
        executor = cf.ProcessPoolExecutor(
            n,
            mp_context=self._ctx,
            initializer=_init_worker,
            initargs=(self._memory_limit, barrier),
        )
        ready: cf.Future[None] = cf.Future()
        ready.set_running_or_notify_cancel()  # shared by many waiters: nobody may cancel it
        pool = _Pool(executor, ready)
        pings = [executor.submit(_ping, self._startup_timeout_s) for _ in range(n)]
        pool.processes = list(executor._processes.values())  # all n are started by now
        remaining = [n]
        lock = threading.Lock()

        def on_ping(f: cf.Future[int]) -> None:
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
            p.add_done_callback(on_ping)
        self.pools_started += 1
        return pool

    def _submit(self, key: _Key) -> tuple[_Pool, cf.Future[bool]] | bool:
        """With a slot held: get a ready pool and submit. Releases the slot on every failure."""
        try:
            pool = self._get_pool()
        except BaseException:
            self._slots.release()
            raise
        if pool is None:
            self._slots.release()
            log.warning("grader_closed")
            return False
        try:
            pool.ready.result(timeout=self._startup_timeout_s)
        except BaseException as exc:  # noqa: BLE001
            self._slots.release()
            self._discard(pool, f"pool failed to start: {exc!r}")
            return False
        return self._submit_ready(pool, key)

    async def _asubmit(self, key: _Key) -> tuple[_Pool, cf.Future[bool]] | bool:
        pool: _Pool | None = None
        try:
            pool = self._get_pool()
            if pool is None:
                log.warning("grader_closed")
                self._slots.release()
                return False
            await asyncio.wait_for(asyncio.wrap_future(pool.ready), self._startup_timeout_s)
        except asyncio.CancelledError:
            self._slots.release()
            raise
        except Exception as exc:  # noqa: BLE001
            self._slots.release()
            if pool is not None:
                self._discard(pool, f"pool failed to start: {exc!r}")
            return False
        return self._submit_ready(pool, key)

    def _submit_ready(self, pool: _Pool, key: _Key) -> tuple[_Pool, cf.Future[bool]] | bool:
        try:
            fut = pool.executor.submit(self._task, *key)
        except Exception as exc:  # noqa: BLE001 - broken or shut down under us
            self._slots.release()
            self._discard(pool, f"submit failed: {exc!r}")
            return False
        slots = self._slots
        fut.add_done_callback(lambda _f: slots.release())
        return pool, fut

    def _timed_out(self, pool: _Pool, key: _Key, timeout_s: float | None) -> bool:
        log.warning("grader_timeout", timeout_s=timeout_s, prediction=key[1][:80],
                    reference=key[0][0][:80])
        self._discard(pool, "timeout")
        return False

    def _discard(self, pool: _Pool, reason: str) -> None:
        _discard(self._state, pool, reason)


def _discard(state: _State, pool: _Pool, reason: str) -> None:
    """Drop `pool` (if still current) and kill its workers; the next call builds a new one."""
    with state.lock:
        if state.pool is pool:
            state.pool = None
    log.warning("grader_pool_replaced", reason=reason)
    _kill(pool)


def _watch_abandoned(
    state: _State, pool: _Pool, fut: cf.Future[bool], timeout_s: float | None
) -> None:
    """A cancelled caller no longer enforces its timeout: a timer thread does, so a hung
    comparison nobody waits for cannot hold a worker forever. Holds no Grader reference."""
    if timeout_s is None or fut.done():
        return

    def check() -> None:
        if not fut.done():
            _discard(state, pool, "timeout (caller cancelled)")

    timer = threading.Timer(timeout_s, check)
    timer.daemon = True
    timer.start()


# --- module-level convenience ------------------------------------------------------------------

_default: Grader | None = None
_default_lock = threading.Lock()


def default_grader() -> Grader:
    """The process-wide Grader behind `is_equiv`, created on first use, closed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Grader()
            atexit.register(close_default_grader)
        return _default


def close_default_grader() -> None:
    """Close the default Grader (a later `is_equiv` makes a new one)."""
    global _default
    with _default_lock:
        grader, _default = _default, None
    if grader is not None:
        grader.close()


def is_equiv(reference: Reference | None, prediction: str | None, timeout_s: float = 5.0) -> bool:
    """Whether `prediction` matches `reference` (reference first, as MARIO_EVAL; a sequence of
    references means any accepted answer). Uses `default_grader()`; never raises."""
    try:
        return default_grader().is_equiv(reference, prediction, timeout_s)
    except Exception as exc:  # noqa: BLE001
        log.debug("grader_failed", error=repr(exc))
        return False

