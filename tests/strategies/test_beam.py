"""Step-level beam search SBS(B1, B2) on hand-built problems whose surviving beams are known.

Every step carries a label ("[B]", "[CA]", …); the scripted engine answers a prompt by the label
of its last step, and the value head scores a candidate by its own label. The helpers here are
shared with test_majority.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence

import pytest

from runtime.config import apply_overrides, build_config, load_preset
from runtime.engine import Completion, SamplingParams
from runtime.engines.scripted import ScriptedEngine, fake_token_ids
from runtime.errors import NoLogprobsError
from runtime.problem import Problem
from runtime.react import SENTINEL_NO_VALID_CHILD, SENTINEL_TOO_MANY_STEPS, get_format
from runtime.tree import Node, Tree
from sandbox.scripted import TIMEOUT, ScriptedSandbox
from strategies.base import Grade, SearchResult, SolveContext
from strategies.beam import BeamSearchStrategy, renumber
from strategies.greedy import GreedyStrategy

FMT = get_format("react_sft")
PROBLEM = Problem(id="p", question="What is x?", answer=("5",))
_LABEL = re.compile(r"\[(\w+)\]")


# ------------------------------------------------------------------------------------ helpers

def code(name: str) -> str:
    return FMT.format_step(f"[{name}]", code=f"x = '{name}'")


def answer(name: str, value: str) -> str:
    return FMT.format_step(f"[{name}]", final_answer=value)


def bad(name: str) -> str:
    """Parses to nothing: a NO_VALID_CHILD terminal."""
    return f"<step>\n<p>\n[{name}] neither code nor an answer"


def label(text: str) -> str:
    """The label of the last step in a prompt or a node text ("root" when there is none)."""
    found = _LABEL.findall(text)
    return found[-1] if found else "root"


def labels(nodes: Sequence[Node]) -> list[str]:
    return [label(n.text) for n in nodes]


def by_label(children: Mapping[str, Sequence[str]]) -> Callable[[str, SamplingParams], Sequence[str]]:
    def script(prompt: str, params: SamplingParams) -> Sequence[str]:
        return children[label(prompt)]
    return script


class ValueRecorder:
    """A value engine recording each `value()` call as one batch of labels."""

    def __init__(self, values: Mapping[str, float] | Callable[[str], float]) -> None:
        self._get = values if callable(values) else values.__getitem__
        self.batches: list[list[str]] = []
        self.prompts: list[str] = []

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        raise AssertionError("the value engine never generates")

    async def value(self, prompts: Sequence[str]) -> list[float]:
        self.batches.append([label(p) for p in prompts])
        self.prompts.extend(prompts)
        await asyncio.sleep(0)
        return [self._get(label(p)) for p in prompts]

    async def aclose(self) -> None:
        pass


def make_ctx(engine: object, preset: str, *overrides: str, values: ValueRecorder | None = None,
             sandbox: ScriptedSandbox | None = None, grade: Grade | None = None) -> SolveContext:
    config = build_config(apply_overrides(load_preset(preset), list(overrides)))
    return SolveContext(engine=engine, sandbox=sandbox or ScriptedSandbox(),  # type: ignore[arg-type]
                        strategy=config.strategy, sandbox_config=config.sandbox,
                        value_engine=values, grade=grade)


def requests(engine: ScriptedEngine) -> list[tuple[str, int]]:
    """(label of the expanded node, n) of every generate request, in the order issued."""
    return [(label(c.prompt), c.params.n) for c in engine.generate_calls if c.params is not None]


async def run_sbs(ctx: SolveContext) -> SearchResult:
    return await BeamSearchStrategy(ctx.strategy).solve(PROBLEM, ctx)


def answers(result: SearchResult) -> list[tuple[str, str, int, float | None]]:
    """(label, answer, node id, value) of each solution, in order."""
    return [(label(result.tree.nodes[s.node_id].text), s.answer, s.node_id, s.value)
            for s in result.solutions]


# --------------------------------------------------------------------------------- SBS(2, 2)

TREE_2_2 = {
    "root": [code("A"), code("B"), code("C"), answer("D", "7")],
    "B": [code("BA"), answer("BB", "5")],
    "C": [code("CA"), code("CB")],
    "CA": [answer("CAA", "6"), code("CAB")],
}
VALUES_2_2 = {"A": .1, "B": .9, "C": .5, "D": .3,
              "BA": .4, "BB": .8, "CA": .6, "CB": .3,
              "CAA": .95, "CAB": .1}


async def test_sbs_2_2_keeps_the_known_beams() -> None:
    engine = ScriptedEngine(by_label(TREE_2_2))
    values = ValueRecorder(VALUES_2_2)
    ctx = make_ctx(engine, "sbs_2_5", "strategy.n_generate_sample=2", values=values)
    result = await run_sbs(ctx)

    # depth 1: the root once with n = B1·B2 = 4; B (.9) and C (.5) survive, the answer D (.3)
    # is not selected. depth 2: one request per beam with n = B2, beams in rank order; BB (.8)
    # is an answer and takes its slot for good, CA (.6) is the one live beam. depth 3: CAA.
    assert requests(engine) == [("root", 4), ("B", 2), ("C", 2), ("CA", 2)]
    assert values.batches == [["A", "B", "C", "D"], ["BA", "BB", "CA", "CB"], ["CAA", "CAB"]]
    assert engine.value_calls == []  # values come from the value engine only

    nodes = result.tree.nodes
    assert labels(nodes[1:]) == ["A", "B", "C", "D", "BA", "BB", "CA", "CB", "CAA", "CAB"]
    assert [n.id for n in nodes] == list(range(11))
    assert [n.parent for n in nodes] == [None, 0, 0, 0, 0, 2, 2, 3, 3, 7, 7]
    assert [n.value for n in nodes[1:]] == [VALUES_2_2[x] for x in labels(nodes[1:])]
    assert nodes[0].value is None
    # found later, but the higher value comes first
    assert answers(result) == [("CAA", "6", 9, .95), ("BB", "5", 6, .8)]
    assert result.prediction == "6"
    assert nodes[4].terminal and nodes[4].final_answer == "7"  # unselected answers stay in the tree
    assert result.stats.engine_calls == 4 and result.stats.value_calls == 3
    assert result.stats.steps == 3 and result.stats.n_solutions == 2
    assert result.stats.code_runs == 7  # A B C, BA CA CB, CAB


async def test_value_prompt_is_the_state_through_the_candidate() -> None:
    engine = ScriptedEngine(by_label(TREE_2_2))
    values = ValueRecorder(VALUES_2_2)
    result = await run_sbs(make_ctx(engine, "sbs_2_5", "strategy.n_generate_sample=2", values=values))
    caa = result.tree.nodes[9]
    expected = FMT.value_prompt(PROBLEM.question, [n.text for n in result.tree.path(caa)])
    assert values.prompts[-2] == expected
    assert expected.endswith("</step>\n") and expected.count("</step>") == 3
    # generation and value prompts of a state are the same bytes (§1.2)
    assert engine.generate_calls[-1].prompt == values.prompts[6]  # CA's


# --------------------------------------------------------------------------------- SBS(3, 5)

R_VALUES = [.1, .8, .2, .9, .3, .05, 0.0, .8, .4, .8, .15, .25, .35, .45, .55]
TREE_3_5 = {
    "root": [code("R0"), code("R1"), answer("R2", "9"), code("R3"), code("R4"), bad("R5"),
             code("R6"), bad("R7"), code("R8"), code("R9"), code("R10"), code("R11"),
             code("R12"), code("R13"), code("R14")],
    "R3": [code("S0"), code("S1"), answer("S2", "8"), code("S3"), code("S4")],
    "R1": [code("T0"), code("T1"), answer("T2", "5"), code("T3"), bad("T4")],
    "S0": [code("U0"), answer("U1", "5"), bad("U2"), code("U3"), answer("U4", "4")],
}
VALUES_3_5 = {
    **{f"R{i}": v for i, v in enumerate(R_VALUES)},
    "S0": .7, "S1": .2, "S2": .6, "S3": .1, "S4": .3,
    "T0": .5, "T1": .65, "T2": .95, "T3": 0.0, "T4": .4,
    "U0": .3, "U1": .6, "U2": .5, "U3": .55, "U4": .1,
}


async def test_sbs_3_5_slots_are_used_up_by_answers_and_invalid_terminals() -> None:
    engine = ScriptedEngine(by_label(TREE_3_5))
    values = ValueRecorder(VALUES_3_5)
    result = await run_sbs(make_ctx(engine, "sbs_3_5", values=values))

    # depth 1: R3 (.9), then the ties at .8 in generation order: R1, R7 (R9 is 4th, left out).
    # R7 is unparsable: dropped, and its slot is gone, so depth 2 has only 2 beams (R3 first).
    # depth 2: T2 (.95) is an answer (slot gone), S0 (.7) is the last beam. depth 3: U1 (.6).
    assert requests(engine) == [("root", 15), ("R3", 5), ("R1", 5), ("S0", 5)]
    assert [len(b) for b in values.batches] == [15, 10, 5]
    assert values.batches[1] == [f"S{i}" for i in range(5)] + [f"T{i}" for i in range(5)]
    nodes = result.tree.nodes
    assert len(nodes) == 31
    assert nodes[8].final_answer == SENTINEL_NO_VALID_CHILD  # R7
    assert answers(result) == [("T2", "5", 23, .95), ("U1", "5", 27, .6)]
    assert [nodes[i].parent for i in (16, 21, 26)] == [4, 2, 16]  # S0 ← R3, T0 ← R1, U0 ← S0
    assert result.prediction == "5" and result.stats.steps == 2


async def test_invalid_terminals_can_end_the_search_without_an_answer() -> None:
    tree = {"root": [bad("A"), code("B"), answer("C", "3")]}
    values = ValueRecorder({"A": .9, "B": .1, "C": .5})
    engine = ScriptedEngine(by_label(tree))
    result = await run_sbs(make_ctx(engine, "sbs_1_5", "strategy.n_generate_sample=3", values=values))
    # B1=1: the best candidate is unparsable; it takes the only slot, and C is never taken
    assert requests(engine) == [("root", 3)]
    assert result.prediction is None and result.solutions == []
    assert result.stats.steps == 1 and result.stats.n_solutions == 0


# ----------------------------------------------------------------------- max_depth, dedup

def _binary(prompt: str, params: SamplingParams) -> list[str]:
    name = label(prompt)
    return [code(f"{name}x"), code(f"{name}y")]


async def test_max_depth_marks_the_selected_beams_out_of_steps() -> None:
    engine = ScriptedEngine(_binary)
    values = ValueRecorder(lambda name: 0.0)  # all ties: generation order decides
    ctx = make_ctx(engine, "sbs_2_5", "strategy.n_generate_sample=2", "strategy.max_depth=3",
                   values=values)
    result = await run_sbs(ctx)
    assert requests(engine) == [("root", 4), ("rootx", 2), ("rooty", 2),
                                ("rootxx", 2), ("rootxy", 2)]
    assert len(values.batches) == 3
    nodes = result.tree.nodes
    deepest = [n for n in nodes if n.depth == 3]
    assert labels(deepest) == ["rootxxx", "rootxxy", "rootxyx", "rootxyy"]
    assert [(n.terminal, n.final_answer) for n in deepest] == [
        (True, SENTINEL_TOO_MANY_STEPS), (True, SENTINEL_TOO_MANY_STEPS), (False, None), (False, None)]
    assert result.prediction is None and result.stats.steps == 3
    assert max(n.depth for n in nodes) == 3


async def test_an_answer_at_max_depth_counts() -> None:
    tree = {"root": [code("A")], "A": [answer("B", "5"), code("C")]}
    engine = ScriptedEngine(by_label(tree))
    values = ValueRecorder({"A": 0.0, "B": .2, "C": .9})
    result = await run_sbs(make_ctx(engine, "sbs_2_5", "strategy.n_generate_sample=2",
                                    "strategy.max_depth=2", values=values))
    # root: n=4, all "A", merged into one; depth 2: C and B both selected, C is out of steps
    assert requests(engine) == [("root", 4), ("A", 2)]
    assert result.prediction == "5"
    assert result.tree.nodes[3].final_answer == SENTINEL_TOO_MANY_STEPS


DUP_TREE = {
    "root": [code("X"), code("Y"), code("X"), code("Z"), code("Y"), code("W")],
    "X": [code("P"), code("P"), code("Q")],
    "Y": [code("P"), answer("R", "5"), answer("R", "5")],
    "P": [answer("F", "6")],
}
DUP_VALUES = {"X": .9, "Y": .8, "Z": .1, "W": .2, "P": .5, "Q": .3, "R": .6, "F": .1}


async def test_remove_duplicate_merges_siblings_stably() -> None:
    engine = ScriptedEngine(by_label(DUP_TREE))
    values = ValueRecorder(DUP_VALUES)
    result = await run_sbs(make_ctx(engine, "sbs_2_5", "strategy.n_generate_sample=3", values=values))
    # first occurrences, in order; the same text under two parents is two states, kept twice
    assert values.batches == [["X", "Y", "Z", "W"], ["P", "Q", "P", "R"], ["F"]]
    # R (.6) answers; of the two P (.5) states the first generated (under X) is the beam
    assert requests(engine) == [("root", 6), ("X", 3), ("Y", 3), ("P", 3)]
    assert engine.generate_calls[-1].prompt.count("[X]") == 1
    nodes = result.tree.nodes
    assert labels(nodes[1:]) == ["X", "Y", "Z", "W", "P", "Q", "P", "R", "F"]
    assert [n.parent for n in nodes] == [None, 0, 0, 0, 0, 1, 1, 2, 2, 5]
    assert [n.children for n in nodes[:3]] == [[1, 2, 3, 4], [5, 6], [7, 8]]
    assert answers(result) == [("R", "5", 8, .6), ("F", "6", 9, .1)]
    # the merged copies are not in the tree, and its JSON round-trips
    assert Tree.from_json(result.tree.to_json()).to_json() == result.tree.to_json()
    assert [n.children for n in Tree.from_json(result.tree.to_json()).nodes] == [n.children for n in nodes]


async def test_without_remove_duplicate_every_sample_is_a_candidate() -> None:
    engine = ScriptedEngine(by_label(DUP_TREE))
    values = ValueRecorder(DUP_VALUES)
    await run_sbs(make_ctx(engine, "sbs_2_5", "strategy.n_generate_sample=3",
                           "strategy.remove_duplicate=false", values=values))
    assert values.batches[0] == ["X", "Y", "X", "Z", "Y", "W"]
    # the two X (.9) are the beams
    assert requests(engine)[:3] == [("root", 6), ("X", 3), ("X", 3)]


def test_renumber_puts_nodes_in_the_given_order() -> None:
    tree = Tree()
    a = tree.add_child(tree.root, text="a")
    b = tree.add_child(tree.root, text="b")
    b1 = tree.add_child(b, text="b1")  # attached first: b's expansion answered first
    a1 = tree.add_child(a, text="a1")
    a2 = tree.add_child(a, text="dup of a1")
    renumber(tree, [tree.root, a, b, a1, b1])
    assert [(n.text, n.id, n.parent, n.children) for n in tree.nodes] == [
        ("", 0, None, [1, 2]), ("a", 1, 0, [3]), ("b", 2, 0, [4]), ("a1", 3, 1, []), ("b1", 4, 2, [])]
    assert a2 not in tree.nodes


# ------------------------------------------------------------------ greedy is SBS(1,1) no value

def _by_depth(steps: list[str]) -> Callable[[str, SamplingParams], list[str]]:
    def script(prompt: str, params: SamplingParams) -> list[str]:
        return [steps[min(prompt.count("</step>"), len(steps) - 1)]]
    return script


_CODES = ["a = 2", "while True: pass", "b = a * 3", "print(b)"]
_FENCED = [f"```python\n{c}\n```" for c in _CODES]
GREEDY_CASES = {
    "code_then_answer": (
        [FMT.format_step("t", code="a = 2"), FMT.format_step("t", final_answer="2")], {}, ()),
    "timeouts_and_history": (
        [FMT.format_step("t", code=c) for c in _CODES] + [FMT.format_step("t", final_answer="6")],
        {_FENCED[0]: "", _FENCED[1]: TIMEOUT, _FENCED[2]: "", _FENCED[3]: "6"}, ()),
    "unparsable": (["<step>\n<p>\nrambling"], {}, ()),
    "too_many_steps": ([FMT.format_step("t", code="x = 1")], {}, ("strategy.max_depth=4",)),
}


@pytest.mark.parametrize("case", sorted(GREEDY_CASES))
async def test_sbs_1_1_without_value_is_greedy(case: str) -> None:
    steps, observations, overrides = GREEDY_CASES[case]
    runs = []
    for strategy in (GreedyStrategy, BeamSearchStrategy):
        engine = ScriptedEngine(_by_depth(steps), default_value=0.7)
        sandbox = ScriptedSandbox(dict(observations))
        ctx = make_ctx(engine, "greedy", *overrides, sandbox=sandbox)
        result = await strategy(ctx.strategy).solve(PROBLEM, ctx)
        runs.append((result, engine.calls, sandbox.calls))
    (greedy, g_calls, g_runs), (sbs, s_calls, s_runs) = runs
    assert sbs.tree.to_json() == greedy.tree.to_json()
    assert all(n.value is None for n in sbs.tree.nodes)
    assert (sbs.prediction, sbs.solutions) == (greedy.prediction, greedy.solutions)
    assert s_calls == g_calls and not [c for c in s_calls if c.kind == "value"]
    assert s_runs == g_runs
    drop = {"wall_s", "generate_wait_s", "sandbox_wait_s"}  # timings, not counts
    assert ({k: v for k, v in sbs.stats.to_json().items() if k not in drop}
            == {k: v for k, v in greedy.stats.to_json().items() if k not in drop})


# ------------------------------------------------------------------- concurrency, determinism

class GatedEngine:
    """Holds `hold`'s request back until `first`'s has answered and its expansion has had turns
    of the event loop to finish, so `first`'s children are attached before `hold`'s."""

    def __init__(self, inner: ScriptedEngine, hold: str, first: str) -> None:
        self.inner, self.hold, self.first = inner, hold, first
        self.released = asyncio.Event()
        self.in_flight: set[str] = set()
        self.both_in_flight = False

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        name = label(prompt)
        self.in_flight.add(name)
        self.both_in_flight |= {self.hold, self.first} <= self.in_flight
        if name == self.hold:
            await self.released.wait()
            for _ in range(50):  # loop turns, not time: the other expansion attaches meanwhile
                await asyncio.sleep(0)
        out = await self.inner.generate(prompt, params)
        if name == self.first:
            self.released.set()
        return out

    async def value(self, prompts: Sequence[str]) -> list[float]:
        return await self.inner.value(prompts)

    async def aclose(self) -> None:
        pass


async def test_beams_are_expanded_together_and_the_tree_ignores_answer_order() -> None:
    plain_engine = ScriptedEngine(by_label(TREE_2_2))
    plain = await run_sbs(make_ctx(plain_engine, "sbs_2_5", "strategy.n_generate_sample=2",
                                   values=ValueRecorder(VALUES_2_2)))
    gated = GatedEngine(ScriptedEngine(by_label(TREE_2_2)), hold="B", first="C")
    sandbox = ScriptedSandbox()
    result = await run_sbs(make_ctx(gated, "sbs_2_5", "strategy.n_generate_sample=2",
                                    values=ValueRecorder(VALUES_2_2), sandbox=sandbox))
    assert gated.both_in_flight  # both beams' requests were in flight at once
    ran = [code.split("'")[1] for code, _ in sandbox.calls]  # x = 'CA' → CA
    assert ran.index("CA") < ran.index("BA")  # C's expansion really finished first
    assert result.tree.to_json() == plain.tree.to_json()
    assert answers(result) == answers(plain)


def _random_script(prompt: str, params: SamplingParams) -> list[str]:
    rng = random.Random(f"{params.seed}|{prompt}")
    out = []
    for _ in range(params.n):
        name, r = f"L{rng.randrange(10_000)}", rng.random()
        out.append(answer(name, str(rng.randrange(3))) if r < 0.25 else bad(name) if r < 0.35
                   else code(name))
    return out


def _random_value(name: str) -> float:
    return random.Random(name).uniform(-1, 1)


async def _random_tree(seed: int) -> str:
    engine = ScriptedEngine(_random_script)
    result = await run_sbs(make_ctx(engine, "sbs_2_5", f"strategy.seed={seed}",
                                    values=ValueRecorder(_random_value)))
    return json.dumps({"tree": result.tree.to_json(), "prediction": result.prediction,
                       "solutions": [s.__dict__ for s in result.solutions]}, sort_keys=True)


async def test_same_seed_same_tree() -> None:
    first = await _random_tree(42)
    assert await _random_tree(42) == first
    assert await _random_tree(43) != first
    assert len(json.loads(first)["tree"]["nodes"]) > 11  # a real search, not one step


async def test_sampling_follows_the_config() -> None:
    engine = ScriptedEngine(by_label(TREE_2_2))
    ctx = make_ctx(engine, "sbs_2_5", "strategy.n_generate_sample=2", values=ValueRecorder(VALUES_2_2))
    await run_sbs(ctx)
    params = [c.params for c in engine.generate_calls]
    assert all(p is not None and p.temperature == 0.6 and p.seed == 42 and p.stop == FMT.stop
               for p in params)


# ------------------------------------------------------------------ beam_score: likelihood

def sampled(text: str, mean_logprob: float | None) -> Completion:
    """A completion whose tokens have this mean log-probability (None: no logprobs reported)."""
    ids = fake_token_ids(text)
    return Completion(text=text, token_ids=ids,
                      cumulative_logprob=None if mean_logprob is None else mean_logprob * len(ids))


# Each step's mean token log-probability. min-aggregation and sum disagree at depth 2: the path
# A → AA (−0.1, −0.9) has the better sum (−1.0 vs −1.2), B → BA (−0.6, −0.6) the better weakest step.
LOGP = {"A": -0.1, "B": -0.6, "C": -0.8, "AA": -0.9, "AB": -0.05, "BA": -0.6, "BB": -2.0,
        "ABA": -0.3, "ABB": -0.2}
TREE_LIK = {"root": [code("A"), code("B"), answer("C", "7")],
            "A": [answer("AA", "5"), code("AB")],
            "B": [answer("BA", "6"), answer("BB", "8")],
            "AB": [answer("ABA", "9"), answer("ABB", "4")]}


def _by_label_sampled(children: Mapping[str, Sequence[str]],
                      logp: Mapping[str, float | None]) -> Callable[[str, SamplingParams], list[Completion]]:
    def script(prompt: str, params: SamplingParams) -> list[Completion]:
        return [sampled(text, logp[label(text)]) for text in children[label(prompt)]]
    return script


async def test_likelihood_ranks_by_the_weakest_step_and_asks_no_values() -> None:
    engine = ScriptedEngine(_by_label_sampled(TREE_LIK, LOGP))
    values = ValueRecorder(lambda name: 0.0)
    result = await run_sbs(make_ctx(engine, "sbs_2_5", "strategy.n_generate_sample=2",
                                    "strategy.beam_score=likelihood", values=values))

    # depth 1: A (−0.1) and B (−0.6) are the beams, the answer C (−0.8) is left out. depth 2, by
    # the weakest step: AB −0.1, BA −0.6 (an answer: its slot is gone), AA −0.9, BB −2.0.
    # depth 3: one slot; ABB (−0.2) beats ABA (−0.3).
    assert requests(engine) == [("root", 4), ("A", 2), ("B", 2), ("AB", 2)]
    assert values.batches == []  # the value head is never asked
    assert [(name, ans) for name, ans, _, _ in answers(result)] == [("ABB", "4"), ("BA", "6")]
    assert [s.value for s in result.solutions] == pytest.approx([-0.2, -0.6])
    assert all(n.value is None for n in result.tree.nodes)  # node.value stays V_φ's slot
    assert result.prediction == "4"


@pytest.mark.parametrize(("weight", "picked"), [(0.1, "1"), (1.0, "2")])
async def test_value_plus_likelihood_weighs_the_two(weight: float, picked: str) -> None:
    # P: value .9, step −1.0; Q: value .5, step −0.1. Weight 0.1: .8 vs .49; weight 1: −.1 vs .4.
    tree = {"root": [answer("P", "1"), answer("Q", "2")]}
    engine = ScriptedEngine(_by_label_sampled(tree, {"P": -1.0, "Q": -0.1}))
    values = ValueRecorder({"P": .9, "Q": .5})
    result = await run_sbs(make_ctx(
        engine, "sbs_1_5", "strategy.n_generate_sample=2", "strategy.beam_score=value+likelihood",
        f"strategy.likelihood_weight={weight}", values=values))
    assert values.batches == [["P", "Q"]]
    assert result.prediction == picked
    assert [n.value for n in result.tree.nodes[1:]] == [.9, .5]


async def test_likelihood_without_logprobs_is_one_clear_fatal_error() -> None:
    engine = ScriptedEngine(_by_label_sampled(TREE_LIK, {k: None for k in LOGP}))
    with pytest.raises(NoLogprobsError, match="token log-probabilities") as err:
        await run_sbs(make_ctx(engine, "sbs_2_5", "strategy.beam_score=likelihood"))
    assert err.value.fatal  # every problem would hit it: the run ends with this line


# ----------------------------------------------------------------------------------- presets

@pytest.mark.parametrize("b1", [1, 2, 3, 5])
def test_sbs_presets(b1: int) -> None:
    cfg = build_config(load_preset(f"sbs_{b1}_5")).strategy
    assert (cfg.name, cfg.step_beam_width, cfg.n_generate_sample) == ("sbs", b1, 5)
    assert (cfg.temperature, cfg.max_depth, cfg.seed) == (0.6, 10, 42)
    assert cfg.need_value_func and cfg.remove_duplicate and cfg.prompt_format == "react_sft"
