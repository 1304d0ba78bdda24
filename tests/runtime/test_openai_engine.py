"""OpenAIEngine against our own server (and small hand-written aiohttp apps for failure modes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from runtime.engine import Completion, Engine, SamplingParams
from runtime.engines.openai import OpenAIEngine, default_affinity_key
from runtime.engines.scripted import ScriptedEngine
from runtime.engines.server import start_server
from runtime.errors import EngineError, EngineUnavailableError, NoValueHeadError, PromptTooLongError
from tests.ports import free_port

QA = "<question> What is 1+1? </question>\n"
QB = "<question> What is 2+2? </question>\n"
QC = "<question> What is 3+3? </question>\n"
FAST = {"backoff_s": 0.01, "timeout_s": 5.0}


@asynccontextmanager
async def raw_app(handler: Callable[[web.Request], object]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class GatedEngine(ScriptedEngine):
    """Requests whose prompt contains "slow" wait for `gate`; every prompt is recorded."""

    def __init__(self) -> None:
        super().__init__(lambda p, s: ["ok"])
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        out = await super().generate(prompt, params)
        if "slow" in prompt:
            self.started.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return out


async def test_round_trip_through_our_server() -> None:
    engine = ScriptedEngine({QA: ["<step> a b </step>", "c"]}, values={QA: 0.75})
    params = SamplingParams(temperature=0.6, top_p=0.95, max_tokens=50, n=3, stop=("</code>", "</step>"), seed=7)
    async with start_server(engine) as server, OpenAIEngine([server.url + "/v1"], "m", **FAST) as client:
        assert isinstance(client, Engine)
        got = await client.generate(QA, params)
        assert got == await ScriptedEngine({QA: ["<step> a b </step>", "c"]}).generate(QA, params)
        # the wire carries the prompt's own seed, so that one seed over many prompts does not
        # make a stock vLLM server draw the same noise for each of them
        assert engine.generate_calls[0].params == params.for_prompt(QA) != params
        assert await client.value([QA, "other"]) == [0.75, 0.0]
        assert await client.value([]) == []
    with pytest.raises(EngineError, match="closed"):
        await client.generate(QA, params)


async def test_trees_stay_on_one_replica_and_new_trees_go_to_the_less_loaded() -> None:
    e0, e1 = GatedEngine(), GatedEngine()
    async with start_server(e0) as s0, start_server(e1) as s1, OpenAIEngine([s0.url, s1.url], "m", **FAST) as client:
        slow_a = asyncio.create_task(client.generate(QA + "slow", SamplingParams(n=4)))
        await e0.started.wait()  # tree A pinned to replica 0 (tie: lowest index), 4 rows in flight
        assert client.in_flight == [4, 0]
        await client.generate(QB, SamplingParams())  # new tree: replica 1 is less loaded
        await client.generate(QA + "step 2\n", SamplingParams())  # tree A stays on replica 0
        await client.generate(QC, SamplingParams(n=2))  # replica 1: 0 rows vs 4
        await client.generate(QB + "step 2\n", SamplingParams())
        e0.gate.set()
        await slow_a
    assert [c.prompt for c in e0.generate_calls] == [QA + "slow", QA + "step 2\n"]
    assert [c.prompt for c in e1.generate_calls] == [QB, QC, QB + "step 2\n"]
    assert client.replica_of(QA + "anything") == 0 and client.replica_of(QC) == 1


async def test_5xx_is_retried_with_backoff() -> None:
    hits: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(time.monotonic())
        if len(hits) <= 2:
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        return web.json_response({"choices": [{"index": 0, "text": "fine", "finish_reason": "length",
                                               "logprobs": {"tokens": ["a", "b"], "token_logprobs": [-0.5, -0.25]}}]})

    async with raw_app(handler) as url, OpenAIEngine([url], "m", backoff_s=0.05, max_retries=3) as client:
        [c] = await client.generate(QA, SamplingParams())
    assert len(hits) == 3 and hits[2] - hits[1] >= 0.09  # backoff doubles: 0.05, then 0.1
    # no token ids from this server: placeholders keep the length; logprobs are summed
    assert c == Completion("fine", (-1, -1), -0.75, "length", None)


async def test_5xx_every_time_gives_up_with_the_server_message() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "GPU on fire"}}, status=500)

    async with raw_app(handler) as url, OpenAIEngine([url], "m", backoff_s=0.0, max_retries=2) as client:
        with pytest.raises(EngineError, match=r"answered 500: GPU on fire \(gave up after 3 attempts\)") as info:
            await client.generate(QA, SamplingParams())
        assert not info.value.fatal  # a server that answers may fail one request and serve the next


async def test_4xx_is_a_clear_error_and_context_length_is_prompt_too_long() -> None:
    seen: list[dict] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if "bad" in body.get("prompt", ""):
            return web.json_response({"object": "error", "message": "temperature must be\nnon-negative",
                                      "type": "BadRequestError", "code": 400}, status=400)
        if "huge" in body["prompt"]:
            return web.json_response({"object": "error", "code": 400, "message":
                                      "This model's maximum context length is 4096 tokens. However, you "
                                      "requested 5000 tokens (4500 in the messages, 500 in the completion)."},
                                     status=400)
        if body["max_tokens"] > 96:  # prompt 4000 fits; prompt + max_tokens does not
            return web.json_response({"object": "error", "code": 400, "message":
                                      "This model's maximum context length is 4096 tokens. However, you "
                                      "requested 6000 tokens (4000 in the messages, 2000 in the completion)."},
                                     status=400)
        return web.json_response({"choices": [{"index": 0, "text": "t", "finish_reason": "length",
                                               "token_ids": [1], "cumulative_logprob": -1.0}]})

    async with raw_app(handler) as url, OpenAIEngine([url], "m", **FAST) as client:
        with pytest.raises(EngineError, match=r"rejected the request \(400\): temperature must be non-negative$"):
            await client.generate("bad", SamplingParams())
        with pytest.raises(PromptTooLongError, match="maximum context length is 4096"):
            await client.generate("huge", SamplingParams(max_tokens=500))
        [c] = await client.generate("long", SamplingParams(max_tokens=2000))
        assert c.finish_reason == "length" and seen[-1]["max_tokens"] == 96
    assert len(seen) == 4  # 4xx are never retried (except the one clamp)


async def test_value_endpoint_missing_is_no_value_head() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "Not Found"}}, status=404)

    async with raw_app(handler) as url, OpenAIEngine([url], "m", **FAST) as client:
        with pytest.raises(NoValueHeadError):
            await client.value([QA])


async def test_pooling_endpoint_values() -> None:
    async with start_server(ScriptedEngine(lambda p, s: ["x"], values=lambda p: 0.125)) as server:
        async with OpenAIEngine([server.url], "m", value_endpoint="/pooling", **FAST) as client:
            assert await client.value([QA, QB]) == [0.125, 0.125]


async def test_unreachable_server_fails_fast_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with OpenAIEngine([url], "m", max_retries=2, backoff_s=0.01, timeout_s=2.0) as client:
        t0 = time.monotonic()
        with pytest.raises(EngineUnavailableError,
                           match=r"cannot reach http://127\.0\.0\.1:\d+/v1/completions") as info:
            await client.generate(QA, SamplingParams())
        assert time.monotonic() - t0 < 2.0 and "\n" not in str(info.value)


async def test_a_silent_server_times_out() -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async with raw_app(handler) as url, OpenAIEngine([url], "m", timeout_s=0.3, max_retries=3) as client:
        t0 = time.monotonic()
        with pytest.raises(EngineError, match=r"did not answer within 0\.3 s"):
            await client.generate(QA, SamplingParams())
        assert time.monotonic() - t0 < 2.0


async def test_a_dead_replica_is_routed_around() -> None:
    engine = ScriptedEngine(lambda p, s: ["ok"])
    dead = f"http://127.0.0.1:{free_port()}"
    async with start_server(engine) as server, OpenAIEngine([dead, server.url], "m", **FAST) as client:
        for q in (QA, QB, QC):  # the first tree is pinned to the dead one, then re-pinned
            assert (await client.generate(q, SamplingParams()))[0].text == "ok"
        assert client.replica_of(QA) == 1 and len(engine.calls) == 3


async def test_cancelling_the_caller_aborts_the_server_request() -> None:
    engine = GatedEngine()
    async with start_server(engine) as server, OpenAIEngine([server.url], "m", **FAST) as client:
        task = asyncio.create_task(client.generate(QA + "slow", SamplingParams(n=2)))
        await engine.started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(engine.cancelled.wait(), 5)
        assert client.in_flight == [0]


def test_affinity_key_is_the_question() -> None:
    assert default_affinity_key(QA + "<step> x </step>\n") == default_affinity_key(QA) == QA.strip()
    react = "Instructions\n\nQuestion: demo\n\nThought: ...\n\nNow! It's your turn.\n\nQuestion: What is 5?\n\nThought: a"
    assert default_affinity_key(react) == "Question: What is 5?"
    assert default_affinity_key("x" * 1000) == "x" * 256


def test_bad_base_urls() -> None:
    with pytest.raises(EngineError, match="no base URL"):
        OpenAIEngine([], "m")
    with pytest.raises(EngineError, match="must start with http"):
        OpenAIEngine(["gpu0:8000"], "m")
