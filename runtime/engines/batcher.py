"""A generic async micro-batcher: callers await one item each, a background task runs batches.

    batcher = MicroBatcher(process, max_batch=32, wait_ms=5.0)
    result = await batcher.submit(item, weight=n)
    await batcher.aclose()

The background task takes the first waiting item, then keeps taking items that arrive within
`wait_ms` until the batch's total weight would pass `max_batch` (an item heavier than `max_batch`
runs alone), and awaits `process(batch)`, which returns one result per item, in order. Batches run
one at a time, so requests that arrive while a batch runs form the next one.

- An exception raised by `process` fails only that batch's callers.
- `process` may return an exception instance in an item's place: only that caller gets it raised.
- A caller that is cancelled just stops waiting; its item is skipped if not started, and its
  result dropped if it was — the rest of its batch is unaffected.
- `aclose()` stops the task and fails every pending caller with EngineError.

The task is a module-level coroutine over locals, never a method: it must not keep the batcher
(or whatever owns `process`) alive (STYLE.md 6).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from runtime.errors import EngineError

__all__ = ["MicroBatcher"]

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass(eq=False)
class _Pending:
    item: Any
    weight: int
    future: asyncio.Future[Any]


class _Shared:
    """State the task and the batcher both see: items taken off the queue but not yet answered,
    and the closed flag."""

    def __init__(self) -> None:
        self.closed = False
        self.batches_run = 0
        self.held: list[_Pending] = []


class MicroBatcher(Generic[Req, Res]):
    """Pack concurrently submitted items into batches for one async `process` function."""

    def __init__(
        self,
        process: Callable[[list[Req]], Awaitable[Sequence[Res | BaseException]]],
        *,
        max_batch: int = 32,
        wait_ms: float = 5.0,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if wait_ms < 0:
            raise ValueError(f"wait_ms must be >= 0, got {wait_ms}")
        self.name = name
        self.max_batch = max_batch
        self.wait_ms = wait_ms
        self._process = process
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._shared = _Shared()
        self._task: asyncio.Task[None] | None = None

    @property
    def batches_run(self) -> int:
        """How many batches have been handed to `process` so far."""
        return self._shared.batches_run

    @property
    def closed(self) -> bool:
        return self._shared.closed

    async def submit(self, item: Req, *, weight: int = 1) -> Res:
        """Queue `item` (counting `weight` rows toward `max_batch`) and await its result."""
        if self._shared.closed:
            raise EngineError(f"{self.name} is closed")
        loop = asyncio.get_running_loop()
        if self._task is None:  # started lazily, on the loop of the first caller
            self._task = loop.create_task(
                _run(self._queue, self._process, self._shared, self.max_batch, self.wait_ms / 1000.0),
                name=f"{self.name}-loop",
            )
        future: asyncio.Future[Res] = loop.create_future()
        self._queue.put_nowait(_Pending(item, max(1, int(weight)), future))
        # A cancelled caller cancels `future` here; the task skips it or drops its result.
        return await future

    async def aclose(self) -> None:
        """Stop the background task; every caller still waiting gets EngineError. Idempotent."""
        shared = self._shared
        shared.closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # never raises the task's CancelledError
            if not task.cancelled():
                task.exception()  # a crashed loop: its callers were failed already; retrieve it
        _fail_all(self._queue, shared, EngineError(f"{self.name} closed before the request was served"))


def _fail_all(queue: asyncio.Queue[_Pending], shared: _Shared, error: EngineError) -> None:
    """Fail every caller still waiting: items taken off the queue and items still in it."""
    pending, shared.held = shared.held, []
    while not queue.empty():
        pending.append(queue.get_nowait())
    for p in pending:
        if not p.future.done():
            p.future.set_exception(error)


async def _run(
    queue: asyncio.Queue[_Pending],
    process: Callable[[list[Any]], Awaitable[Sequence[Any]]],
    shared: _Shared,
    max_batch: int,
    wait_s: float,
) -> None:
    try:
        await _serve(queue, process, shared, max_batch, wait_s)
    except Exception as exc:  # a bug in the loop itself: never leave callers hanging
        shared.closed = True
        _fail_all(queue, shared, EngineError(f"batcher stopped: {type(exc).__name__}: {exc}"))
        raise


async def _serve(
    queue: asyncio.Queue[_Pending],
    process: Callable[[list[Any]], Awaitable[Sequence[Any]]],
    shared: _Shared,
    max_batch: int,
    wait_s: float,
) -> None:
    loop = asyncio.get_running_loop()
    held = shared.held  # every item taken off the queue stays here until answered

    async def take(timeout: float | None) -> _Pending | None:
        if queue.empty():
            if timeout is not None and timeout <= 0:
                return None
            try:
                item = await (queue.get() if timeout is None else asyncio.wait_for(queue.get(), timeout))
            except TimeoutError:
                return None
        else:
            item = queue.get_nowait()
        held.append(item)
        return item

    while True:
        # 1) the first live item: a carried-over one or the next from the queue (blocking)
        live = [p for p in held if not p.future.done()]
        held[:] = live
        first = live[0] if live else await take(None)
        assert first is not None
        if first.future.done():  # cancelled while queued
            held.remove(first)
            continue
        batch, weight = [first], first.weight
        # 2) more items until the deadline or the weight limit (an over-weight item waits in `held`)
        deadline = loop.time() + wait_s
        for p in held[1:]:
            if weight + p.weight > max_batch:
                break
            batch.append(p)
            weight += p.weight
        else:
            while weight < max_batch:
                nxt = await take(deadline - loop.time())
                if nxt is None:
                    break
                if nxt.future.done():
                    held.remove(nxt)
                    continue
                if weight + nxt.weight > max_batch:
                    break  # stays in `held` for the next batch
                batch.append(nxt)
                weight += nxt.weight
        # Items cancelled during the wait are dropped before the batch starts.
        for p in [p for p in batch if p.future.done()]:
            batch.remove(p)
            held.remove(p)
        if not batch:
            continue
        # 3) run it; results go to the callers still waiting
        shared.batches_run += 1
        try:
            results = await process([p.item for p in batch])
            if len(results) != len(batch):
                raise EngineError(f"a batch of {len(batch)} items returned {len(results)} results")
        except Exception as exc:  # fails this batch only
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        else:
            for p, res in zip(batch, results, strict=True):
                if p.future.done():  # its caller was cancelled: drop the result
                    continue
                if isinstance(res, BaseException):
                    p.future.set_exception(res)
                else:
                    p.future.set_result(res)
        for p in batch:
            held.remove(p)
