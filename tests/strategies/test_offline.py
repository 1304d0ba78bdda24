"""Offline inference on saved trees (ALPHAMATH.md §3), on hand-built trees whose answer is known."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evals import Grader, Score, ScoreError, score_results
from runtime.config import build_config, load_preset
from runtime.react import SENTINEL_NO_VALID_CHILD, SENTINEL_TOO_MANY_STEPS, SENTINELS
from runtime.tree import Node, Tree
from strategies.offline import (
    OfflineChoice,
    offline_answer,
    offline_kwargs,
    offline_rescore,
    offline_results,
    offline_solutions,
)


def add(tree: Tree, parent: Node, ans: str | None = None, *, n: int = 0, w: float = 0.0,
        v: float | None = None, p: float | None = None) -> Node:
    """A child with answer `ans`, N = n visits, W = w value sum, V = v, prior p."""
    return tree.add_child(parent, final_answer=ans, terminal=ans is not None, visits=n,
                          value_sum=w, value=v, prior=p)


def chosen(tree: Tree, **kw: Any) -> str | None:
    choice = offline_answer(tree, **kw)
    return None if choice is None else choice.answer


# --- the rule on hand-built trees ---------------------------------------------------------------


def test_pruning_removes_dead_subtrees() -> None:
    t = Tree()
    a = add(t, t.root, n=5, w=4.5)  # Q 0.9, but nothing valid below it
    add(t, a, SENTINEL_NO_VALID_CHILD, n=1, w=-1)
    add(t, a, n=1, w=0.8)  # expanded never: a leaf without an answer
    b = add(t, t.root, n=2, w=0.2)  # Q 0.1
    seven = add(t, b, "7", n=1, w=0.1)
    assert offline_answer(t) == OfflineChoice(answer="7", node_id=seven.id, score=0.1)
    # without pruning the descent goes into A, whose best child is a dead end: no answer
    assert offline_answer(t, prune=False) is None


# Each leaf hangs off the root. q_value: Q = W/N; value: V; visits: N;
# puct: Q + 1.25·P·sqrt(N(root) = 15)/(1 + N).
SCORES_TREE = [
    # answer, N,   W,   V,   P
    ("1", 10, 2.0, 0.1, 0.2),   # Q 0.2, most visited
    ("2", 2, 1.8, -0.5, 0.5),   # Q 0.9
    ("3", 3, 0.3, 0.8, 0.1),    # Q 0.1, best V
    ("4", 0, 0.0, None, 0.9),   # unvisited, no V: best PUCT (1.25·0.9·sqrt 15 ≈ 4.357)
]


@pytest.mark.parametrize(
    ("by", "answer", "score"),
    [
        ("q_value", "2", 0.9),
        ("value", "3", 0.8),
        ("visits", "1", 10.0),
        ("puct", "4", 1.25 * 0.9 * math.sqrt(15)),
    ],
)
def test_the_score_decides(by: Any, answer: str, score: float) -> None:
    t = Tree()
    t.root.visits = 15
    for ans, n, w, v, p in SCORES_TREE:
        add(t, t.root, ans, n=n, w=w, v=v, p=p)
    choice = offline_answer(t, by=by)
    assert choice is not None
    assert choice.answer == answer
    assert choice.score == pytest.approx(score)


def test_value_none_sorts_last() -> None:
    t = Tree()
    add(t, t.root, "none", v=None)
    low = add(t, t.root, "low", v=-0.99)
    assert offline_answer(t, by="value") == OfflineChoice("low", low.id, -0.99)
    assert offline_solutions(t, by="value", beam_width=2)[1].score == -math.inf


def test_descent_is_greedy_not_global() -> None:
    t = Tree()
    a = add(t, t.root, n=2, w=1.0)  # Q 0.5
    add(t, a, "best leaf", n=1, w=0.95)
    b = add(t, t.root, n=2, w=1.2)  # Q 0.6: chosen at depth 1
    add(t, b, "b", n=1, w=0.1)
    assert chosen(t) == "b"
    assert chosen(t, beam_width=2) == "best leaf"


def test_ties_keep_stored_order() -> None:
    t = Tree()
    add(t, t.root, "first", n=1, w=0.5)
    add(t, t.root, "second", n=1, w=0.5)
    assert chosen(t) == "first"
    assert [c.answer for c in offline_solutions(t, beam_width=2)] == ["first", "second"]


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("sentinel", sorted(SENTINELS))
def test_sentinel_leaves_are_never_chosen(prune: bool, sentinel: str) -> None:
    t = Tree()
    add(t, t.root, sentinel, n=1, w=1.0)  # the best Q
    add(t, t.root, "", n=1, w=0.9)  # an empty answer is no answer either
    ok = add(t, t.root, "42", n=1, w=-0.5)
    # B1 = 1 without pruning: the sentinel takes the only slot and the descent dies
    assert offline_answer(t, prune=prune) == (OfflineChoice("42", ok.id, -0.5) if prune else None)
    # with three slots the sentinel and the empty answer each use one, "42" the third
    assert chosen(t, prune=prune, beam_width=3) == "42"


def test_dead_ends_use_up_beam_slots() -> None:
    t = Tree()
    add(t, t.root, n=1, w=0.9)  # an unexpanded leaf, best at depth 1
    b = add(t, t.root, n=2, w=1.0)  # Q 0.5
    b1 = add(t, b, "b1", n=1, w=0.4)
    add(t, b, "b2", n=1, w=0.3)
    # without pruning the dead end took one of the two slots: only b1 is reached
    assert offline_solutions(t, prune=False, beam_width=2) == [OfflineChoice("b1", b1.id, 0.4)]
    # pruned away, it leaves both slots to B's children
    assert [c.answer for c in offline_solutions(t, prune=True, beam_width=2)] == ["b1", "b2"]


def test_root_pruned_gives_none() -> None:
    t = Tree()
    assert offline_answer(t) is None  # the root alone
    a = add(t, t.root, n=3, w=3.0)
    add(t, a, SENTINEL_TOO_MANY_STEPS, n=1, w=1.0)
    add(t, t.root, n=1, w=1.0)
    assert offline_answer(t) is None
    assert offline_answer(t, prune=False, beam_width=5) is None
    assert offline_answer(Tree.from_json({"nodes": []})) is None


def test_a_sixth_child_is_ignored() -> None:
    t = Tree()
    for _ in range(5):
        add(t, t.root, SENTINEL_NO_VALID_CHILD, n=1, w=-1.0)
    sixth = add(t, t.root, "6", n=1, w=1.0)
    deep = add(t, sixth, n=1, w=1.0)  # the sixth child's subtree goes with it
    add(t, deep, "deeper", n=1, w=1.0)
    assert offline_answer(t) is None
    assert offline_answer(t, prune=False, beam_width=6) is None
    assert chosen(t, max_children=6) == "deeper"


def test_an_answer_with_children_is_no_valid_leaf() -> None:
    t = Tree()
    a = add(t, t.root, "a", n=1, w=0.9)  # an answer node that was expanded anyway
    add(t, a, "under a", n=1, w=0.1)
    assert chosen(t) == "under a"
    assert chosen(t, prune=False) == "under a"


@pytest.mark.parametrize(("deep_q", "answer"), [(0.7, "deep"), (0.2, "shallow")])
def test_beam_width_two_collects_leaves_at_different_depths(deep_q: float, answer: str) -> None:
    t = Tree()
    shallow = add(t, t.root, "shallow", n=1, w=0.3)
    b = add(t, t.root, n=2, w=1.0)  # Q 0.5
    deep = add(t, b, "deep", n=1, w=deep_q)
    add(t, t.root, "worst", n=1, w=0.1)  # third at depth 1: outside the beam
    found = offline_solutions(t, beam_width=2)
    assert {c.node_id for c in found} == {shallow.id, deep.id}
    assert found[0].answer == answer
    assert chosen(t, beam_width=1) == "deep"  # B then its only child


def test_puct_uses_the_parents_visits() -> None:
    t = Tree()
    t.root.visits = 68
    a = add(t, t.root, n=4, w=0.0)
    b = add(t, t.root, n=64, w=0.0)
    add(t, a, "under a", n=0, p=1.0)  # 1.25·1·sqrt(4)/1 = 2.5
    under_b = add(t, b, "under b", n=0, p=1.0)  # 1.25·1·sqrt(64)/1 = 10
    found = offline_solutions(t, by="puct", beam_width=2)
    assert found[0] == OfflineChoice("under b", under_b.id, 10.0)
    assert found[1].score == 2.5
    # with the root's (or the node's own) visits the two would tie and "under a" would win


def test_puct_reads_a_missing_prior_as_one() -> None:
    t = Tree()
    t.root.visits = 9
    add(t, t.root, "p", n=0, p=0.5)
    add(t, t.root, "none", n=0, p=None)
    assert offline_answer(t, by="puct") == OfflineChoice("none", 2, 1.25 * 3)


def test_likelihood_is_the_paths_weakest_step() -> None:
    # A: a sure first step, then a doubtful one (weakest log 0.3); B: two middling steps
    # (weakest log 0.5). Depth 1 prefers A (log 0.9 > log 0.5); with B1 = 2 both paths are
    # collected and B's answer wins on its weakest step, as SBS by likelihood would pick.
    t = Tree()
    a = add(t, t.root, p=0.9)
    add(t, a, "a", p=0.3)
    b = add(t, t.root, p=0.5)
    bb = add(t, b, "b", p=0.6)
    assert chosen(t, by="likelihood") == "a"
    best = offline_solutions(t, by="likelihood", beam_width=2)
    assert [c.answer for c in best] == ["b", "a"]
    assert best[0] == OfflineChoice("b", bb.id, pytest.approx(math.log(0.5)))


def test_likelihood_without_priors_is_one_line(grader: Grader) -> None:
    t = Tree()
    add(t, t.root, "7", p=None)
    row = {"id": "q1", "answer": "7", "tree": t.to_json(), "error": None}
    assert offline_rescore([row], by="q_value", grader=grader)[0]["correct"] is True
    with pytest.raises(ScoreError, match=r"row 'q1': scoring by likelihood needs each node's prior"):
        offline_rescore([row], by="likelihood", grader=grader)


def test_bad_arguments() -> None:
    t = Tree()
    with pytest.raises(ValueError, match="unknown offline score 'visit_count'"):
        offline_answer(t, by="visit_count")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be >= 1"):
        offline_answer(t, beam_width=0)


def test_json_round_trip_gives_the_same_answer() -> None:
    t = Tree()
    t.root.visits = 10
    a = add(t, t.root, n=6, w=3.0, p=0.4, v=0.2)
    add(t, a, "x", n=3, w=2.7, p=0.7, v=0.1)
    add(t, a, "y", n=3, w=0.3, p=0.2, v=0.9)
    add(t, t.root, "z", n=4, w=0.8, p=0.9, v=0.5)
    again = Tree.from_json(json.loads(json.dumps(t.to_json())))
    for by in ("q_value", "value", "visits", "puct", "likelihood"):
        for width in (1, 2):
            assert (offline_solutions(again, by=by, beam_width=width)  # type: ignore[arg-type]
                    == offline_solutions(t, by=by, beam_width=width))  # type: ignore[arg-type]
    assert chosen(again) == "x"


def test_the_preset_is_the_originals() -> None:
    config = build_config(load_preset("offline"))
    assert offline_kwargs(config.strategy) == {"by": "q_value", "prune": True, "beam_width": 1,
                                               "max_children": 5, "c_puct": 1.25}


# --- random trees -------------------------------------------------------------------------------


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    """Up to 14 nodes, each under a random earlier one (so a node may get more than 5 children)."""
    t = Tree()
    t.root.visits = draw(st.integers(0, 20))
    for i in range(1, draw(st.integers(1, 14))):
        parent = t.nodes[draw(st.integers(0, i - 1))]
        add(t, parent, draw(st.sampled_from([None, "", "1", "2", "3", *sorted(SENTINELS)])),
            n=draw(st.integers(0, 6)), w=draw(st.floats(-6, 6)),
            v=draw(st.none() | st.floats(-1, 1)), p=draw(st.none() | st.floats(0, 1)))
    return t


def valid_leaves(t: Tree, max_children: int) -> set[int]:
    """By a plain recursion, independent of the module's BFS."""
    def walk(nid: int) -> Iterator[int]:
        kids = t.nodes[nid].children[:max_children]
        answer = t.nodes[nid].final_answer
        if not kids and nid != 0 and answer and answer not in SENTINELS:
            yield nid
        for k in kids:
            yield from walk(k)
    return set(walk(0))


