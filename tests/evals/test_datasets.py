from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

import evals
from evals import DatasetError, FieldMap, count_dataset, load_dataset, parse_shard
from runtime.problem import Problem


def test_all_is_complete_and_importable() -> None:
    public = {
        n for n, v in vars(evals).items() if not n.startswith("_") and not inspect.ismodule(v)
    }
    public.discard("annotations")
    assert set(evals.__all__) == public
    for name in evals.__all__:
        assert getattr(evals, name) is not None


# --- bundled datasets ---------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "n"), [("math", 5000), ("math500", 500), ("gsm8k", 1319)])
def test_counts(spec: str, n: int) -> None:
    assert count_dataset(spec) == n


def test_math_rows_and_list_answers() -> None:
    by_id = {p.id: p for p in load_dataset("math")}
    first = by_id["math-1"]
    assert first.answer == ("2",)
    assert first.source == "math"
    assert first.meta == {"human_type": "Real"}
    assert by_id["math-334"].answer == ("3", "-3")
    assert by_id["math-2717"].answer == ("(10,0)", "(0,0)")
    assert by_id["math-2937"].answer == ("(3, -5)", "(0, 0)")
    # The annotation's literal TAB ("\tfrac" eaten by an escape) is repaired.
    assert by_id["math-2913"].answer[0] == "\\left(\\tfrac32, -\\tfrac52\\right)"
    lists = [p.id for p in by_id.values() if len(p.answer) > 1]
    assert lists == ["math-334", "math-2717", "math-2913", "math-2937"]
    assert all(isinstance(p, Problem) and p.question for p in by_id.values())


def test_math500_is_a_subset_of_math_with_the_same_answers() -> None:
    math = {p.id: p for p in load_dataset("math")}
    sub = list(load_dataset("math500"))
    assert len({p.id for p in sub}) == 500
    for p in sub:
        assert p.id in math
        assert p.answer == math[p.id].answer
        assert p.question == math[p.id].question
        assert p.source == "math500"
        assert set(p.meta) == {"human_type", "unique_id", "level", "subject"}
    assert sub[0].id == "math-4915"  # the order of the index file
    assert sub[0].meta["unique_id"] == "test/precalculus/807.json"


def test_gsm8k_gold_and_thousands_separator() -> None:
    rows = list(load_dataset("gsm8k"))
    assert rows[0].id == "gsm8k-0"
    assert rows[0].answer == ("18",)
    assert rows[0].meta["solution"].endswith("#### 18")
    with_sep = [p for p in rows if "," in p.meta["solution"].rpartition("####")[2]]
    assert with_sep, "the test set has golds like 2,125"
    assert rows[146].meta["solution"].endswith("#### 2,125")
    assert rows[146].answer == ("2125",)
    assert all("," not in p.answer[0] for p in rows)
    assert all(p.answer[0] and p.answer[0].lstrip("-").replace(".", "").isdigit() for p in rows)


# --- limit and shard ----------------------------------------------------------------------------


def test_limit_then_shard() -> None:
    first20 = [p.id for p in load_dataset("gsm8k", limit=20)]
    assert first20 == [f"gsm8k-{k}" for k in range(20)]
    shard0 = [p.id for p in load_dataset("gsm8k", limit=20, shard=(0, 2))]
    shard1 = [p.id for p in load_dataset("gsm8k", limit=20, shard=(1, 2))]
    assert len(shard0) == len(shard1) == 10
    assert shard0 == first20[0::2]
    assert count_dataset("gsm8k", limit=20, shard=(1, 2)) == 10
    assert list(load_dataset("math", limit=0)) == []


@pytest.mark.parametrize("n", [1, 3, 7])
def test_shards_partition_the_data(n: int) -> None:
    everything = [p.id for p in load_dataset("math500")]
    shards = [[p.id for p in load_dataset("math500", shard=(i, n))] for i in range(n)]
    flat = [pid for shard in shards for pid in shard]
    assert len(flat) == len(set(flat)) == len(everything)
    assert set(flat) == set(everything)


@pytest.mark.parametrize(
    ("text", "expected"), [("0/2", (0, 2)), ("3/4", (3, 4)), (" 0 / 1 ", (0, 1))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "1/0", "-1/2", "a/b", "1", "1/2/3", ""])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_bad_limit_and_shard_arguments() -> None:
    with pytest.raises(ValueError, match="limit"):
        load_dataset("math", limit=-1)
    with pytest.raises(ValueError, match="shard"):
        load_dataset("math", shard=(2, 2))


# --- user files ---------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_user_jsonl_with_custom_fields(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mine.jsonl", [
        {"qid": "a", "problem": "1+1?", "gold": 2, "level": 1},
        {"problem": "half?", "gold": ["1/2", 0.5]},
    ])
    fields = FieldMap(id="qid", question="problem", answer="gold")
    rows = list(load_dataset(str(path), fields=fields))
    assert rows[0] == Problem("a", "1+1?", ("2",), "mine", {"level": 1})
    assert rows[1].id == "mine-1"
    assert rows[1].answer == ("1/2", "0.5")


