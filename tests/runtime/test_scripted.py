"""ScriptedEngine: the test double every search strategy is tested against."""

from __future__ import annotations

import asyncio

import pytest

from runtime.engine import Completion, Engine, SamplingParams
from runtime.engines.scripted import ScriptedCall, ScriptedEngine
from runtime.errors import EngineError

P = "<question> 2 + 3 </question>\n"


async def test_mapping_script_cycles_to_n_with_fake_tokens_and_logprobs() -> None:
    engine = ScriptedEngine({P: ["step one", "step two words"]})
    assert isinstance(engine, Engine)
    out = await engine.generate(P, SamplingParams(n=3, temperature=0.6))
    assert [c.text for c in out] == ["step one", "step two words", "step one"]
    assert [len(c.token_ids) for c in out] == [2, 3, 2]
    assert out[0].token_ids == out[2].token_ids  # deterministic
    assert out[1].cumulative_logprob == pytest.approx(-0.3)
    assert all(c.finish_reason == "stop" for c in out)


async def test_callable_script_sees_prompt_and_params() -> None:
    seen: list[tuple[str, SamplingParams]] = []

    def script(prompt: str, params: SamplingParams) -> list[str]:
        seen.append((prompt, params))
        return [f"depth {prompt.count('</step>')}"]

    engine = ScriptedEngine(script)
    params = SamplingParams(stop=("</code>",))
    out = await engine.generate(P + "<step>\n</step>\n", params)
    assert out[0].text == "depth 1"
    assert seen == [(P + "<step>\n</step>\n", params)]


async def test_ready_completions_pass_through() -> None:
    done = Completion("x", token_ids=(1, 2), cumulative_logprob=-5.0, finish_reason="length")
    engine = ScriptedEngine({P: [done]})
    assert await engine.generate(P, SamplingParams(n=2)) == [done, done]


async def test_unknown_prompt_is_an_engine_error_naming_its_tail() -> None:
    engine = ScriptedEngine({P: ["a"]})
    with pytest.raises(EngineError, match="no completions for prompt ending .*unknown tail"):
        await engine.generate("x" * 200 + "unknown tail", SamplingParams())


async def test_values_mapping_callable_and_default() -> None:
    by_map = ScriptedEngine({}, values={"a": 0.5}, default_value=-1.0)
    assert await by_map.value(["a", "b"]) == [0.5, -1.0]
    by_fn = ScriptedEngine({}, values=lambda p: len(p) / 10)
    assert await by_fn.value(["ab", "abcd"]) == [0.2, 0.4]
    assert await ScriptedEngine({}).value(["z"]) == [0.0]


async def test_calls_are_recorded_in_order() -> None:
    engine = ScriptedEngine({P: ["a"]})
    params = SamplingParams(n=2)
    await engine.generate(P, params)
    await engine.value([P, P + "x"])
    assert engine.calls == [
        ScriptedCall("generate", P, params),
        ScriptedCall("value", P),
        ScriptedCall("value", P + "x"),
    ]
    assert len(engine.generate_calls) == 1 and len(engine.value_calls) == 2


async def test_latency_yields_to_other_tasks() -> None:
    engine = ScriptedEngine({P: ["a"]}, latency_s=lambda: 0.01)
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    gen = asyncio.ensure_future(engine.generate(P, SamplingParams()))
    await asyncio.gather(other(), gen)
    assert order == ["other"]
    assert gen.result()[0].text == "a"


async def test_closed_engine_refuses() -> None:
    async with ScriptedEngine({P: ["a"]}) as engine:
        pass
    with pytest.raises(EngineError, match="closed"):
        await engine.generate(P, SamplingParams())
