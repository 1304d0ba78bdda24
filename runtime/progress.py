"""Live views: of a run (done/total, accuracy so far, problems per second) and of a training
(steps, recent losses)."""

from __future__ import annotations

import time
from collections import deque
from types import TracebackType
from typing import Any, Self

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


class _Live:
    """A rich `Progress` shown while the `with` block runs."""

    _progress: Progress

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()


class RunProgress(_Live):
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


class TrainProgress(_Live):
    """Steps done of the run's last step, and the LM and value losses averaged over the recent
    steps: one step's losses swing with its batch (length-grouped batches of incorrect paths
    alone have no LM term), the mean of the last `window` shows the trend."""

    def __init__(self, *, enabled: bool, console: Console, window: int = 50) -> None:
        self._recent: deque[tuple[float, float]] = deque(maxlen=window)
        self._progress = Progress(
            TextColumn("[bold]training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps  lm {task.fields[lm]}  value {task.fields[value]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        # The total is unknown until the data is encoded: the first step sets it.
        self._task = self._progress.add_task("train", total=None, lm="-", value="-")

    def update(self, step: int, last_step: int, losses: dict[str, float]) -> None:
        first = not self._recent
        self._recent.append((losses["lm"], losses["value"]))
        lm, value = (sum(x) / len(self._recent) for x in zip(*self._recent))
        shown = {"total": last_step, "completed": step, "lm": f"{lm:.3f}", "value": f"{value:.3f}"}
        if first:
            # A resumed run starts at its checkpoint's step: a reset keeps that jump out of the
            # speed estimate (and so out of the time remaining).
            self._progress.reset(self._task, **shown)
        else:
            self._progress.update(self._task, **shown)
