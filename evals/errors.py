"""Errors of the evals package.

    AlphaMathError (runtime.errors)   base of every error we raise on purpose
    ├── DatasetError                  a dataset spec or a row of a dataset file is unusable; the
    │                                 CLI prints the one-line message and stops (recoverable by
    │                                 fixing the file or the field mapping)
    └── ScoreError                    a results file cannot be scored (a malformed line in the
                                      middle, a duplicate id); not recoverable by retrying

Grading never raises: `evals.grader` turns every failure (parse error, timeout, dead worker)
into a False verdict, so neither error appears there.
"""

from __future__ import annotations

from runtime.errors import AlphaMathError


class DatasetError(AlphaMathError):
    """A bad dataset spec or row. `str()` is one line: `data.jsonl:17: field 'answer': missing`.

    `line` is the 1-based line for JSONL files and the 0-based item index for JSON lists;
    `field` is None when the problem is not about one field (bad JSON, unknown spec).
    """

    def __init__(self, file: str, line: int | None, field: str | None, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = f"field {self.field!r}: " if self.field is not None else ""
        return " ".join(f"{where}: {what}{self.message}".split())  # always one line

    def __reduce__(self) -> tuple[object, ...]:  # keep it picklable despite the custom __init__
        return (type(self), (self.file, self.line, self.field, self.message))


class ScoreError(AlphaMathError):
    """A results file that cannot be scored; the message names `file:line`."""
