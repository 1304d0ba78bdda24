"""SimulatedEngine: latency, busy time, prefix hits and batch caps follow the cost model."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime.engine import Engine, SamplingParams
from runtime.engines.scripted import Script
from runtime.engines.simulated import Core, CostModel, SimulatedEngine
from runtime.errors import EngineError, PromptTooLongError

COST = CostModel(prefill_s_per_token=0.001, decode_step_s=0.01, decode_s_per_row=0.001, block_size=16)


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def three_tokens(prompt: str, params: SamplingParams) -> list[str]:
    return ["a b c"]


async def test_one_request_costs_prefill_plus_decode_steps() -> None:
    async with SimulatedEngine(COST, script=three_tokens, time_scale=0) as engine:
        assert isinstance(engine, Engine)
        out = await engine.generate(words(100), SamplingParams(n=2))
        assert [c.text for c in out] == ["a b c", "a b c"]
        s = engine.stats()
    # step 1: prefill 100 tokens once for both samples + a decode step of 2 rows; steps 2-3: decode
    want = (0.1 + 0.01 + 2 * 0.001) + 2 * (0.01 + 2 * 0.001)
    assert s["busy_s"] == pytest.approx(want)
    assert s["mean_latency_s"] == pytest.approx(want)
    assert s["steps"] == 3 and s["generated_tokens"] == 6 and s["mean_running"] == 2
    assert s["busy_fraction"] == 1.0 and s["idle_s"] == 0.0


async def test_prefix_cache_hits_make_prefill_cheaper() -> None:
    async with SimulatedEngine(COST, script=three_tokens, time_scale=0) as engine:
        await engine.generate(words(100), SamplingParams())
        first = engine.stats()["busy_s"]
        await engine.generate(words(100) + " next step", SamplingParams())  # 102 tokens, 96 cached
        second = engine.stats()["busy_s"] - first
        s = engine.stats()
    decode = 3 * (0.01 + 0.001)
    assert first == pytest.approx(0.1 + decode)
    assert second == pytest.approx(0.006 + decode)
    assert s["cached_tokens"] == 96
    assert s["prefix_hit_rate"] == pytest.approx(96 / 202)


async def test_a_different_prefix_misses_the_cache() -> None:
    async with SimulatedEngine(COST, script=three_tokens, time_scale=0) as engine:
        await engine.generate(words(100, "a"), SamplingParams())
        await engine.generate(words(100, "b"), SamplingParams())
        assert engine.stats()["cached_tokens"] == 0


async def test_continuous_batching_caps_running_rows() -> None:
    prompts = [words(10, f"p{k}_") for k in range(5)]
    async with SimulatedEngine(COST, script=three_tokens, max_running=2, time_scale=0) as engine:
        await asyncio.gather(*(engine.generate(p, SamplingParams()) for p in prompts))
        s = engine.stats()
    assert s["max_running_seen"] == 2
    # pairs run 3 steps each (the last request alone): 9 steps, each admission prefills 10 tokens/request
    assert s["steps"] == 9
    want = 5 * 10 * 0.001 + 6 * (0.01 + 0.002) + 3 * (0.01 + 0.001)
    assert s["busy_s"] == pytest.approx(want)


async def test_requests_join_the_running_batch_as_rows_free_up() -> None:
    def script(prompt: str, params: SamplingParams) -> list[str]:
        return [words(6)] if prompt.startswith("long") else ["x"]

    async with SimulatedEngine(COST, script=script, max_running=2, time_scale=0) as engine:
        await asyncio.gather(engine.generate("long", SamplingParams()),
                             *(engine.generate(f"short{k}", SamplingParams()) for k in range(3)))
        s = engine.stats()
    # the long request runs 6 steps; each 1-token request takes the free row for one step
    assert s["steps"] == 6 and s["max_running_seen"] == 2
    assert s["generated_tokens"] == 6 + 3


async def test_a_request_wider_than_the_cap_runs_alone() -> None:
    async with SimulatedEngine(COST, script=three_tokens, max_running=2, time_scale=0) as engine:
        out = await engine.generate("q", SamplingParams(n=4))
        assert len(out) == 4 and engine.stats()["max_running_seen"] == 4


async def test_value_is_prefill_only() -> None:
    async with SimulatedEngine(COST, script=three_tokens, values=lambda p: 0.5, time_scale=0) as engine:
        assert await engine.value([words(20), words(30)]) == [0.5, 0.5]
        s = engine.stats()
    assert s["busy_s"] == pytest.approx(0.05) and s["steps"] == 1 and s["value_requests"] == 1


async def test_real_time_mode_counts_idle_gaps() -> None:
    async with SimulatedEngine(COST, script=three_tokens, time_scale=0.2) as engine:
        await engine.generate(words(100), SamplingParams())  # 0.133 virtual = 27 ms real
        await asyncio.sleep(0.1)  # 0.5 virtual seconds of idle engine
        await engine.generate(words(100, "z"), SamplingParams())
        s = engine.stats()
    busy = 2 * (0.1 + 3 * 0.011)
    assert s["busy_s"] == pytest.approx(busy)
    assert 0.45 <= s["idle_s"] <= 1.0
    assert s["busy_fraction"] == pytest.approx(busy / (busy + s["idle_s"]))
    assert s["busy_s"] + s["idle_s"] == pytest.approx(s["clock_s"])  # the first request came at 0
    assert 0.0 <= s["stall_s"] < s["idle_s"] - 0.4  # the 0.1 s real gap had no work: not stall


async def test_real_time_mode_counts_a_blocked_event_loop_as_idle_stall() -> None:
    """Regression: the clock used to advance by step times and drop sleep overshoot, so time the
    event loop was blocked mid-step vanished and tokens/s came out too high."""
    async with SimulatedEngine(COST, script=three_tokens, time_scale=1.0) as engine:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task = asyncio.create_task(engine.generate(words(100), SamplingParams()))
        await asyncio.sleep(0.02)  # the engine is inside its first step (0.111 s of sleep)
        time.sleep(0.3)  # block the loop past that step's end: ~0.2 s of overshoot
        await task
        first = engine.stats()["stall_s"]
        task = asyncio.create_task(engine.generate(words(100, "z"), SamplingParams()))
        while not engine._state.waiting:  # the request is queued, the engine task not yet run
            await asyncio.sleep(0)
        time.sleep(0.1)  # so the engine starts its step late: stall with work waiting
        await task
        s = engine.stats()
        real = loop.time() - t0
    assert first >= 0.18  # ~0.19 s of overshoot
    assert s["stall_s"] - first >= 0.09  # ~0.1 s late start
    busy = 2 * (0.1 + 3 * 0.011)
    assert s["busy_s"] == pytest.approx(busy)  # busy is modelled GPU time only
    assert s["busy_s"] + s["idle_s"] == pytest.approx(real, abs=0.01)  # add up to real time
    assert s["stall_s"] <= s["idle_s"] + 1e-9
    assert s["busy_fraction"] <= busy / 0.5


def tokens(n: int, tag: str = "w") -> Script:
    """A script: n tokens for prompts starting with `tag`, three for the rest."""
    return lambda prompt, params: [" ".join(["t"] * n) if prompt.startswith(tag) else "a b c"]


# in the loop the 19 later steps (0.209 s) can only start after the block: >= 0.529 s in all
@pytest.mark.parametrize(("core", "low", "high"), [("own-process", 0.3, 0.45), ("in-loop", 0.5, 1.5)])
async def test_a_blocked_loop_stalls_only_an_in_loop_gpu(core: Core, low: float, high: float) -> None:
    async with SimulatedEngine(COST, script=tokens(20), time_scale=1.0, core=core) as engine:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task = asyncio.create_task(engine.generate(words(100), SamplingParams()))
        await asyncio.sleep(0.02)  # the engine is inside its first step (0.111 s)
        time.sleep(0.3)  # blocked until 0.32 s, when the GPU's 0.1 + 20 x 0.011 s are done
        await task
        real = loop.time() - t0
        s = engine.stats()
    # own process: the 19 later steps ran while the loop was blocked; in the loop: after it
    assert low <= real <= high
    assert s["busy_s"] == pytest.approx(0.32)
    assert s["busy_s"] + s["idle_s"] == pytest.approx(real, abs=0.01)


async def test_an_own_process_gpu_admits_a_request_only_once_it_arrived() -> None:
    async with SimulatedEngine(COST, script=tokens(40), time_scale=1.0, core="own-process") as engine:
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(engine.generate(words(100), SamplingParams()))
        await asyncio.sleep(0.02)
        time.sleep(0.3)  # the GPU ran steps meanwhile; a request sent now joins none of them
        sent = loop.time()
        await engine.generate(words(100, "z"), SamplingParams())  # 3 tokens
        latency = loop.time() - sent
        await first
        s = engine.stats()
    assert latency >= 0.1 + 3 * 0.011  # its own prefill and decode, after it arrived
    assert s["busy_s"] <= s["clock_s"]  # the modelled GPU never runs ahead of the real clock


def test_core_must_be_known() -> None:
    with pytest.raises(ValueError, match="core must be one of"):
        SimulatedEngine(COST, script=three_tokens, core="gpu")  # type: ignore[arg-type]


async def test_cancelled_request_leaves_the_queue_and_aclose_fails_the_rest() -> None:
    engine = SimulatedEngine(COST, script=three_tokens, max_running=1, time_scale=1.0)
    first = asyncio.create_task(engine.generate(words(10), SamplingParams()))
    second = asyncio.create_task(engine.generate(words(10, "b"), SamplingParams()))
    await asyncio.sleep(0.005)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    await engine.aclose()
    with pytest.raises(EngineError):
        await first
    with pytest.raises(EngineError):
        await engine.generate("x", SamplingParams())


async def test_prompt_longer_than_the_context() -> None:
    cost = CostModel(max_model_len=8)
    async with SimulatedEngine(cost, script=three_tokens, time_scale=0) as engine:
        with pytest.raises(PromptTooLongError, match="context is 8"):
            await engine.generate(words(8), SamplingParams())
