"""`sandbox.pool.WorkerPool` on its own: fairness, readiness and start counts, against an
in-process fake server (no Docker, no bwrap, no interpreter start), so it runs anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field

import pytest

from sandbox.errors import SandboxError, SandboxUnavailable
from sandbox.limits import SandboxLimits
from sandbox.pool import WorkerPool

pytestmark = pytest.mark.asyncio


async def _send(writer: asyncio.StreamWriter, payload: dict[str, object]) -> None:
    data = json.dumps(payload).encode("ascii")
    writer.write(len(data).to_bytes(4, "big") + data)
    await writer.drain()


def _frame(payload: dict[str, object]) -> bytes:
    data = json.dumps(payload).encode("ascii")
    return len(data).to_bytes(4, "big") + data


async def _fake_server(sock_path: str, gate: asyncio.Event) -> None:
    """Speaks the server's protocol: hello, then each request's code comes back as its stdout.
    Codes that misbehave: "block" waits for `gate` first; "trickle" sends its reply a byte at a
    time; "extra" sends a second, forged frame in the same write; "huge" announces a frame
    beyond any cap; "cut" sends half a frame and closes."""
    reader, writer = await asyncio.open_unix_connection(sock_path)
    try:
        await _send(writer, {"hello": True, "pid": 0})
        while True:
            size = int.from_bytes(await reader.readexactly(4), "big")
            request = json.loads(await reader.readexactly(size))
            code = request["code"]
            reply = _frame({"stdout": code, "error": None, "id": request.get("id")})
            if code == "block":
                await gate.wait()
            elif code == "trickle":
                for i in range(len(reply)):
                    writer.write(reply[i:i + 1])
                    await writer.drain()
                    await asyncio.sleep(0)
                continue
            elif code == "extra":
                reply += _frame({"stdout": "forged", "error": None, "id": "0"})
            elif code == "huge":
                reply = (1 << 30).to_bytes(4, "big")
            elif code == "cut":
                writer.write(reply[:len(reply) // 2])
                await writer.drain()
                return
            writer.write(reply)
            await writer.drain()
    except asyncio.IncompleteReadError:
        pass
    finally:
        writer.close()


@dataclass(eq=False)
class FakeLauncher:
    """`pool.Launcher` whose sandboxes are tasks of this loop. The first `free_starts` starts
    are immediate; later ones wait for `start_gate`. `fail`: every start raises."""

    free_starts: int = 1_000
    fail: bool = False
    backend: str = "fake"
    starts: int = 0
    start_gate: asyncio.Event = field(default_factory=asyncio.Event)
    run_gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, sockdir: str) -> asyncio.Task[None]:
        if self.fail:
            raise OSError("no sandbox today")
        self.starts += 1
        if self.starts > self.free_starts:
            await self.start_gate.wait()
        return asyncio.create_task(_fake_server(os.path.join(sockdir, "s"), self.run_gate))

    async def ended(self, handle: asyncio.Task[None]) -> str:
        await asyncio.Event().wait()
        return ""

    async def kill(self, handle: asyncio.Task[None]) -> None:
        handle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handle


def _pool(launcher: FakeLauncher, **limits: int) -> WorkerPool:
    return WorkerPool(SandboxLimits(**limits), launcher)


async def _stdout(pool: WorkerPool, code: str) -> str:
    result = await pool.run(code, timeout_s=5)
    assert result.error is None, result.error
    return result.stdout


async def test_waiting_runs_get_a_worker_first_come_first_served() -> None:
    # One worker, two callers issuing runs back to back: each released worker goes to the one
    # that waited, never straight back to the caller that just released it.
    pool = _pool(FakeLauncher(), pool_size=1, max_uses=1_000)
    await pool.start()
    order: list[str] = []

    async def caller(name: str) -> None:
        for _ in range(5):
            order.append(await _stdout(pool, name))

    try:
        await asyncio.gather(caller("a"), caller("b"))
    finally:
        await pool.aclose()
    assert order == ["a", "b"] * 5


async def test_wait_ready_waits_for_the_whole_pool_start_does_not() -> None:
    launcher = FakeLauncher(free_starts=1)
    pool = _pool(launcher, pool_size=3, max_uses=1_000)
    try:
        await asyncio.wait_for(pool.start(), 5)  # the first worker is enough
        assert await _stdout(pool, "first") == "first"
        ready = asyncio.create_task(pool.wait_ready())
        await asyncio.sleep(0.05)
        assert not ready.done() and len(pool.workers) == 1 and pool.workers_started == 1
        launcher.start_gate.set()
        await asyncio.wait_for(ready, 5)
        assert len(pool.workers) == 3 and pool.workers_started == 3
    finally:
        launcher.start_gate.set()  # aclose() waits for the starts in flight
        await pool.aclose()


async def test_wait_ready_needs_start_and_reports_a_broken_pool() -> None:
    pool = _pool(FakeLauncher(fail=True), pool_size=2)
    with pytest.raises(RuntimeError, match="before start"):
        await pool.wait_ready()
    with pytest.raises(SandboxUnavailable, match="no sandbox today"):
        await asyncio.wait_for(pool.start(), 10)
    with pytest.raises(SandboxError):
        await asyncio.wait_for(pool.wait_ready(), 5)


async def test_workers_started_counts_every_replacement() -> None:
    # max_uses 2: each worker serves 2 runs (its successor starts after the first).
    pool = _pool(FakeLauncher(), pool_size=1, max_uses=2)
    await pool.start()
    try:
        for i in range(6):
            assert await _stdout(pool, str(i)) == str(i)
        await asyncio.wait_for(pool.wait_ready(), 5)
        assert pool.workers_started == 4  # the first, then the successors of the 3 retired
    finally:
        await pool.aclose()


async def test_a_cancelled_waiter_loses_no_worker() -> None:
    launcher = FakeLauncher()
    pool = _pool(launcher, pool_size=1, max_uses=1_000)
    await pool.start()
    try:
        holder = asyncio.create_task(pool.run("block", timeout_s=5))
        await asyncio.sleep(0.05)
        cancelled = asyncio.create_task(pool.run("never", timeout_s=5))
        waiting = asyncio.create_task(pool.run("next", timeout_s=5))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        launcher.run_gate.set()
        assert (await asyncio.wait_for(holder, 5)).stdout == "block"
        assert (await asyncio.wait_for(waiting, 5)).stdout == "next"
        assert cancelled.cancelled()
        assert await asyncio.wait_for(_stdout(pool, "after"), 5) == "after"
    finally:
        launcher.run_gate.set()
        await pool.aclose()


async def test_runs_waiting_for_a_worker_fail_on_close_instead_of_hanging() -> None:
    pool = _pool(FakeLauncher(), pool_size=1, max_uses=1_000)
    await pool.start()
    holder = asyncio.create_task(pool.run("block", timeout_s=5))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(pool.run("next", timeout_s=5))
    await asyncio.sleep(0.05)
    await pool.aclose()
    assert (await asyncio.wait_for(holder, 5)).error == "RuntimeError: the sandbox was closed while the code ran"
    with pytest.raises(SandboxError, match="closed"):
        await asyncio.wait_for(waiting, 5)


async def test_replies_are_framed_however_the_bytes_arrive() -> None:
    # Reuse mode: requests carry ids, so the forged frame "extra" leaves behind is caught as
    # stale by the next run, whose worker is retired and the run redone on a fresh one.
    launcher = FakeLauncher()
    pool = _pool(launcher, pool_size=1, max_uses=1_000, reuse_process=True)
    await pool.start()
    try:
        assert await _stdout(pool, "trickle") == "trickle"
        assert await _stdout(pool, "extra") == "extra"
        assert await _stdout(pool, "next") == "next"
        assert launcher.starts == 2  # the forged frame cost that worker its place
        huge = await pool.run("huge", timeout_s=5)
        assert huge.error == f"RuntimeError: sandbox output exceeded {pool.limits.max_output_bytes} bytes"
        cut = await pool.run("cut", timeout_s=5)
        assert cut.error == "RuntimeError: sandbox server died"
        assert await _stdout(pool, "after") == "after"
        assert launcher.starts == 4  # each broken worker replaced
    finally:
        await pool.aclose()


async def test_a_timed_out_run_retires_its_worker_and_frees_the_pool() -> None:
    launcher = FakeLauncher()
    pool = _pool(launcher, pool_size=1, max_uses=1_000)
    await pool.start()
    try:
        result = await pool.run("block", timeout_s=0.2)
        assert result.timed_out and result.error is not None and "0.2 seconds" in result.error
        assert await asyncio.wait_for(_stdout(pool, "next"), 5) == "next"
        assert launcher.starts == 2
    finally:
        launcher.run_gate.set()
        await pool.aclose()
