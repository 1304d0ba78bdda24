"""The live view of a run: done/total, accuracy so far, problems per second."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    def __init__(self, *, total: int, done: int, correct: int, enabled: bool, console: Console) -> None:
        self.total = total
        self.done = done
        self.correct = correct
        self._new = 0
        self._solving_since: float | None = None
        self._progress = Progress(
            TextColumn("[bold]solving"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("{task.fields[rate]} problems/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task("solve", total=total, completed=done,
                                             acc=self._acc(), rate="-")

    def _acc(self) -> str:
        return f"{100 * self.correct / self.done:.1f}%" if self.done else "-"

    def update(self, row: dict[str, Any]) -> None:
        self.done += 1
        self._new += 1
        self.correct += bool(row.get("correct"))
        # Rate since solving began — the first finished problem's end minus its own wall time —
        # so that model loading does not count against it.
        now = time.monotonic()
        if self._solving_since is None:
            wall = (row.get("stats") or {}).get("wall_s") or 0.0
            self._solving_since = now - float(wall)
        elapsed = now - self._solving_since
        rate = f"{self._new / elapsed:.2f}" if elapsed > 0 else "-"
        self._progress.update(self._task, completed=self.done, acc=self._acc(), rate=rate)

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()
