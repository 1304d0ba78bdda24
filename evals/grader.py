"""Answer equivalence: `is_equiv(reference, prediction) -> bool`, safe from any thread or loop.

The comparison is MARIO_EVAL's pipeline rebuilt on math-verify's parser (`evals.normalize`:
string normalisation into alternatives; `evals.equivalence`: the comparison and its tolerance
rule, with a `paper_faithful` switch for MARIO_EVAL's lenient tolerance and quirks). sympy never
runs in the caller: a `Grader` runs each comparison in a worker of its own process pool and
enforces the timeout from outside (`evals._pool`): a comparison that overruns (sympy can take
minutes on `2^{2^{2^{100}}}`) gets the verdict False, and the whole pool is killed and replaced
on next use. math-verify's own timeouts (`signal.alarm`: main thread only) are always OFF.

Cheap cases never reach the pool: None or empty → False (both None → False too: there is
nothing to be right about); equal after normalising, or both plain numbers → decided in the
caller without sympy (`quick_verdict`); longer than `max_chars` → False. Verdicts are cached
(LRU). Nothing raises out of `is_equiv`: any failure is False.

The timeout clock of a comparison starts when it is handed to an idle worker, not when it is
queued: at most `max_workers` comparisons are in the pool at once, later ones wait for a slot.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures as cf
import multiprocessing
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool

import structlog

from evals._pool import LRU, Pool, Slots, State, discard, start_pool, watch_abandoned
from evals.equivalence import equivalent, quick_verdict

__all__ = ["Grader", "close_default_grader", "default_grader", "is_equiv", "verify_answer"]

log = structlog.get_logger(__name__)

Reference = str | Sequence[str]
Task = Callable[..., bool]
_Key = tuple[tuple[str, ...], str, bool]

_RETRIES = 1  # a comparison killed together with another one's timeout is tried once more


def verify_answer(
    references: tuple[str, ...], prediction: str, paper_faithful: bool = False
) -> bool:
    """The full comparison, in this process and WITHOUT a timeout; workers run this.

    Inputs are the raw answer strings (normalised inside). Any exception → False."""
    return equivalent(references, prediction, paper_faithful)


class Grader:
    """Owns a process pool of math-verify workers, a verdict cache and the timeout policy.

    Use as a context manager or call `close()`. `is_equiv` is for threads, `ais_equiv` for
    coroutines (never blocks the loop), `grade_many` grades a batch in parallel.
    `task` is the comparison run in a worker (a picklable top-level function called as
    `task(references, prediction)`, plus `True` in paper-faithful mode); tests swap in a slow
    one to exercise the timeout path. `paper_faithful` is the default of the per-call keyword:
    MARIO_EVAL's lenient tolerance and quirks (see `evals.equivalence`).
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
        paper_faithful: bool = False,
    ) -> None:
        if mp_context == "fork":
            raise ValueError("mp_context 'fork' is unsafe when the caller has threads")
        self.max_workers = max_workers or max(1, min(4, os.cpu_count() or 1))
        self._memory_limit = memory_limit_bytes
        self._max_chars = max_chars
        self._startup_timeout_s = startup_timeout_s
        self._ctx = multiprocessing.get_context(mp_context)
        self._task = task
        self.paper_faithful = paper_faithful
        self._cache = LRU(cache_size)
        self._slots = Slots(self.max_workers)
        self._state = State()
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
        self, reference: Reference | None, prediction: str | None, timeout_s: float | None = 5.0,
        *, paper_faithful: bool | None = None,
    ) -> bool:
        """True when `prediction` matches `reference` (or any of a sequence of references).

        Blocks the calling thread; from a coroutine use `ais_equiv`. Never raises."""
        try:
            return self._is_equiv(reference, prediction, timeout_s, paper_faithful)
        except Exception as exc:  # noqa: BLE001
            log.debug("grader_failed", error=repr(exc))
            return False

    def _is_equiv(
        self, reference: Reference | None, prediction: str | None, timeout_s: float | None,
        paper_faithful: bool | None = None,
    ) -> bool:
        key = self._prepare(reference, prediction, paper_faithful)
        if isinstance(key, bool):
            return key
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
        self, reference: Reference | None, prediction: str | None, timeout_s: float | None = 5.0,
        *, paper_faithful: bool | None = None,
    ) -> bool:
        """`is_equiv` for coroutines: waits with `asyncio.wrap_future`, never blocks the loop.
        Never raises (cancellation of the calling task propagates, as it must)."""
        try:
            return await self._ais_equiv(reference, prediction, timeout_s, paper_faithful)
        except Exception as exc:  # noqa: BLE001
            log.debug("grader_failed", error=repr(exc))
            return False

    async def _ais_equiv(
        self, reference: Reference | None, prediction: str | None, timeout_s: float | None,
        paper_faithful: bool | None = None,
    ) -> bool:
        key = self._prepare(reference, prediction, paper_faithful)
        if isinstance(key, bool):
            return key
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
                watch_abandoned(self._state, pool, fut, timeout_s)
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
        *, paper_faithful: bool | None = None,
    ) -> list[bool]:
        """Grade (reference, prediction) pairs in parallel over the pool, in input order.

        Pairs the cheap checks settle are graded here first; only the rest go to threads that
        keep every worker busy (two waiters per worker, so a result in transit idles none)."""
        items = list(pairs)
        verdicts: list[bool | None] = []
        for ref, pred in items:
            key = self._prepare(ref, pred, paper_faithful)
            verdicts.append(key if isinstance(key, bool) else None)
        todo = [i for i, v in enumerate(verdicts) if v is None]
        if todo:
            with cf.ThreadPoolExecutor(2 * self.max_workers, thread_name_prefix="grade") as threads:
                done = threads.map(
                    lambda i: self.is_equiv(items[i][0], items[i][1], timeout_s,
                                            paper_faithful=paper_faithful), todo)
                for i, verdict in zip(todo, done):
                    verdicts[i] = verdict
        return [bool(v) for v in verdicts]

    # -- internals

    def _prepare(
        self, reference: Reference | None, prediction: str | None, paper_faithful: bool | None
    ) -> _Key | bool:
        """Settle the cheap cases (a bool: bad input, cached, decided without sympy) or return
        the cache/work key of a comparison for the pool."""
        try:
            if prediction is None or reference is None or not isinstance(prediction, str):
                return False
            faithful = self.paper_faithful if paper_faithful is None else bool(paper_faithful)
            refs_raw = (reference,) if isinstance(reference, str) else tuple(reference)
            pred = prediction.strip()
            refs = tuple(r.strip() for r in refs_raw if isinstance(r, str))
            refs = tuple(r for r in refs if r)
            if not pred or not refs:
                return False
            if pred in refs:
                return True
            if len(pred) > self._max_chars:
                return False
            refs = tuple(r for r in refs if len(r) <= self._max_chars)
            if not refs:
                return False
            key = (refs, pred, faithful)
            cached = self._cache.get(key)
            if cached is not None:
                return cached
            quick = quick_verdict(refs, pred, faithful)
            if quick is not None:
                self._cache.put(key, quick)
                return quick
            return key
        except Exception as exc:  # noqa: BLE001
            log.debug("grader_bad_input", error=repr(exc))
            return False

    def _get_pool(self) -> Pool | None:
        state = self._state
        with state.lock:
            if state.closed:
                return None
            if state.pool is None:
                state.pool = self._start_pool()
            return state.pool

    def _start_pool(self) -> Pool:
        self.pools_started += 1
        return start_pool(self._ctx, self.max_workers, self._memory_limit, self._startup_timeout_s)

    def _submit(self, key: _Key) -> tuple[Pool, cf.Future[bool]] | bool:
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

    async def _asubmit(self, key: _Key) -> tuple[Pool, cf.Future[bool]] | bool:
        pool: Pool | None = None
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

    def _submit_ready(self, pool: Pool, key: _Key) -> tuple[Pool, cf.Future[bool]] | bool:
        try:
            refs, pred, faithful = key
            if faithful:
                fut = pool.executor.submit(self._task, refs, pred, True)
            else:
                fut = pool.executor.submit(self._task, refs, pred)
        except Exception as exc:  # noqa: BLE001 - broken or shut down under us
            self._slots.release()
            self._discard(pool, f"submit failed: {exc!r}")
            return False
        slots = self._slots
        fut.add_done_callback(lambda _f: slots.release())
        return pool, fut

    def _timed_out(self, pool: Pool, key: _Key, timeout_s: float | None) -> bool:
        log.warning("grader_timeout", timeout_s=timeout_s, prediction=key[1][:80],
                    reference=key[0][0][:80])
        self._discard(pool, "timeout")
        return False

    def _discard(self, pool: Pool, reason: str) -> None:
        discard(self._state, pool, reason)


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


def is_equiv(
    reference: Reference | None, prediction: str | None, timeout_s: float = 5.0,
    *, paper_faithful: bool = False,
) -> bool:
    """Whether `prediction` matches `reference` (reference first, as MARIO_EVAL; a sequence of
    references means any accepted answer). Uses `default_grader()`; never raises."""
    try:
        return default_grader().is_equiv(reference, prediction, timeout_s,
                                         paper_faithful=paper_faithful)
    except Exception as exc:  # noqa: BLE001
        log.debug("grader_failed", error=repr(exc))
        return False

