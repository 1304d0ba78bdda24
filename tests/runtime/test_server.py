"""The OpenAI-compatible server over any Engine: shapes, errors, and the real HFEngine behind it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest

from runtime.engine import Completion, SamplingParams
from runtime.engines.openai import OpenAIEngine
from runtime.engines.scripted import ScriptedEngine
from runtime.engines.server import start_server
from runtime.errors import EngineError, NoValueHeadError, PromptTooLongError


class FailingEngine(ScriptedEngine):
    def __init__(self, error: Exception) -> None:
        super().__init__(lambda p, s: ["x"])
        self.error = error

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        raise self.error

    async def value(self, prompts: Sequence[str]) -> list[float]:
        raise self.error


async def test_endpoints_have_openai_and_vllm_shapes() -> None:
    engine = ScriptedEngine(lambda p, s: ["one two", "three"], values=lambda p: -0.5)
    async with start_server(engine, model_name="tiny") as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/health") as r:
            assert r.status == 200
        async with http.get(server.url + "/v1/models") as r:
            assert (await r.json())["data"][0]["id"] == "tiny"
        body = {"model": "tiny", "prompt": "q", "n": 2, "temperature": 0.5, "top_p": 0.9,
                "max_tokens": 7, "stop": "</code>", "seed": 3, "logprobs": 1}
        async with http.post(server.url + "/v1/completions", json=body) as r:
            data = await r.json()
        assert engine.calls[0].params == SamplingParams(0.5, 0.9, 7, 2, ("</code>",), 3)
        c0, c1 = data["choices"]
        assert data["object"] == "text_completion" and c0["index"] == 0
        assert c0["text"] == "one two" and c1["text"] == "three" and c0["finish_reason"] == "stop"
        assert sum(c0["logprobs"]["token_logprobs"]) == pytest.approx(c0["cumulative_logprob"])
        assert len(c0["logprobs"]["tokens"]) == 2 and c0["logprobs"]["tokens"][0].startswith("token_id:")
        async with http.post(server.url + "/classify", json={"model": "tiny", "input": ["a", "b"]}) as r:
            assert [d["probs"] for d in (await r.json())["data"]] == [[-0.5], [-0.5]]
        async with http.post(server.url + "/pooling", json={"model": "tiny", "input": "a"}) as r:
            assert (await r.json())["data"] == [{"index": 0, "object": "pooling", "data": [-0.5]}]


@pytest.mark.parametrize(("error", "status", "kind"), [
    (PromptTooLongError("prompt is 9 tokens, the model's context is 8"), 400, "PromptTooLongError"),
    (NoValueHeadError("no head"), 400, "NoValueHeadError"),
    (EngineError("broken"), 500, "EngineError"),
    (RuntimeError("bug"), 500, "InternalServerError"),
])
async def test_engine_errors_map_to_status_codes(error: Exception, status: int, kind: str) -> None:
    async with start_server(FailingEngine(error)) as server, aiohttp.ClientSession() as http:
        for path, body in (("/v1/completions", {"prompt": "q"}), ("/classify", {"input": ["q"]})):
            async with http.post(server.url + path, json=body) as r:
                assert r.status == status
                assert (await r.json())["error"]["type"] == kind


async def test_bad_requests_are_400() -> None:
    async with start_server(ScriptedEngine(lambda p, s: ["x"])) as server, aiohttp.ClientSession() as http:
        for body in (b"not json", b"[1]", b'{"prompt": 3}', b'{"prompt": "q", "n": 0}',
                     b'{"prompt": ["a", "b"]}', b'{"prompt": "q", "temperature": "hot"}'):
            async with http.post(server.url + "/v1/completions", data=body) as r:
                assert r.status == 400, body
                assert (await r.json())["error"]["message"]


async def test_port_in_use_is_one_clear_error() -> None:
    engine = ScriptedEngine(lambda p, s: ["x"])
    async with start_server(engine) as server:
        with pytest.raises(EngineError, match="cannot listen"):
            async with start_server(engine, port=server.port):
                pass


async def test_hf_engine_served_matches_the_engine_itself(tiny_model_dir: Path) -> None:
    from runtime.engines.hf import HFEngine

    prompt = "<question> Tom has 12 apples and buys 7 more. How many apples does Tom have? </question>\n"
    params = SamplingParams(max_tokens=40, stop=("</code>",))
    async with await HFEngine.load(str(tiny_model_dir)) as hf:
        direct = await hf.generate(prompt, params)
        direct_value = await hf.value([prompt])
        async with start_server(hf) as server, OpenAIEngine([server.url], "tiny") as client:
            remote = await client.generate(prompt, params)
            assert remote == direct
            assert await client.value([prompt]) == pytest.approx(direct_value, abs=1e-6)
            with pytest.raises(PromptTooLongError):
                await client.generate(prompt * 400, params)
