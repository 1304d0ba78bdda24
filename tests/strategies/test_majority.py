"""Majority vote: equivalence grouping, ties, and the three ways of getting the votes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from fractions import Fraction

import pytest

from runtime.config import StrategyConfig, build_config, load_preset
from runtime.engine import Completion, SamplingParams
from runtime.engines.scripted import ScriptedEngine
from runtime.errors import ConfigError
from runtime.problem import Problem
from runtime.tree import Tree
from strategies.base import SearchResult, Solution, SolveContext, SolveStats
from strategies.majority import MajorityVoteStrategy, Vote, cluster_votes, merge_trees
from tests.strategies.test_beam import (
    FMT,
    PROBLEM,
    ValueRecorder,
    _random_script,
    answer,
    bad,
    code,
    label,
    make_ctx,
)


def _number(text: str) -> Fraction | None:
    try:
        return Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        return None


class FakeGrade:
    """Equivalence as numbers where both sides are numbers ("1/2" == "0.5"), else as strings."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    async def __call__(self, reference: tuple[str, ...], prediction: str | None) -> bool:
        self.calls.append((reference, prediction))
        if prediction is None:
            return False
        p = _number(prediction)
        return any(r == prediction or (p is not None and _number(r) == p) for r in reference)


async def _solve(ctx: SolveContext) -> SearchResult:
    return await MajorityVoteStrategy(ctx.strategy).solve(PROBLEM, ctx)


def _shares(result: SearchResult) -> list[tuple[str, int, float | None]]:
    return [(s.answer, s.node_id, s.value) for s in result.solutions]


# --------------------------------------------------------------------------- counting votes

async def test_equivalent_answers_are_one_cluster() -> None:
    grade = FakeGrade()
    votes = [Vote("1/2", 1, None), Vote("3", 2, None), Vote("0.5", 3, None), Vote("3", 4, None),
             Vote("0.50", 5, None)]
    clusters = await cluster_votes(votes, grade)
    assert [(c.answer, c.node_id, c.count, c.first) for c in clusters] == [("1/2", 1, 3, 0), ("3", 2, 2, 1)]
    # reference first; identical strings never reach the grader
    assert grade.calls == [(("1/2",), "3"), (("1/2",), "0.5"), (("1/2",), "3"), (("1/2",), "0.50")]


async def test_without_a_grader_only_identical_strings_group() -> None:
    clusters = await cluster_votes([Vote("1/2", 1, None), Vote("0.5", 2, None), Vote(" 1/2", 3, None)], None)
    assert [(c.answer, c.count) for c in clusters] == [("1/2", 2), ("0.5", 1)]


@pytest.mark.parametrize("votes, winner", [
    # equal counts, no values: the cluster voted for first wins
    ([("3", None), ("1/2", None), ("0.5", None), ("3", None)], "3"),
    ([("1/2", None), ("3", None), ("3", None), ("0.5", None)], "1/2"),
    # equal counts: the cluster holding the highest value wins, whatever came first
    ([("1", .2), ("2", .9), ("1", .1), ("2", None)], "2"),
    # a vote without a value ranks below any value
    ([("1", None), ("2", -.5)], "2"),
    # size beats value
    ([("1", .1), ("2", .99), ("1", .0)], "1"),
])
async def test_ties(votes: list[tuple[str, float | None]], winner: str) -> None:
    clusters = await cluster_votes([Vote(a, i + 1, v) for i, (a, v) in enumerate(votes)], FakeGrade())
    assert clusters[0].answer == winner


def test_merge_trees_offsets_each_run() -> None:
    runs = []
    for name in ("a", "b"):
        tree = Tree()
        step = tree.add_child(tree.root, text=f"{name}1")
        tree.add_child(step, text=f"{name}2", terminal=True, final_answer="1")
        tree.add_child(tree.root, text=f"{name}3")
        runs.append(tree)
    merged, offsets = merge_trees(runs)
    assert offsets == [0, 3]
    assert [(n.id, n.parent, n.depth, n.text) for n in merged.nodes] == [
        (0, None, 0, ""), (1, 0, 1, "a1"), (2, 1, 2, "a2"), (3, 0, 1, "a3"),
        (4, 0, 1, "b1"), (5, 4, 2, "b2"), (6, 0, 1, "b3")]
    assert merged.root.children == [1, 3, 4, 6] and merged.nodes[4].children == [5]
    assert [n.text for n in merged.path(merged.nodes[5])] == ["b1", "b2"]
    assert Tree.from_json(merged.to_json()).to_json() == merged.to_json()
    assert runs[1].nodes[1].id == 1  # the run trees are left as they were


# --------------------------------------------------------------------------- vote_mode samples

SAMPLED = {42: "1/2", 43: "3", 44: "0.5", 45: "3", 46: "0.50"}


def _chain(answers: dict[int, str]) -> Callable[[str, SamplingParams], list[str]]:
    """A chain per seed: one code step, then that seed's answer."""
    def script(prompt: str, params: SamplingParams) -> list[str]:
        assert params.seed is not None
        if label(prompt) == "root":
            return [code(f"c{params.seed}")]
        return [answer(f"a{params.seed}", answers[params.seed])]
    return script


