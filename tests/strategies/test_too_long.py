"""A path that outgrows the model's context is a dead end worth −1 (as the original treats it),
never a failed problem."""

from __future__ import annotations

from runtime.config import apply_overrides, build_config, load_preset
from runtime.engine import SamplingParams
from runtime.engines.scripted import ScriptedEngine
from runtime.errors import PromptTooLongError
from runtime.problem import Problem
from runtime.react import get_format
from sandbox.scripted import ScriptedSandbox
from strategies import GreedyStrategy, MCTSStrategy, SolveContext

FMT = get_format("react_sft")
PROBLEM = Problem(id="p", question="What is 2 + 3?", answer=("5",))
CODE = FMT.format_step("Compute.", code="x = 1")
MAX_STEPS_IN_CONTEXT = 2


def _script(prompt: str, params: SamplingParams) -> list[str]:
    if prompt.count("</step>") >= MAX_STEPS_IN_CONTEXT:
        raise PromptTooLongError("prompt is too long")
    return [CODE] * params.n


def _values(prompt: str) -> float:
    if prompt.count("</step>") > MAX_STEPS_IN_CONTEXT:
        raise PromptTooLongError("value prompt is too long")
    return 0.5


def _ctx(preset: str, *overrides: str) -> SolveContext:
    config = build_config(apply_overrides(load_preset(preset), list(overrides)))
    return SolveContext(engine=ScriptedEngine(_script, values=_values), sandbox=ScriptedSandbox(),
                        strategy=config.strategy, sandbox_config=config.sandbox)


async def test_greedy_stops_at_the_context_limit() -> None:
    ctx = _ctx("greedy")
    result = await GreedyStrategy(ctx.strategy).solve(PROBLEM, ctx)
    assert result.prediction is None
    last = result.tree.nodes[-1]
    assert last.depth == MAX_STEPS_IN_CONTEXT and last.terminal and last.value == -1.0


async def test_mcts_backs_up_minus_one_for_a_too_long_leaf() -> None:
    ctx = _ctx("mcts_n40", "strategy.iterations=6", "strategy.n_generate_sample=1")
    result = await MCTSStrategy(ctx.strategy).solve(PROBLEM, ctx)
    tree = result.tree
    dead = [n for n in tree.nodes if n.terminal and not n.children]
    assert dead and all(n.depth == MAX_STEPS_IN_CONTEXT for n in dead)
    assert all(n.q == -1.0 for n in dead)
    assert all(-1.0 <= n.q <= 1.0 for n in tree.nodes)


async def test_values_fall_back_to_one_by_one() -> None:
    ctx = _ctx("greedy")
    ok = FMT.build_prompt("q", [])
    too_long = FMT.build_prompt("q", ["<step>\n</step>"] * 3)
    assert await ctx.values([ok, too_long, ok]) == [0.5, -1.0, 0.5]


async def test_beam_search_survives_the_context_limit() -> None:
    from strategies import BeamSearchStrategy

    ctx = _ctx("sbs_2_5", "strategy.n_generate_sample=2")
    result = await BeamSearchStrategy(ctx.strategy).solve(PROBLEM, ctx)
    assert result.prediction is None
    dead = [n for n in result.tree.nodes if n.terminal and not n.children and n.final_answer is None]
    assert dead and all(n.depth == MAX_STEPS_IN_CONTEXT for n in dead)