@pytest.mark.parametrize("key", ["examples", "example", None])
def test_user_json_list_or_examples(tmp_path: Path, key: str | None) -> None:
    items = [{"id": 7, "question": "q0", "answer": "x"}, {"question": "q1", "answer": "y"}]
    path = tmp_path / "set.json"
    path.write_text(json.dumps({key: items} if key else items), encoding="utf-8")
    rows = list(load_dataset(str(path)))
    got = [(p.id, p.question, p.answer) for p in rows]
    assert got == [("7", "q0", ("x",)), ("set-1", "q1", ("y",))]


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"question": "q", "answer": "1"', None, "invalid JSON"),
        ('[1, 2]', None, "expected a JSON object"),
        ('{"answer": "1"}', "question", "missing"),
        ('{"question": "  ", "answer": "1"}', "question", "empty"),
        ('{"question": 5, "answer": "1"}', "question", "expected a string"),
        ('{"question": "q"}', "answer", "missing"),
        ('{"question": "q", "answer": null}', "answer", "null"),
        ('{"question": "q", "answer": true}', "answer", "bool"),
        ('{"question": "q", "answer": []}', "answer", "empty list"),
        ('{"question": "q", "answer": ["1", {}]}', "answer", "dict"),
        ('{"question": "q", "answer": ""}', "answer", "empty"),
        ('{"question": "q", "answer": "1", "id": [1]}', "id", "expected a string or integer"),
        ('{"question": "q", "answer": "1", "id": "0"}', None, "duplicate id '0'"),
    ],
)
def test_malformed_jsonl_rows(tmp_path: Path, line: str, field: str | None, message: str) -> None:
    path = tmp_path / "data.jsonl"
    first = '{"id": "0", "question": "ok", "answer": "1"}\n\n'  # a blank line 2 is skipped
    path.write_text(first + line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        list(load_dataset(str(path)))
    err = info.value
    assert (err.file, err.line, err.field) == (str(path), 3, field)
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"{path}:3: ")
    if field is not None:
        assert f"field {field!r}: " in text
    assert message in text


def test_malformed_json_item_names_its_index(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    items = [{"question": "q", "answer": "1"}, {"question": "q"}]
    path.write_text(json.dumps(items), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"data\.json:1: field 'answer': missing"):
        list(load_dataset(str(path)))


def test_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "1"}\n{"question": "\xff", "answer": "1"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: not UTF-8"):
        list(load_dataset(str(path)))


@pytest.mark.parametrize("doc", ['{"rows": []}', '"text"', "{not json"])
def test_bad_json_document(tmp_path: Path, doc: str) -> None:
    path = tmp_path / "doc.json"
    path.write_text(doc, encoding="utf-8")
    with pytest.raises(DatasetError, match=r"doc\.json"):
        list(load_dataset(str(path)))


def test_unknown_spec_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="gsm8k, math, math500"):
        load_dataset("no-such-dataset")
    other = tmp_path / "data.csv"
    other.write_text("q,a\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="use .json or .jsonl"):
        load_dataset(str(other))


def test_field_map_validates() -> None:
    with pytest.raises(ValueError):
        FieldMap(question="")
    with pytest.raises(ValueError):
        FieldMap(id="x", question="x")


# --- laziness -----------------------------------------------------------------------------------


def test_user_jsonl_is_read_lazily(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    good = '{"question": "q", "answer": "1"}\n'
    # A broken row near the END: reaching it would raise, so taking the first items proves
    # the loader has not read the file through.
    path.write_text(good * 100_000 + "{broken\n", encoding="utf-8")
    rows = load_dataset(str(path), limit=None)
    assert inspect.isgenerator(rows)
    first = next(rows)
    assert first.id == "big-0"
    assert [p.id for p in load_dataset(str(path), limit=3)] == ["big-0", "big-1", "big-2"]
    with pytest.raises(DatasetError, match=r"big\.jsonl:100001: invalid JSON"):
        for _ in rows:
            pass


@pytest.mark.parametrize(("spec", "n", "prefix"), [
    ("synth-arith", 1000, "synth-arith-test-0-"),
    ("synth-arith:train:7:3", 7, "synth-arith-train-3-"),
    ("synth-arith-hard:test:5", 5, "synth-arith-hard-test-0-"),
])
def test_synthetic_specs(spec: str, n: int, prefix: str) -> None:
    problems = list(load_dataset(spec))
    assert len(problems) == n and all(p.id.startswith(prefix) for p in problems)


@pytest.mark.parametrize("spec", ["synth-arith-hard:dev", "synth-arith-hard:test:x", "synth-arith:test:1:2:3"])
def test_synthetic_spec_mistakes_name_the_level(spec: str) -> None:
    with pytest.raises(DatasetError, match=f"expected {spec.split(':')[0]}\\[:train"):
        list(load_dataset(spec))