async def test_samples_votes_over_independent_chains() -> None:
    engine = ScriptedEngine(_chain(SAMPLED))
    grade = FakeGrade()
    ctx = make_ctx(engine, "maj5", grade=grade)
    result = await _solve(ctx)

    assert result.prediction == "1/2"
    # one cluster per distinct answer, the winner first; value = the vote share of k=5
    assert _shares(result) == [("1/2", 2, 3 / 5), ("3", 4, 2 / 5)]
    # one chain per vote, seed 42 + i, each one sample per step at the config temperature
    roots = [c.params for c in engine.generate_calls if label(c.prompt) == "root"]
    assert [p.seed for p in roots if p is not None] == [42, 43, 44, 45, 46]
    assert all(c.params is not None and c.params.n == 1 and c.params.temperature == 0.6
               for c in engine.generate_calls)
    assert engine.value_calls == []
    # ONE tree: the shared root, then each chain's nodes as a block
    nodes = result.tree.nodes
    assert [(n.id, n.parent, n.depth) for n in nodes] == [(0, None, 0)] + [
        (i, 0 if i % 2 else i - 1, 1 if i % 2 else 2) for i in range(1, 11)]
    assert result.tree.root.children == [1, 3, 5, 7, 9]
    assert [nodes[2 * i + 2].final_answer for i in range(5)] == list(SAMPLED.values())
    # a chain's path rebuilds exactly the prompt its run sent
    second_chain = FMT.build_prompt(PROBLEM.question, [n.text for n in result.tree.path(nodes[3])])
    assert second_chain in [c.prompt for c in engine.generate_calls if c.params and c.params.seed == 43]
    s = result.stats
    assert (s.engine_calls, s.code_runs, s.value_calls, s.steps, s.n_solutions) == (10, 5, 0, 2, 2)


async def test_samples_chains_are_in_flight_together() -> None:
    k = 5
    arrived: set[int] = set()
    everyone = asyncio.Event()
    inner = ScriptedEngine(_chain(SAMPLED))

    class Barrier:
        async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
            if label(prompt) == "root":
                assert params.seed is not None
                arrived.add(params.seed)
                if len(arrived) == k:
                    everyone.set()
                async with asyncio.timeout(10):  # a sequential vote would never get here
                    await everyone.wait()
            return await inner.generate(prompt, params)

        async def value(self, prompts: Sequence[str]) -> list[float]:
            raise AssertionError("no value model in maj@k")

        async def aclose(self) -> None:
            pass

    result = await _solve(make_ctx(Barrier(), "maj5", grade=FakeGrade()))
    assert result.prediction == "1/2"


async def test_no_answer_no_prediction() -> None:
    engine = ScriptedEngine(lambda prompt, params: [bad("x")])
    result = await _solve(make_ctx(engine, "maj5", grade=FakeGrade()))
    assert result.prediction is None and result.solutions == []
    assert len(result.tree.nodes) == 6 and result.stats.steps == 1 and result.stats.n_solutions == 0


async def _sampled_json(seed: int) -> tuple[str, SearchResult]:
    engine = ScriptedEngine(_random_script)
    result = await _solve(make_ctx(engine, "maj5", f"strategy.seed={seed}", grade=FakeGrade()))
    return json.dumps({"tree": result.tree.to_json(), "prediction": result.prediction,
                       "solutions": [s.__dict__ for s in result.solutions]}, sort_keys=True), result


async def test_same_seed_same_vote_and_the_chains_differ() -> None:
    first, result = await _sampled_json(7)
    again, _ = await _sampled_json(7)
    assert again == first
    assert (await _sampled_json(8))[0] != first
    first_steps = [result.tree.nodes[i].text for i in result.tree.root.children]
    assert len(set(first_steps)) == 5


# ------------------------------------------------------------------------------ vote_mode runs

def _runs_script(top1: dict[int, str]) -> Callable[[str, SamplingParams], list[str]]:
    """SBS(2,2) runs: the root's 4 samples hold two answers that take both slots."""
    def script(prompt: str, params: SamplingParams) -> list[str]:
        s = params.seed
        assert s is not None
        return [answer(f"x{s}", top1[s]), answer(f"y{s}", "7"), code(f"z{s}"), code(f"w{s}")]
    return script


RUN_VALUES = {"x": .9, "y": .8, "z": .1, "w": .2}


