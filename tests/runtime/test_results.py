from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errors import ResultsError
from runtime.results import ResultsWriter, exclusive_results, scan_results


def _row(i: int, correct: bool = True, config_hash: str = "h") -> dict:
    return {"id": f"p{i}", "correct": correct, "config_hash": config_hash}


def _write(path: Path, rows: list[dict], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + tail)


def test_missing_file_is_empty(tmp_path: Path) -> None:
    found = scan_results(tmp_path / "nope.jsonl", "h")
    assert found.done_ids == set() and found.correct == 0


def test_finished_ids_and_correct_count(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    _write(path, [_row(0), _row(1, False), _row(2)])
    found = scan_results(path, "h")
    assert found.done_ids == {"p0", "p1", "p2"}
    assert found.correct == 2


def test_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    _write(path, [_row(0), _row(1)], tail=b'{"id": "p2", "corr')
    found = scan_results(path, "h")
    assert found.done_ids == {"p0", "p1"}
    assert found.torn_bytes == len(b'{"id": "p2", "corr')
    # The file is repaired so appending goes on from a clean line boundary.
    assert path.read_bytes().endswith(b"\n")
    assert len(path.read_bytes().splitlines()) == 2


def test_complete_last_row_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(_row(0)).encode() + b"\n" + json.dumps(_row(1)).encode())
    found = scan_results(path, "h")
    assert found.done_ids == {"p0", "p1"}
    assert path.read_bytes().endswith(b"\n")


def test_bad_line_in_the_middle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(json.dumps(_row(0)).encode() + b"\nnot json\n" + json.dumps(_row(1)).encode() + b"\n")
    with pytest.raises(ResultsError, match=r"r.jsonl:2"):
        scan_results(path, "h")


def test_other_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    _write(path, [_row(0, config_hash="other")])
    with pytest.raises(ResultsError, match="different configuration"):
        scan_results(path, "h")


async def test_writer_appends_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.jsonl"
    writer = ResultsWriter(path)
    import asyncio

    await asyncio.gather(*(writer.write({"id": f"p{i}", "text": "x" * 10_000}) for i in range(50)))
    await writer.aclose()
    lines = path.read_bytes().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(f"p{i}" for i in range(50))


def test_error_rows_count_as_done_unless_dropped(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    failed = {**_row(1, False), "error": "EngineError: server down"}
    _write(path, [_row(0), failed, _row(2)])
    kept = scan_results(path, "h")
    assert kept.done_ids == {"p0", "p1", "p2"} and kept.errors == 1 and kept.dropped_errors == 0

    before = path.read_text().splitlines()
    found = scan_results(path, "h", drop_errors=True)
    assert found.done_ids == {"p0", "p2"} and found.correct == 2
    assert found.errors == 0 and found.dropped_errors == 1
    # The other rows are kept byte for byte, in order; no temporary file is left behind.
    assert path.read_text().splitlines() == [before[0], before[2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl"]


def test_one_run_at_a_time_per_results_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "r.jsonl"
    with exclusive_results(path):
        # flock conflicts between open file descriptions, so a second holder in this very
        # process stands in for a second run
        with pytest.raises(ResultsError, match="another run is writing .*r.jsonl"):
            with exclusive_results(path):
                pass
        with exclusive_results(tmp_path / "run" / "other.jsonl"):  # another file: no conflict
            pass
    with exclusive_results(path):  # released at exit
        pass
