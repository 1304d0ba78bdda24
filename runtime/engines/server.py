"""Any `Engine` over an OpenAI-compatible HTTP API (aiohttp), for `cli.py serve` and the client's tests.

    async with start_server(engine, "127.0.0.1", 0) as server:   # port 0: an ephemeral port
        OpenAIEngine([server.url], "alphamath")

Endpoints (vLLM's shapes, so `OpenAIEngine` talks to this server and to vLLM the same way):
- POST /v1/completions  {model, prompt (a string or a list of one), n, temperature, top_p,
  max_tokens, stop, seed, logprobs} → {"object": "text_completion", "choices": [{index, text,
  finish_reason, stop_reason, token_ids, cumulative_logprob, logprobs}], "usage"}. Our engines
  keep only the SUM of the sampled tokens' logprobs: it is sent exactly as `cumulative_logprob`,
  and `logprobs.token_logprobs` (present when `logprobs` is asked) splits it evenly over the
  tokens, so that a client summing them gets the same number. `logprobs.tokens` are
  vLLM-style "token_id:N" strings.
- POST /classify, /v1/classify, /pooling  {model, input: str | [str]} → {"data": [{index,
  probs: [value], num_classes: 1}]} (pooling: {index, data: [value]}): the engine's value().
- GET /health → 200 "ok";  GET /v1/models → {"data": [{"id": model_name}]}.
- Errors: {"error": {"message", "type", "code"}} with 400 for bad input, PromptTooLongError
  (type "PromptTooLongError", message naming the context length), NoValueHeadError; 500 for other
  EngineErrors and unexpected failures.
- A client that disconnects cancels its handler (`handler_cancellation=True`), and so its engine
  request: the engine stops working on an answer nobody waits for.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from runtime.engine import Completion, Engine, SamplingParams
from runtime.errors import EngineError, NoValueHeadError, PromptTooLongError

__all__ = ["RunningServer", "build_app", "run_server", "serve", "start_server"]

_ENGINE: web.AppKey[Engine] = web.AppKey("engine", Engine)
_MODEL: web.AppKey[str] = web.AppKey("model", str)


def _error(status: int, message: str, kind: str) -> web.Response:
    message = " ".join(message.split())
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


class _BadRequest(Exception):
    pass


def _params(body: dict[str, Any]) -> SamplingParams:
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    seed = body.get("seed")
    try:
        return SamplingParams(
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            max_tokens=int(body.get("max_tokens", 16)),
            n=int(body.get("n", 1)),
            stop=tuple(str(s) for s in stop),
            seed=None if seed is None else int(seed),
        )
    except (TypeError, ValueError) as exc:
        raise _BadRequest(str(exc)) from exc


def _one_prompt(body: dict[str, Any], field: str) -> list[str]:
    value = body.get(field)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        return value
    raise _BadRequest(f"'{field}' must be a string or a list of strings")


def _choice(i: int, c: Completion, logprobs: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": i,
        "text": c.text,
        "finish_reason": c.finish_reason,
        "stop_reason": c.stop_reason,
        "token_ids": list(c.token_ids),
        "cumulative_logprob": c.cumulative_logprob,
        "logprobs": None,
    }
    if logprobs:
        k = len(c.token_ids)
        each = None if c.cumulative_logprob is None or k == 0 else c.cumulative_logprob / k
        out["logprobs"] = {
            "tokens": [f"token_id:{t}" for t in c.token_ids],
            "token_logprobs": [each] * k,
            "top_logprobs": None,
            "text_offset": None,
        }
    return out


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise _BadRequest("the request body is not JSON") from exc
    if not isinstance(body, dict):
        raise _BadRequest("the request body must be a JSON object")
    return body


async def _guarded(request: web.Request, handle: Callable[[dict[str, Any]], Any]) -> web.Response:
    """Shared error mapping. CancelledError (the client went away) propagates untouched."""
    try:
        return web.json_response(await handle(await _body(request)))
    except _BadRequest as exc:
        return _error(400, str(exc), "BadRequestError")
    except ValueError as exc:  # SamplingParams validation
        return _error(400, str(exc), "BadRequestError")
    except PromptTooLongError as exc:
        return _error(400, f"This model's maximum context length is exceeded: {exc}", "PromptTooLongError")
    except NoValueHeadError as exc:
        return _error(400, str(exc), "NoValueHeadError")
    except EngineError as exc:
        return _error(500, str(exc), "EngineError")
    except Exception as exc:  # a bug: answer 500 rather than drop the connection
        return _error(500, f"{type(exc).__name__}: {exc}", "InternalServerError")


async def _completions(request: web.Request) -> web.Response:
    engine, model = request.app[_ENGINE], request.app[_MODEL]

    async def handle(body: dict[str, Any]) -> dict[str, Any]:
        prompts = _one_prompt(body, "prompt")
        if len(prompts) != 1:
            raise _BadRequest("this server takes one prompt per request (use n for samples)")
        params = _params(body)
        completions = await engine.generate(prompts[0], params)
        want_logprobs = body.get("logprobs") is not None
        gen_tokens = sum(len(c.token_ids) for c in completions)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [_choice(i, c, want_logprobs) for i, c in enumerate(completions)],
            "usage": {"prompt_tokens": None, "completion_tokens": gen_tokens, "total_tokens": None},
        }

    return await _guarded(request, handle)


async def _classify(request: web.Request) -> web.Response:
    engine, model = request.app[_ENGINE], request.app[_MODEL]
    pooling = request.path.endswith("/pooling")

    async def handle(body: dict[str, Any]) -> dict[str, Any]:
        prompts = _one_prompt(body, "input")
        values = await engine.value(prompts)
        data = [
            {"index": i, "object": "pooling", "data": [v]} if pooling
            else {"index": i, "label": "value", "probs": [v], "num_classes": 1}
            for i, v in enumerate(values)
        ]
        return {"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                "model": model, "data": data}

    return await _guarded(request, handle)


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [
        {"id": request.app[_MODEL], "object": "model", "owned_by": "alphamath"}]})


def build_app(engine: Engine, *, model_name: str = "alphamath") -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_ENGINE] = engine
    app[_MODEL] = model_name
    app.router.add_post("/v1/completions", _completions)
    for path in ("/classify", "/v1/classify", "/pooling"):
        app.router.add_post(path, _classify)
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    return app


@dataclass(frozen=True)
class RunningServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@asynccontextmanager
async def start_server(engine: Engine, host: str = "127.0.0.1", port: int = 0, *,
                       model_name: str = "alphamath") -> AsyncIterator[RunningServer]:
    """Serve `engine` until the block exits (the engine is NOT closed: its owner closes it)."""
    runner = web.AppRunner(build_app(engine, model_name=model_name), handler_cancellation=True,
                           access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise EngineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        sockets = [s for s in (runner.addresses or [])]
        bound = sockets[0][1] if sockets else port
        yield RunningServer(host, int(bound))
    finally:
        await runner.cleanup()


async def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8000, *,
                model_name: str = "alphamath", ready: Callable[[RunningServer], None] | None = None) -> None:
    """Serve `engine` until cancelled."""
    async with start_server(engine, host, port, model_name=model_name) as server:
        if ready is not None:
            ready(server)
        await asyncio.Event().wait()


def run_server(open_engine: Callable[[], AbstractAsyncContextManager[Engine]], host: str = "127.0.0.1",
               port: int = 8000, *, model_name: str = "alphamath",
               ready: Callable[[RunningServer], None] | None = None) -> None:
    """Blocking entry point for `cli.py serve`: open the engine, serve until Ctrl-C, close it.

    `open_engine` is a zero-argument factory of an async context manager yielding the engine,
    e.g. `lambda: runtime.engines.open_engine(config.engine, seed=config.strategy.seed)`.
    """

    async def main() -> None:
        async with open_engine() as engine:
            await serve(engine, host, port, model_name=model_name, ready=ready)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