@settings(max_examples=300, deadline=None)
@given(t=trees(), by=st.sampled_from(["q_value", "value", "visits", "puct", "likelihood"]),
       prune=st.booleans(), width=st.integers(1, 3), max_children=st.integers(1, 6))
def test_random_trees(t: Tree, by: Any, prune: bool, width: int, max_children: int) -> None:
    if by == "likelihood":  # needs every prior (a missing one is an error, tested above)
        for node in t.nodes[1:]:
            node.prior = 0.5 if node.prior is None else node.prior
    valid = valid_leaves(t, max_children)
    found = offline_solutions(t, by=by, prune=prune, beam_width=width, max_children=max_children)
    choice = offline_answer(t, by=by, prune=prune, beam_width=width, max_children=max_children)
    assert choice == (found[0] if found else None)
    for c in found:
        assert c.node_id in valid and c.answer == t.nodes[c.node_id].final_answer
    assert len(found) <= width
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    if prune and valid:
        assert choice is not None
    if not valid:
        assert choice is None


# --- results files ------------------------------------------------------------------------------


def mcts_tree(right: str, wrong: str) -> dict[str, Any]:
    """Q prefers `right` (node 3, Q 0.5, under node 2) over `wrong` (node 1, Q 0.4)."""
    t = Tree()
    t.root.visits = 6
    add(t, t.root, wrong, n=2, w=0.8)
    a = add(t, t.root, n=4, w=2.0)
    add(t, a, right, n=4, w=2.0)
    add(t, a, SENTINEL_NO_VALID_CHILD, n=1, w=-1.0)
    return t.to_json()


