"""Small asyncio helpers shared by engines and strategies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

__all__ = ["gather_cancelling"]

T = TypeVar("T")


async def gather_cancelling(aws: Iterable[Awaitable[T]]) -> list[T]:
    """`asyncio.gather` that cancels (and awaits) the siblings when one fails or the caller is
    cancelled, so no engine request outlives the search that wanted it. Unlike a TaskGroup it
    re-raises the first error as it is, not wrapped in an ExceptionGroup, so an error row names
    the real error."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
