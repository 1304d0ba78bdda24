"""Ground-truth MCTS trees → training rows: Q targets, the solution filter, sampling, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.errors import AlphaMathError
from runtime.react import SENTINEL_NO_VALID_CHILD, get_format
from runtime.tree import Node, Tree
from training.data import export_training, read_training_rows, solution_paths
from training.errors import TrainingDataError

SFT = get_format("react_sft")
QUESTION = "Tom has 2 apples and buys 3 more. How many apples?"


def exact(reference: str, prediction: str) -> bool:
    return reference.strip() == prediction.strip()


def backup(tree: Tree, node: Node, value: float) -> None:
    cur: Node | None = node
    while cur is not None:
        cur.visits += 1
        cur.value_sum += value
        cur = tree.nodes[cur.parent] if cur.parent is not None else None


def code(tree: Tree, parent: Node, thought: str, obs: str, *, error: bool = False,
         value: float | None = 0.0) -> Node:
    step = SFT.parse(SFT.format_step(thought, code=f"print({obs!r})"))
    node = tree.add_child(parent, text=SFT.with_observation(step, obs), code=step.code,
                          observation=obs, code_error=error)
    if value is not None:
        backup(tree, node, value)  # V(leaf) as MCTS backs it up when the node is expanded
    return node


def answer(tree: Tree, parent: Node, thought: str, ans: str, reward: float) -> Node:
    text = SFT.parse(SFT.format_step(thought, final_answer=ans)).text
    node = tree.add_child(parent, text=text, final_answer=ans, terminal=True, reward=reward)
    backup(tree, node, reward)
    return node


def build_tree() -> tuple[Tree, dict[str, Node]]:
    t = Tree()
    r = t.root
    n: dict[str, Node] = {}
    # level-1 positives (answer 5 equals a code output), one duplicate, a negative
    n["A"] = code(t, r, "add", "5", value=0.5)
    n["A1"] = answer(t, n["A"], "done", "5", 1.0)
    n["A2"] = answer(t, n["A"], "done", "7", -1.0)
    n["A3"] = answer(t, n["A"], "done", "5", 1.0)  # same text as A1: a duplicate
    n["G"] = code(t, r, "sum it", "5", value=0.2)
    n["G1"] = answer(t, n["G"], "so", "5", 1.0)
    n["H"] = code(t, r, "again", "5", value=-0.1)
    n["H1"] = answer(t, n["H"], "thus", "5", 1.0)
    # every code step errs: dropped, positive or negative
    n["B"] = code(t, r, "oops", "NameError: x", error=True, value=-0.3)
    n["B1"] = answer(t, n["B"], "guess", "5", 1.0)
    n["B2"] = answer(t, n["B"], "guess", "3", -1.0)
    # level 2: no code error, answer not a code output
    n["C"] = code(t, r, "partial", "4", value=0.1)
    n["C1"] = answer(t, n["C"], "plus one", "5", 1.0)
    n["C2"] = code(t, n["C"], "unexpanded", "9", value=None)  # no outcome: not a candidate
    # level 3: a code error on the way, but not only errors
    n["D"] = code(t, r, "first", "2", value=0.0)
    n["D2"] = code(t, n["D"], "second", "SyntaxError: bad", error=True, value=0.0)
    n["D3"] = answer(t, n["D2"], "hence", "5", 1.0)
    # negatives: an invalid terminal and wrong answers
    n["E"] = t.add_child(r, text="garbage", terminal=True, final_answer=SENTINEL_NO_VALID_CHILD,
                         reward=-1.0)
    backup(t, n["E"], -1.0)
    n["I"] = code(t, r, "other", "6", value=-0.5)
    for k, ans in enumerate(("6", "8", "9")):
        n[f"I{k + 1}"] = answer(t, n["I"], f"try {k}", ans, -1.0)
    return t, n


def write_results(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def result_row(tree: Tree, qid: str = "q1", **extra) -> dict:
    row = {"id": qid, "question": QUESTION, "answer": "5", "strategy": "mcts",
           "prediction": "5", "correct": True, "tree": tree.to_json(), "error": None}
    row.update(extra)
    return row


def texts(node_path: list[Node]) -> list[str]:
    return [nd.text for nd in node_path]


def test_exact_rows_q_targets_filter_and_ranking(tmp_path: Path) -> None:
    tree, n = build_tree()
    # hand-computed Q of the first path: A got V=0.5, then +1, -1, +1 from its answers
    assert n["A"].visits == 4 and n["A"].q == pytest.approx(1.5 / 4)
    results = write_results(tmp_path / "r.jsonl", [result_row(tree)])
    out = tmp_path / "train.jsonl"
    summary = export_training(results, out, seed=3, equiv=exact)
    rows = [json.loads(line) for line in out.read_text().splitlines()]

    assert summary.candidates == 13 and summary.duplicates == 1 and summary.all_error_dropped == 2
    assert summary.positives == 4 and summary.negatives == 4
    assert summary.levels == {1: 3, 2: 1, 3: 0}
    pos = [r for r in rows if r["correct"]]
    neg = [r for r in rows if not r["correct"]]
    assert rows == pos + neg  # positives first
    assert all(r["prompt"] == f"<question> {QUESTION} </question>\n" for r in rows)
    assert all(r["id"] == "q1" for r in rows)

    by_text = {tuple(texts(tree.path(n[k]))): k for k in n if n[k].terminal and k != "A3"}  # A3 = A1
    pos_leaves = [by_text[tuple(s["text"] for s in r["steps"])] for r in pos]
    # ranking: the three level-1 paths (any order), then the level-2 one; D3 (level 3) is cut
    assert sorted(pos_leaves[:3]) == ["A1", "G1", "H1"] and pos_leaves[3] == "C1"
    neg_leaves = {by_text[tuple(s["text"] for s in r["steps"])] for r in neg}
    assert len(neg_leaves) == 4 and neg_leaves <= {"A2", "E", "I1", "I2", "I3"}
    assert not {"B1", "B2", "A3", "C2"} & (set(pos_leaves) | neg_leaves)

    # every step's target is its node's Q; the terminal's is the ±1 reward
    for row in rows:
        leaf = by_text[tuple(s["text"] for s in row["steps"])]
        nodes = tree.path(n[leaf])
        assert [s["q"] for s in row["steps"]] == [nd.q for nd in nodes]
        assert row["steps"][-1]["q"] == (1.0 if row["correct"] else -1.0)
    a1 = next(r for r in pos if by_text[tuple(s["text"] for s in r["steps"])] == "A1")
    assert [s["q"] for s in a1["steps"]] == [pytest.approx(0.375), 1.0]
    # the prompt + steps are the react_sft prompt bytes the policy sees
    assert a1["prompt"] + "".join(s["text"] + "\n" for s in a1["steps"]) == \
        SFT.build_prompt(QUESTION, texts(tree.path(n["A1"])))

    # reproducible by seed; read back as TrainingRow
    again = tmp_path / "again.jsonl"
    export_training(results, again, seed=3, equiv=exact)
    assert again.read_text() == out.read_text()
    loaded = read_training_rows(out)
    assert len(loaded) == 8 and loaded[0].steps[-1].q == 1.0


def test_caps_and_pooling_across_trees(tmp_path: Path) -> None:
    tree, _ = build_tree()
    # the same tree twice (two runs): all duplicates, so the rows do not double
    results = write_results(tmp_path / "r.jsonl", [result_row(tree), result_row(tree)])
    summary = export_training(results, tmp_path / "o.jsonl", max_per_class=2, equiv=exact)
    assert summary.trees == 2 and summary.questions == 1
    assert summary.duplicates == 1 + 13
    assert summary.positives == 2 and summary.negatives == 2 and summary.levels[1] == 2


def test_default_grader_ranks_by_is_equiv(tmp_path: Path) -> None:
    t = Tree()
    a = code(t, t.root, "compute", "5.0", value=0.0)
    answer(t, a, "so", "5", 1.0)  # 5 == 5.0 by is_equiv, not by string
    results = write_results(tmp_path / "r.jsonl", [result_row(t)])
    summary = export_training(results, tmp_path / "o.jsonl")
    assert summary.levels == {1: 1, 2: 0, 3: 0}


def test_react_format_trees_become_react_sft_steps(tmp_path: Path) -> None:
    react = get_format("react")
    t = Tree()
    step = react.parse(react.format_step("Add them.", code="print(2 + 3)"))
    c = t.add_child(t.root, text=react.with_observation(step, "5"), code=step.code, observation="5")
    backup(t, c, 0.0)
    final = react.parse(react.format_step("Done.", final_answer="5"))
    leaf = t.add_child(c, text=final.text, final_answer="5", terminal=True, reward=1.0)
    backup(t, leaf, 1.0)
    (path,) = solution_paths(t)
    first, last = (s.text for s in path.steps)
    assert first == "<step>\n<p>\nAdd them.\n</p>\n<code>\n```python\nprint(2 + 3)\n```\n</code>\n" \
                    "<output>\n5\n</output>\n</step>"
    assert last == "<step>\n<p>\nDone.\n</p>\n<p>\nFinal Answer: 5\n</p>\n</step>"
    assert SFT.parse(last).final_answer == "5"


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"answer": None}, "no ground-truth 'answer'"),
        ({"answer": []}, "no ground-truth 'answer'"),
        ({"tree": None}, "has no search tree"),
        ({"tree": {"nodes": [{"id": 0, "parent": None}]}}, "malformed tree"),
    ],
)
def test_unusable_results_rows(tmp_path: Path, row: dict, match: str) -> None:
    tree, _ = build_tree()
    base = result_row(tree)
    base.update(row)
    results = write_results(tmp_path / "r.jsonl", [base])
    out = tmp_path / "o.jsonl"
    with pytest.raises(TrainingDataError, match=match) as info:
        export_training(results, out, equiv=exact)
    assert isinstance(info.value, AlphaMathError) and "\n" not in str(info.value)
    assert not out.exists()


def test_missing_answer_key_and_inference_trees(tmp_path: Path) -> None:
    tree, _ = build_tree()
    row = result_row(tree)
    del row["answer"]
    with pytest.raises(TrainingDataError, match="ground-truth"):
        export_training(write_results(tmp_path / "a.jsonl", [row]), tmp_path / "o.jsonl", equiv=exact)
    # an inference tree: answer leaves value-scored, reward None
    t = Tree()
    leaf = t.add_child(t.root, text="x", final_answer="5", terminal=True)
    backup(t, leaf, 0.3)
    with pytest.raises(TrainingDataError, match="not built with the ground truth"):
        export_training(write_results(tmp_path / "b.jsonl", [result_row(t)]), tmp_path / "o.jsonl",
                        equiv=exact)


def test_nothing_to_export_and_empty_training_set(tmp_path: Path) -> None:
    failed = {"id": "q1", "question": QUESTION, "answer": "5", "tree": None, "error": "boom"}
    with pytest.raises(TrainingDataError, match="no training rows"):
        export_training(write_results(tmp_path / "r.jsonl", [failed]), tmp_path / "o.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(TrainingDataError, match="empty training set"):
        read_training_rows(tmp_path / "empty.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p"}\n')
    with pytest.raises(TrainingDataError, match="bad.jsonl:1"):
        read_training_rows(tmp_path / "bad.jsonl")
    with pytest.raises(TrainingDataError, match="cannot read"):
        export_training(tmp_path / "missing.jsonl", tmp_path / "o.jsonl")


def inference_tree() -> tuple[Tree, dict[str, Node]]:
    """A maj@k-like tree without rewards: the values are the search's, not targets."""
    t = Tree()
    r = t.root
    n: dict[str, Node] = {}
    n["A"] = code(t, r, "add", "5", value=0.9)
    n["A1"] = answer(t, n["A"], "done", "5", 0.0)
    n["A2"] = answer(t, n["A"], "so", "7", 0.0)
    n["A3"] = answer(t, n["A"], "thus", "5.0", 0.0)
    n["B"] = code(t, r, "times", "6", value=0.8)
    n["B1"] = answer(t, n["B"], "done", "6", 0.0)
    n["E"] = t.add_child(r, text="garbage", terminal=True, final_answer=SENTINEL_NO_VALID_CHILD)
    for node in t.nodes:
        node.reward = None
    return t, n