def row(rid: str, *, answer: Any, prediction: str | None, correct: bool,
        tree: dict[str, Any] | None, error: str | None = None, **stats: float) -> dict[str, Any]:
    return {"id": rid, "question": f"q {rid}", "answer": answer, "strategy": "mcts",
            "config_hash": "abc", "prediction": prediction, "correct": correct, "solutions": [],
            "tree": tree, "stats": stats, "meta": {}, "error": error}


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(max_workers=1) as g:
        yield g


def test_results_file_exact_score(tmp_path: Path, grader: Grader) -> None:
    rows = [
        # stored: the wrong leaf; offline by Q: "\frac12", which is "0.5"
        row("a", answer="0.5", prediction="0.4", correct=False,
            tree=mcts_tree(r"\frac{1}{2}", "0.4"), wall_s=2.0, steps=1, n_solutions=1),
        row("b", answer="3", prediction=None, correct=False, tree=None, error="EngineError: boom",
            wall_s=4.0),
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "c", "predic',
                    encoding="utf-8")
    out = tmp_path / "sub" / "offline.jsonl"
    score = offline_results(path, output=out, grader=grader)
    assert score == Score(file=str(path), total=2, correct=1, errors=1, avg_wall_s=3.0,
                          avg_steps=2.0, avg_solutions=1.0, torn_lines=1, regraded=True,
                          flipped=1)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in written] == ["a", "b"]
    a, b = written
    assert (a["prediction"], a["correct"], a["stats"]["steps"]) == (r"\frac{1}{2}", True, 2)
    assert a["solutions"] == [{"answer": r"\frac{1}{2}", "node_id": 3, "value": None,
                               "score": 0.5}]
    assert a["offline"] == {"by": "q_value", "prune": True, "beam_width": 1, "max_children": 5,
                            "c_puct": 1.25}
    assert a["tree"] == rows[0]["tree"]
    assert b == rows[1]  # the error row stays as it was, wrong
    assert not list(tmp_path.rglob("*.part"))
    # the written file scores the same without regrading
    assert score_results(out).correct == 1


