"""Greedy ReAct's search logic, on the scripted engine and a scripted sandbox."""

from __future__ import annotations

from runtime.config import build_config, load_preset
from runtime.engine import SamplingParams
from runtime.engines.scripted import ScriptedEngine
from runtime.problem import Problem
from runtime.react import SENTINEL_NO_VALID_CHILD, SENTINEL_TOO_MANY_STEPS, get_format
from sandbox.scripted import TIMEOUT, ScriptedSandbox
from strategies import GreedyStrategy, SolveContext

FMT = get_format("react_sft")
PROBLEM = Problem(id="p", question="What is 2 + 3?", answer=("5",))


def code_step(code: str) -> str:
    return FMT.format_step("Compute it.", code=f"```python\n{code}\n```")


def answer_step(answer: str) -> str:
    return FMT.format_step("So the answer follows.", final_answer=answer)


def _ctx(engine: ScriptedEngine, sandbox: ScriptedSandbox, *overrides: str) -> SolveContext:
    from runtime.config import apply_overrides

    config = build_config(apply_overrides(load_preset("greedy"), list(overrides)))
    return SolveContext(engine=engine, sandbox=sandbox, strategy=config.strategy,
                        sandbox_config=config.sandbox)


def _by_depth(steps: list[str]):
    """A script that answers the k-th step of a path with steps[k]."""
    def script(prompt: str, params: SamplingParams) -> list[str]:
        depth = prompt.count("</step>")
        return [steps[min(depth, len(steps) - 1)]]
    return script


async def test_code_then_answer() -> None:
    engine = ScriptedEngine(_by_depth([code_step("print(2 + 3)"), answer_step("5")]))
    sandbox = ScriptedSandbox({"```python\nprint(2 + 3)\n```": "5"})
    result = await GreedyStrategy(_ctx(engine, sandbox).strategy).solve(PROBLEM, _ctx(engine, sandbox))

    assert result.prediction == "5"
    nodes = result.tree.nodes
    assert [n.depth for n in nodes] == [0, 1, 2]
    assert nodes[1].observation == "5" and nodes[1].code is not None
    assert nodes[1].text.endswith("<output>\n5\n</output>\n</step>")
    assert nodes[2].terminal and nodes[2].final_answer == "5"
    assert result.stats.steps == 2 and result.stats.code_runs == 1 and result.stats.engine_calls == 2
    assert [s.answer for s in result.solutions] == ["5"]
    # Greedy: temperature 0, one sample, the format's stop strings.
    params = [c.params for c in engine.calls]
    assert all(p.temperature == 0 and p.n == 1 and p.stop == FMT.stop for p in params)
    # The second prompt carries the first step with its observation, byte-exact.
    second_prompt = engine.calls[1].prompt
    assert second_prompt == FMT.build_prompt(PROBLEM.question, [nodes[1].text])


async def test_unparsable_step_is_an_invalid_terminal() -> None:
    engine = ScriptedEngine(_by_depth(["<step>\n<p>\nrambling without code or answer"]))
    sandbox = ScriptedSandbox({})
    ctx = _ctx(engine, sandbox)
    result = await GreedyStrategy(ctx.strategy).solve(PROBLEM, ctx)
    assert result.prediction is None and result.solutions == []
    assert result.tree.nodes[-1].final_answer == SENTINEL_NO_VALID_CHILD
    assert sandbox.calls == []


async def test_too_many_steps() -> None:
    engine = ScriptedEngine(_by_depth([code_step("x = 1")]))
    sandbox = ScriptedSandbox({"```python\nx = 1\n```": ""})
    ctx = _ctx(engine, sandbox, "strategy.max_depth=4")
    result = await GreedyStrategy(ctx.strategy).solve(PROBLEM, ctx)
    assert result.prediction is None
    assert len(engine.calls) == 4
    last = result.tree.nodes[-1]
    assert last.depth == 4 and last.terminal and last.final_answer == SENTINEL_TOO_MANY_STEPS


async def test_history_replays_earlier_code_but_not_timed_out_code() -> None:
    codes = ["a = 2", "while True: pass", "b = a * 3", "print(b)"]
    fenced = [f"```python\n{c}\n```" for c in codes]
    engine = ScriptedEngine(_by_depth([code_step(c) for c in codes] + [answer_step("6")]))
    sandbox = ScriptedSandbox({fenced[0]: "", fenced[1]: TIMEOUT, fenced[2]: "", fenced[3]: "6"})
    ctx = _ctx(engine, sandbox)
    result = await GreedyStrategy(ctx.strategy).solve(PROBLEM, ctx)
    assert result.prediction == "6"
    assert sandbox.calls == [
        (fenced[0], ()),
        (fenced[1], (fenced[0],)),
        (fenced[2], (fenced[0],)),  # the timed-out step is not replayed
        (fenced[3], (fenced[0], fenced[2])),
    ]
    assert result.stats.code_timeouts == 1


async def test_consecutive_code_errors_are_counted() -> None:
    codes = ["1/0", "undefined_name", "x = 1"]
    fenced = [f"```python\n{c}\n```" for c in codes]
    engine = ScriptedEngine(_by_depth([code_step(c) for c in codes] + [answer_step("1")]))
    sandbox = ScriptedSandbox({fenced[0]: "ZeroDivisionError: division by zero",
                               fenced[1]: "NameError: name 'undefined_name' is not defined",
                               fenced[2]: ""})
    ctx = _ctx(engine, sandbox)
    result = await GreedyStrategy(ctx.strategy).solve(PROBLEM, ctx)
    assert [n.consecutive_errors for n in result.tree.nodes[1:4]] == [1, 2, 0]
    assert [n.code_error for n in result.tree.nodes[1:4]] == [True, True, False]