def test_outcome_targets_grade_inference_trees(tmp_path: Path) -> None:
    tree, n = inference_tree()
    graded: list[str] = []

    def numeric(reference: str, prediction: str) -> bool:
        if reference == "5.00":  # the ground truth (the ranking compares code outputs too)
            graded.append(prediction)
        return float(reference) == float(prediction)

    results = write_results(tmp_path / "maj.jsonl",
                            [result_row(tree, strategy="majority", answer="5.00")])
    out = tmp_path / "rows.jsonl"
    summary = export_training(results, out, equiv=numeric, targets="outcome")
    rows = {tuple(s.text for s in r.steps): r for r in read_training_rows(out)}
    assert (summary.positives, summary.negatives) == (2, 3)
    assert sorted(graded) == ["5", "5.0", "6", "7"]  # each distinct answer once, sentinel never
    a, b = n["A"].text, n["B"].text
    # a step's target is the mean outcome below it: (+1 - 1 + 1) / 3 under A
    assert [s.q for s in rows[(a, n["A1"].text)].steps] == [pytest.approx(1 / 3), 1.0]
    assert rows[(a, n["A1"].text)].correct and rows[(a, n["A3"].text)].correct
    assert [s.q for s in rows[(a, n["A2"].text)].steps] == [pytest.approx(1 / 3), -1.0]
    assert [s.q for s in rows[(b, n["B1"].text)].steps] == [-1.0, -1.0]
    assert [s.q for s in rows[("garbage",)].steps] == [-1.0]
    # the default still refuses a tree the ground truth did not build
    tree, _ = inference_tree()
    tree.nodes[2].value_sum = 0.3
    with pytest.raises(TrainingDataError, match="--targets outcome"):
        export_training(write_results(tmp_path / "b.jsonl", [result_row(tree)]), out, equiv=numeric)
    with pytest.raises(TrainingDataError, match="targets must be"):
        export_training(results, out, equiv=numeric, targets="value")  # type: ignore[arg-type]
