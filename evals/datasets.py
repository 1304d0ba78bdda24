"""Datasets: the bundled MATH (MARIO_EVAL annotation), MATH-500 and GSM8K test sets, and user files.

Every dataset is yielded lazily as `runtime.problem.Problem`s in a fixed order, so `--limit` and
`--shard` select the same problems on every run and results of different runs can be joined by id.

Order of selection: `limit` takes the first N items of the dataset, THEN `shard` = (i, n) keeps
the items whose 0-based position k (within those N) has k % n == i. So `--limit 20 --shard 0/2`
and `--limit 20 --shard 1/2` split the same 20 problems into 10 + 10.

Nothing is dropped silently: a malformed row of a user file raises `DatasetError` naming the
file, the line (1-based for JSONL, the 0-based item index for JSON) and the field.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from evals.errors import DatasetError
from runtime.problem import Problem

__all__ = ["BUILTIN_DATASETS", "FieldMap", "count_dataset", "load_dataset", "parse_shard"]

#: Names accepted by `load_dataset` besides a path to a .json / .jsonl file.
BUILTIN_DATASETS: tuple[str, ...] = ("gsm8k", "math", "math500", "synth-arith", "synth-arith-hard")

_MATH_FILE = "math_testset_annotation.json"
_MATH500_FILE = "math500_unique_id_to_mario_eval_index.json"
_GSM8K_FILE = "gsm8k_test.jsonl"
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class FieldMap:
    """Which keys of a user file's rows hold the id, the question and the answer."""

    id: str = "id"
    question: str = "question"
    answer: str = "answer"

    def __post_init__(self) -> None:
        for name in ("id", "question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"FieldMap.{name} must be a non-empty string, got {value!r}")
        if len({self.id, self.question, self.answer}) != 3:
            raise ValueError(f"FieldMap fields must be distinct, got {self}")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `"i/n"` into `(i, n)`. 0-based: `0 <= i < n`, so `0/2` and `1/2` are the two halves."""
    m = _SHARD_RE.match(text)
    if m is None:
        raise ValueError(f"shard must look like 'i/n' (e.g. '0/4'), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    _check_shard((i, n))
    return i, n


def load_dataset(
    spec: str,
    *,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    fields: FieldMap | None = None,
) -> Iterator[Problem]:
    """Yield the problems of `spec`: a name in `BUILTIN_DATASETS` or a path to a .json/.jsonl file.

    The spec and the arguments are checked now (an unknown spec raises `DatasetError` at once);
    rows are read as they are consumed. JSONL is streamed line by line; a JSON file is one
    document, so it is parsed whole when iteration starts. `fields` applies to user files only.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if shard is not None:
        _check_shard(shard)
    rows = _open_source(spec, fields or FieldMap())
    return _select(rows, limit, shard)


def count_dataset(
    spec: str,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
    fields: FieldMap | None = None,
) -> int:
    """How many problems `load_dataset` yields with these arguments (reads the data once)."""
    return sum(1 for _ in load_dataset(spec, limit=limit, shard=shard, fields=fields))


# --- selection ---------------------------------------------------------------------------------


def _check_shard(shard: tuple[int, int]) -> None:
    try:
        i, n = shard
    except (TypeError, ValueError):
        raise ValueError(f"shard must be a pair (i, n), got {shard!r}") from None
    if not (isinstance(i, int) and isinstance(n, int)) or n < 1 or not 0 <= i < n:
        raise ValueError(f"shard (i, n) needs 0 <= i < n (0-based), got {i}/{n}")


def _select(
    rows: Iterator[Problem], limit: int | None, shard: tuple[int, int] | None
) -> Iterator[Problem]:
    if limit is not None:
        rows = itertools.islice(rows, limit)
    if shard is None:
        yield from rows
        return
    i, n = shard
    for k, problem in enumerate(rows):
        if k % n == i:
            yield problem


def _open_source(spec: str, fields: FieldMap) -> Iterator[Problem]:
    if spec == "math":
        return _iter_math()
    if spec == "math500":
        return _iter_math500()
    if spec == "gsm8k":
        return _iter_gsm8k()
    if spec.split(":")[0] in ("synth-arith", "synth-arith-hard"):
        return _synth_arith(spec)
    path = Path(spec)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _unique_ids(_iter_user_jsonl(path, fields), str(path))
        if suffix == ".json":
            return _unique_ids(_iter_user_json(path, fields), str(path))
        raise DatasetError(str(path), None, None, "unsupported file type; use .json or .jsonl")
    known = ", ".join(BUILTIN_DATASETS)
    raise DatasetError(
        spec, None, None, f"unknown dataset: not a known name ({known}) nor an existing file"
    )


def _synth_arith(spec: str) -> Iterator[Problem]:
    """`synth-arith[-hard][:split[:n[:seed]]]`, defaults test, 1000, 0: generated, nothing on disk."""
    from evals.synthetic import synth_arith_problems

    level, *parts = spec.split(":")
    usage = f"expected {level}[:train|test[:N[:SEED]]]"
    split = parts[0] if parts else "test"
    try:
        n = int(parts[1]) if len(parts) > 1 else 1000
        seed = int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        raise DatasetError(spec, None, None, usage) from None
    if split not in ("train", "test") or n < 1 or len(parts) > 3:
        raise DatasetError(spec, None, None, usage)
    return synth_arith_problems(split, n, seed, level=level)


# --- bundled data ------------------------------------------------------------------------------


def _data_file(name: str) -> Any:
    """A Traversable for a bundled file (package data, so it works from a wheel too)."""
    return resources.files("evals").joinpath("data", name)


def _math_answer(raw: str | list[str]) -> tuple[str, ...]:
    answers = [raw] if isinstance(raw, str) else list(raw)
    # Quirk of the annotation (index 2913): a literal TAB where "\t" of "\tfrac" was meant.
    # MARIO_EVAL's normalizer repairs it the same way; no MATH answer contains a real tab.
    return tuple(a.replace("\t", "\\t") for a in answers)


def _load_math_rows() -> list[dict[str, Any]]:
    with _data_file(_MATH_FILE).open("r", encoding="utf-8") as fh:
        rows: list[dict[str, Any]] = json.load(fh)
    return rows


def _math_problem(row: dict[str, Any], source: str, **extra: Any) -> Problem:
    return Problem(
        id=f"math-{row['index']}",
        question=row["question"],
        answer=_math_answer(row["answer"]),
        source=source,
        meta={"human_type": row["human_type"], **extra},
    )


def _iter_math() -> Iterator[Problem]:
    for row in _load_math_rows():
        yield _math_problem(row, "math")


def _iter_math500() -> Iterator[Problem]:
    by_index = {row["index"]: row for row in _load_math_rows()}
    with _data_file(_MATH500_FILE).open("r", encoding="utf-8") as fh:
        selection: list[dict[str, Any]] = json.load(fh)
    for sel in selection:
        yield _math_problem(
            by_index[sel["mario_eval_index"]],
            "math500",
            unique_id=sel["unique_id"],
            level=sel["level"],
            subject=sel["subject"],
        )


def gsm8k_gold(solution: str) -> str:
    """The gold number of a GSM8K solution: the text after `####`, without thousands separators."""
    return solution.rpartition("####")[2].strip().replace(",", "")


def _iter_gsm8k() -> Iterator[Problem]:
    with _data_file(_GSM8K_FILE).open("r", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh):
            row = json.loads(line)
            yield Problem(
                id=f"gsm8k-{line_no}",
                question=row["question"],
                answer=(gsm8k_gold(row["answer"]),),
                source="gsm8k",
                meta={"solution": row["answer"]},
            )


# --- user files --------------------------------------------------------------------------------


def _unique_ids(rows: Iterable[tuple[int, Problem]], file: str) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for line, problem in rows:
        first = seen.setdefault(problem.id, line)
        if first != line:
            raise DatasetError(file, line, None, f"duplicate id {problem.id!r} (first at {first})")
        yield problem


def _iter_user_jsonl(path: Path, fields: FieldMap) -> Iterator[tuple[int, Problem]]:
    file = str(path)
    position = 0
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(file, line_no, None, f"not UTF-8: {exc.reason}") from exc
            if not text.strip():
                continue  # blank lines carry no row
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DatasetError(file, line_no, None, f"invalid JSON: {exc.msg}") from exc
            yield line_no, _user_problem(obj, fields, file, line_no, path.stem, position)
            position += 1


def _iter_user_json(path: Path, fields: FieldMap) -> Iterator[tuple[int, Problem]]:
    file = str(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DatasetError(file, None, None, f"not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(file, exc.lineno, None, f"invalid JSON: {exc.msg}") from exc
    if isinstance(doc, dict):
        key = next((k for k in ("examples", "example") if k in doc), None)
        doc = doc[key] if key is not None else None
    if not isinstance(doc, list):
        raise DatasetError(
            file, None, None, "expected a JSON list of objects or {\"examples\": [...]}"
        )
    for index, obj in enumerate(doc):
        yield index, _user_problem(obj, fields, file, index, path.stem, index)


def _user_problem(
    obj: Any, fields: FieldMap, file: str, line: int, stem: str, position: int
) -> Problem:
    if not isinstance(obj, dict):
        raise DatasetError(file, line, None, f"expected a JSON object, got {_kind(obj)}")

    def fail(field: str, message: str) -> DatasetError:
        return DatasetError(file, line, field, message)

    # 1) question: a non-empty string
    if fields.question not in obj:
        raise fail(fields.question, "missing")
    question = obj[fields.question]
    if not isinstance(question, str):
        raise fail(fields.question, f"expected a string, got {_kind(question)}")
    if not question.strip():
        raise fail(fields.question, "empty")

    # 2) answer: a string or number, or a non-empty list of those
    if fields.answer not in obj:
        raise fail(fields.answer, "missing")
    raw = obj[fields.answer]
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise fail(fields.answer, "empty list")
    answers: list[str] = []
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                raise fail(fields.answer, "empty")
            answers.append(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            answers.append(str(item))
        else:
            raise fail(
                fields.answer, f"expected a string, number or list of those, got {_kind(item)}"
            )

    # 3) id: a string or int; defaults to "<file stem>-<position>"
    if fields.id in obj:
        raw_id = obj[fields.id]
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise fail(fields.id, f"expected a string or integer, got {_kind(raw_id)}")
        pid = str(raw_id)
        if not pid.strip():
            raise fail(fields.id, "empty")
    else:
        pid = f"{stem}-{position}"

    mapped = {fields.id, fields.question, fields.answer}
    meta = {k: v for k, v in obj.items() if k not in mapped}
    return Problem(id=pid, question=question, answer=tuple(answers), source=stem, meta=meta)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