async def test_runs_vote_over_each_runs_top_1() -> None:
    engine = ScriptedEngine(_runs_script({42: "1/2", 43: "3", 44: "0.5"}))
    values = ValueRecorder(lambda name: RUN_VALUES[name[0]])
    ctx = make_ctx(engine, "sbs_2_5", "strategy.name=majority", "strategy.vote_mode=runs",
                   "strategy.vote_base=sbs", "strategy.num_votes=3", "strategy.n_generate_sample=2",
                   values=values, grade=FakeGrade())
    result = await _solve(ctx)
    # every run also found "7" (second best): a vote over all solutions would pick it
    assert result.prediction == "1/2"
    assert _shares(result) == [("1/2", 1, 2 / 3), ("3", 5, 1 / 3)]
    assert sorted(c.params.seed or 0 for c in engine.generate_calls if c.params) == [42, 43, 44]
    assert all(c.params is not None and c.params.n == 4 for c in engine.generate_calls)
    assert [len(b) for b in values.batches] == [4, 4, 4]
    assert len(result.tree.nodes) == 13 and result.tree.root.children == list(range(1, 13))
    assert [result.tree.nodes[i].value for i in (1, 2, 3, 4)] == [.9, .8, .1, .2]
    s = result.stats
    assert (s.engine_calls, s.value_calls, s.steps, s.n_solutions) == (3, 3, 1, 2)


async def test_runs_ties_go_to_the_best_value() -> None:
    """With a factory: each run answers by its seed with a value; 2-2, the higher value wins."""
    canned = {42: ("1", .3), 43: ("2", .5), 44: ("1", .1), 45: ("2", .2)}

    class Canned:
        name = "canned"

        def __init__(self, config: StrategyConfig) -> None:
            self.config = config

        async def solve(self, problem: Problem, ctx: SolveContext) -> SearchResult:
            assert ctx.strategy is self.config  # a run samples with its own config
            ans, value = canned[self.config.seed]
            tree = Tree()
            node = tree.add_child(tree.root, text=ans, terminal=True, final_answer=ans, value=value)
            return SearchResult(tree=tree, prediction=ans, solutions=[Solution(ans, node.id, value)],
                                stats=SolveStats(engine_calls=1, value_calls=3, steps=1, n_solutions=1,
                                                 generate_wait_s=0.25, sandbox_wait_s=0.5))

    config = build_config(load_preset("sbs_1_5")).strategy.model_copy(
        update={"name": "majority", "vote_mode": "runs", "num_votes": 4})
    ctx = make_ctx(ScriptedEngine({}), "sbs_1_5", grade=FakeGrade())
    result = await MajorityVoteStrategy(config, base_factory=Canned).solve(PROBLEM, ctx)
    assert _shares(result) == [("2", 2, .5), ("1", 1, .5)]
    # every run's counters and waits add up; steps and n_solutions are the vote's own
    s = result.stats
    assert (s.engine_calls, s.value_calls, s.generate_wait_s, s.sandbox_wait_s) == (4, 12, 1.0, 2.0)
    assert (s.steps, s.n_solutions) == (1, 2)


# ----------------------------------------------------------------------------- vote_mode top_k

TOP_K_ROOT = [answer("p", "7"), answer("q", "1/2"), answer("r", "0.5"), code("s"), code("t"),
              answer("u", "9")]
TOP_K_VALUES = {"p": .5, "q": .9, "r": .8, "s": .1, "t": .2, "u": .05}


@pytest.mark.parametrize("k, shares", [
    (3, [("1/2", 2, 2 / 3), ("7", 1, 1 / 3)]),
    (2, [("1/2", 2, 1.0)]),  # only the best 2 solutions vote
])
async def test_top_k_votes_over_one_runs_solutions(k: int, shares: list[tuple[str, int, float]]) -> None:
    engine = ScriptedEngine(lambda prompt, params: TOP_K_ROOT)
    ctx = make_ctx(engine, "sbs_3_5", "strategy.name=majority", "strategy.vote_mode=top_k",
                   "strategy.vote_base=sbs", f"strategy.num_votes={k}", "strategy.n_generate_sample=2",
                   values=ValueRecorder(TOP_K_VALUES), grade=FakeGrade())
    result = await _solve(ctx)
    assert _shares(result) == shares and result.prediction == "1/2"
    # one run, the config's own seed; its tree as it is
    assert [(c.params.seed, c.params.n) for c in engine.generate_calls if c.params] == [(42, 6)]
    assert len(result.tree.nodes) == 7
    assert [label(n.text) for n in result.tree.nodes[1:]] == ["p", "q", "r", "s", "t", "u"]


# ----------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("base, message", [
    ("majority", "cannot be 'majority'"),
    ("nope", "unknown strategy.vote_base 'nope'"),
])
def test_bad_vote_base(base: str, message: str) -> None:
    config = StrategyConfig(name="majority", vote_mode="runs", vote_base=base)
    with pytest.raises(ConfigError, match=message):
        MajorityVoteStrategy(config)


def test_samples_mode_ignores_vote_base() -> None:
    MajorityVoteStrategy(StrategyConfig(name="majority", vote_mode="samples", vote_base="nope"))


def test_maj5_preset() -> None:
    cfg = build_config(load_preset("maj5")).strategy
    assert (cfg.name, cfg.vote_mode, cfg.num_votes, cfg.need_value_func) == ("majority", "samples", 5, False)
    assert cfg.temperature == 0.6 and cfg.seed == 42 and cfg.max_depth == 10
