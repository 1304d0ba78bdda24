"""The append-only results file: one JSON line per finished problem.

Crash safety comes from the file's shape, not from bookkeeping: a row is written as one
`write()` of a complete line and flushed before the next problem's row, so after a SIGKILL the
file holds every finished problem plus at most one torn last line, which `open_results` cuts off.
Re-running with the same path skips the ids already present — error rows included, unless the
run asks to retry them (`drop_errors`): then they are removed from the file first, by writing the
other rows to a temporary file beside it and renaming it over the original (atomic: a crash
leaves either file whole), so every id stays in the file at most once.

One run at a time per file: `exclusive_results` holds an advisory lock (flock on a `.NAME.lock`
file beside it, not on the results file, which --retry-errors replaces) for as long as a run
reads or appends, so a second run on the same --output is refused at once instead of
interleaving rows and duplicating ids. The kernel drops the lock when its process dies.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import structlog

from runtime.errors import ResultsError

log = structlog.get_logger(__name__)


@dataclass
class ExistingResults:
    done_ids: set[str] = field(default_factory=set)
    correct: int = 0
    torn_bytes: int = 0  # bytes of a torn last line that were cut off
    errors: int = 0  # error rows among done_ids
    dropped_errors: int = 0  # error rows removed from the file (drop_errors), not in done_ids


@contextmanager
def exclusive_results(path: Path) -> Iterator[None]:
    """Hold the lock of results file `path` (see the module docstring); ResultsError at once if
    another run holds it. Non-blocking, so it is safe on the event loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ResultsError(f"another run is writing {path}; wait for it to finish or use "
                               "another --output") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def scan_results(path: Path, config_hash: str | None, *, drop_errors: bool = False) -> ExistingResults:
    """Read what an earlier run left, and repair a torn last line in place.

    A torn line can only be the last one (rows are appended whole); a bad line anywhere else
    means the file is not ours or was edited, and we refuse rather than guess.
    """
    found = ExistingResults()
    if not path.exists():
        return found
    error_ids: set[str] = set()
    # Streamed line by line: a results file with whole MCTS trees can be far larger than memory.
    with path.open("rb+") as fh:
        good_end = 0
        last_complete = True
        for lineno, raw in enumerate(fh, start=1):
            last_complete = raw.endswith(b"\n")
            if raw.strip():
                try:
                    row = json.loads(raw)
                    if not isinstance(row, dict) or "id" not in row:
                        raise ValueError("not a results row")
                except ValueError:
                    if not last_complete:
                        break  # the torn last line of a killed run (only the last lacks "\n")
                    raise ResultsError(f"{path}:{lineno}: not a results row; use another --output") from None
                if config_hash is not None and row.get("config_hash") not in (None, config_hash):
                    raise ResultsError(
                        f"{path} holds results of a different configuration (config_hash "
                        f"{row.get('config_hash')} != {config_hash}); use another --output")
                found.done_ids.add(str(row["id"]))
                found.correct += bool(row.get("correct"))
                if row.get("error") is not None:
                    found.errors += 1
                    error_ids.add(str(row["id"]))
            good_end += len(raw)
        size = fh.seek(0, os.SEEK_END)
        if good_end < size:
            found.torn_bytes = size - good_end
            fh.truncate(good_end)
            log.warning("results_torn_line_dropped", path=str(path), bytes=found.torn_bytes)
        elif not last_complete:
            fh.write(b"\n")  # a complete last row whose newline never reached the disk
    if drop_errors and error_ids:
        _remove_rows(path, error_ids)
        found.done_ids -= error_ids
        found.dropped_errors, found.errors = found.errors, 0
        log.info("results_error_rows_dropped", path=str(path), rows=found.dropped_errors)
    return found


def _remove_rows(path: Path, ids: set[str]) -> None:
    """Rewrite `path` without the rows whose id is in `ids` (an atomic rename at the end)."""
    tmp = path.with_name(f".{path.name}.retry-tmp")
    with path.open("rb") as src, tmp.open("wb") as dst:
        for raw in src:
            if raw.strip() and str(json.loads(raw)["id"]) in ids:
                continue
            dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)


class ResultsWriter:
    """Appends rows; safe to call from many tasks (one lock, writes in a worker thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: IO[bytes] = path.open("ab")
        self._lock = asyncio.Lock()

    def _write_line(self, line: bytes) -> None:
        self._fh.write(line)
        # flush, not fsync: a killed process loses nothing flushed to the OS; fsync per row would
        # cost milliseconds and only guards against power loss, which close() covers at the end.
        self._fh.flush()

    async def write(self, row: dict[str, Any]) -> None:
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        async with self._lock:
            await asyncio.to_thread(self._write_line, line)

    async def aclose(self) -> None:
        async with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