def test_results_without_output_and_in_place(tmp_path: Path, grader: Grader) -> None:
    rows = [
        row("a", answer="7", prediction="7", correct=True, tree=mcts_tree("8", "7")),  # → wrong
        row("b", answer="7", prediction="7", correct=True, tree=mcts_tree("7", "8")),
        row("c", answer="7", prediction="7", correct=True,  # root pruned → no answer
            tree=mcts_tree(SENTINEL_TOO_MANY_STEPS, SENTINEL_NO_VALID_CHILD)),
        row("d", answer="7", prediction=None, correct=False, tree={"nodes": []}),
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    before = path.read_bytes()
    score = offline_results(path, grader=grader)
    assert (score.total, score.correct, score.errors, score.flipped) == (4, 1, 0, 2)
    assert path.read_bytes() == before  # no output: nothing written
    assert list(tmp_path.iterdir()) == [path]
    offline_results(path, output=path, grader=grader)
    rescored = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["prediction"], r["correct"]) for r in rescored] == [
        ("8", False), ("7", True), (None, False), (None, False)]


def test_rescore_rows_in_memory(grader: Grader) -> None:
    rows = [
        row("a", answer=["3", "-3"], prediction=None, correct=False, tree=mcts_tree("-3", "4")),
        row("b", answer="1", prediction="1", correct=True, tree=None, error="Timeout"),
    ]
    out = offline_rescore(rows, by="visits", beam_width=2, max_children=10, grader=grader)
    # by visits (4 vs 2, then 4 vs 1) the same leaf wins; beam 2 also collects "4"
    assert [(r["prediction"], r["correct"]) for r in out] == [("-3", True), ("1", False)]
    assert [s["answer"] for s in out[0]["solutions"]] == ["-3", "4"]
    assert out[0]["stats"] == {"n_solutions": 2, "steps": 2}
    assert rows[0]["prediction"] is None  # the input rows are not modified


def test_a_bad_tree_names_the_line(tmp_path: Path, grader: Grader) -> None:
    good = row("a", answer="1", prediction="1", correct=True, tree=mcts_tree("1", "2"))
    bad = row("b", answer="1", prediction="1", correct=True, tree={"nodes": [{"idd": 0}]})
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(ScoreError, match=r"r\.jsonl:2: field 'tree': not a saved tree"):
        offline_results(path, grader=grader)
    with pytest.raises(ScoreError, match=r"row 'b': field 'tree'"):
        offline_rescore([good, bad], grader=grader)
