"""MicroBatcher: packing, weights, per-batch error isolation, cancellation, shutdown.

Concurrency is ordered with events (a `process` that waits on a gate), never with sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from runtime.engines.batcher import MicroBatcher
from runtime.errors import EngineError


class Recorder:
    """A `process` function that records its batches and can be held at a gate."""

    def __init__(self, *, fail_on: object = None, per_item_error: object = None) -> None:
        self.batches: list[list[object]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.fail_on = fail_on
        self.per_item_error = per_item_error

    async def __call__(self, batch: list[object]) -> list[object]:
        self.batches.append(list(batch))
        self.started.set()
        await self.gate.wait()
        if self.fail_on in batch:
            raise ValueError(f"bad item {self.fail_on}")
        return [KeyError(x) if x == self.per_item_error else ("done", x) for x in batch]


async def _until(cond, *, steps: int = 1000) -> None:
    """Yield to the loop until `cond()` holds (bounded; no wall-clock sleeps)."""
    for _ in range(steps):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_concurrent_items_share_one_batch_in_order() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=8, wait_ms=50)
    out = await asyncio.gather(*(b.submit(i) for i in range(5)))
    assert out == [("done", i) for i in range(5)]
    assert rec.batches == [[0, 1, 2, 3, 4]]
    assert b.batches_run == 1
    await b.aclose()


async def test_weights_cap_the_batch_and_heavy_items_run_alone() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=4, wait_ms=50)
    items = [("a", 2), ("b", 2), ("c", 1), ("big", 9), ("d", 1)]
    out = await asyncio.gather(*(b.submit(x, weight=w) for x, w in items))
    assert [o[1] for o in out] == [x for x, _ in items]
    assert rec.batches == [["a", "b"], ["c"], ["big"], ["d"]]
    await b.aclose()


async def test_items_arriving_during_a_batch_form_the_next_one() -> None:
    rec = Recorder()
    rec.gate.clear()
    b = MicroBatcher(rec, max_batch=8, wait_ms=0)
    first = asyncio.ensure_future(b.submit("first"))
    await rec.started.wait()
    later = [asyncio.ensure_future(b.submit(x)) for x in ("x", "y", "z")]
    await _until(lambda: b._queue.qsize() == 3)
    rec.gate.set()
    assert await first == ("done", "first")
    assert [await t for t in later] == [("done", "x"), ("done", "y"), ("done", "z")]
    assert rec.batches == [["first"], ["x", "y", "z"]]
    await b.aclose()


async def test_process_error_fails_only_its_batch() -> None:
    rec = Recorder(fail_on="bad")
    b = MicroBatcher(rec, max_batch=2, wait_ms=50)
    results = await asyncio.gather(*(b.submit(x) for x in ("ok1", "bad", "ok2", "ok3")),
                                   return_exceptions=True)
    assert isinstance(results[0], ValueError) and isinstance(results[1], ValueError)
    assert results[2:] == [("done", "ok2"), ("done", "ok3")]
    # the batcher keeps serving after a failed batch
    assert await b.submit("again") == ("done", "again")
    await b.aclose()


async def test_per_item_exception_fails_only_that_caller() -> None:
    rec = Recorder(per_item_error="odd")
    b = MicroBatcher(rec, max_batch=8, wait_ms=50)
    results = await asyncio.gather(b.submit("a"), b.submit("odd"), b.submit("c"), return_exceptions=True)
    assert results[0] == ("done", "a") and results[2] == ("done", "c")
    assert isinstance(results[1], KeyError)
    assert len(rec.batches) == 1
    await b.aclose()


async def test_cancelled_while_queued_is_skipped() -> None:
    rec = Recorder()
    rec.gate.clear()
    b = MicroBatcher(rec, max_batch=8, wait_ms=0)
    first = asyncio.ensure_future(b.submit("first"))
    await rec.started.wait()
    doomed = asyncio.ensure_future(b.submit("doomed"))
    kept = asyncio.ensure_future(b.submit("kept"))
    await _until(lambda: b._queue.qsize() == 2)
    doomed.cancel()
    rec.gate.set()
    assert await first == ("done", "first")
    assert await kept == ("done", "kept")
    assert doomed.cancelled()
    assert rec.batches == [["first"], ["kept"]]
    await b.aclose()


async def test_cancelled_during_its_batch_does_not_break_the_others() -> None:
    rec = Recorder()
    rec.gate.clear()
    b = MicroBatcher(rec, max_batch=8, wait_ms=50)
    tasks = [asyncio.ensure_future(b.submit(x)) for x in ("a", "b", "c")]
    await rec.started.wait()
    assert rec.batches == [["a", "b", "c"]]
    tasks[1].cancel()
    await asyncio.sleep(0)
    rec.gate.set()
    assert await tasks[0] == ("done", "a")
    assert await tasks[2] == ("done", "c")
    assert tasks[1].cancelled()
    assert await b.submit("d") == ("done", "d")
    await b.aclose()


async def test_aclose_fails_pending_and_in_flight_callers() -> None:
    rec = Recorder()
    rec.gate.clear()  # never opened: the batch hangs until aclose
    b = MicroBatcher(rec, max_batch=1, wait_ms=0, name="test batcher")
    running = asyncio.ensure_future(b.submit("running"))
    await rec.started.wait()
    queued = asyncio.ensure_future(b.submit("queued"))
    await _until(lambda: b._queue.qsize() == 1)
    await b.aclose()
    for t in (running, queued):
        with pytest.raises(EngineError, match="test batcher closed"):
            await t
    with pytest.raises(EngineError, match="closed"):
        await b.submit("late")
    await b.aclose()  # idempotent


async def test_wrong_result_count_is_an_engine_error() -> None:
    async def short(batch: list[int]) -> list[int]:
        return batch[:-1]

    b = MicroBatcher(short, max_batch=4, wait_ms=50)
    results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    assert all(isinstance(r, EngineError) for r in results)
    await b.aclose()


async def test_background_task_does_not_keep_the_batcher_alive() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=4, wait_ms=0)
    assert await b.submit(1) == ("done", 1)
    task = b._task
    ref = weakref.ref(b)
    del b
    gc.collect()
    assert ref() is None  # the running task holds only locals, not the batcher
    assert task is not None
    task.cancel()
    await asyncio.wait([task])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), wait_ms=-1)
