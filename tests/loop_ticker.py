"""Proof that awaited work does not block the event loop: count ticks of a task that sleeps."""

from __future__ import annotations

import asyncio
from types import TracebackType


class LoopTicker:
    """`async with LoopTicker(0.01) as t: ...` then assert on `t.ticks`."""

    def __init__(self, interval_s: float = 0.0) -> None:
        self.interval_s = interval_s
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.ticks += 1
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> LoopTicker:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
