"""`OpenAIEngine`: the `Engine` protocol over OpenAI-compatible servers (vLLM, SGLang, `cli.py serve`).

    engine = OpenAIEngine(["http://gpu0:8000", "http://gpu1:8000"], "AlphaMath-7B")
    completions = await engine.generate(prompt, SamplingParams(n=5, temperature=0.6, stop=("</code>",)))
    values = await engine.value([prompt])          # POST {value_endpoint}, default /classify
    await engine.aclose()

Requests
- `generate` POSTs `/v1/completions` with `prompt, n, temperature, top_p, max_tokens, stop,
  logprobs=1`, `seed` = `prompt_seed(seed, prompt)`, plus vLLM's `return_token_ids` /
  `return_tokens_as_token_ids` (other servers ignore unknown fields). `cumulative_logprob` is a
  choice's `cumulative_logprob` field when the server sends one (ours does), else the sum of
  `logprobs.token_logprobs`. `token_ids` come from the choice's `token_ids`, else from
  `"token_id:N"` tokens; a server that sends neither gets one placeholder id (-1) per token so
  that `len(token_ids)` (the prior's length normaliser) holds.
- `value` POSTs `{"model", "input": [prompts]}` to `value_endpoint` (vLLM's `/classify`, our
  server's too; `/pooling` also parses) and reads `data[i].probs[0]` (or `data[i].data`). The
  server must apply tanh itself (vLLM: `sbert_ce_default_activation_function` = Tanh, DESIGN.md).

Routing
- The Engine protocol carries no tree id, so the affinity key is derived from the prompt by
  `affinity_key(prompt)` (default `default_affinity_key`): the `<question> … </question>` span
  (react_sft), else the text after the LAST "Question: " (react: the demonstrations before it are
  sampled per prompt), else the first 256 characters. Every request of one tree therefore has
  the same key. A key seen before goes to the replica it is pinned to (prefix caches are per
  replica); a new key goes to the least-loaded replica (rows = sum of `n` in flight, ties to the
  replica with fewer pinned trees). Pins are an LRU of `max_pins` keys.
- A connection error marks the replica down for `down_for_s`; the retry re-pins the key to a
  live replica. A 5xx is retried on the same replica. Backoff: `backoff_s * 2**attempt`.

Errors (one line each, never a hang)
- Connection errors / 5xx after `max_retries` retries → EngineError naming the URL; when every
  attempt failed to connect and every replica is marked down, EngineUnavailableError, which is
  fatal: `eval` stops with that line (rows so far kept) rather than fail each problem in turn.
- One attempt longer than `timeout_s` → EngineError (not retried: the server may still be busy
  with it). Worst case per call: (max_retries + 1) × timeout_s plus the backoffs.
- 4xx → EngineError with the server's message; a context-length 400 → PromptTooLongError, except
  vLLM's "prompt + max_tokens > context" when the prompt itself fits: then retried once with
  `max_tokens` clamped to what is left (what HFEngine does: it stops with finish "length").
- A cancelled caller closes its HTTP connection (aiohttp aborts it); the server sees the client go.

Metrics: no `metrics()` (the run summary shows no running batch or prefix-cache hit rate). A
server's batch and cache counters cover every client of every replica, not this run; read them
from the servers (vLLM: `/metrics`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from runtime.engine import Completion, SamplingParams
from runtime.errors import EngineError, EngineUnavailableError, NoValueHeadError, PromptTooLongError

__all__ = ["OpenAIEngine", "default_affinity_key"]

_Q_SPAN = re.compile(r"<question>.*?</question>", re.S)
_CONTEXT_HINTS = ("context length", "context window", "maximum context", "too long", "prompttoolong")
_MAX_CTX = re.compile(r"maximum context length is (\d+)")
_PROMPT_LEN = re.compile(r"(\d+) in the messages|has (\d+) input tokens|(\d+) in the prompt")


def default_affinity_key(prompt: str, width: int = 256) -> str:
    """A key constant across one tree's prompts: the question, found as described above."""
    m = _Q_SPAN.search(prompt)
    if m:
        return m.group(0)
    i = prompt.rfind("Question: ")
    if i >= 0:
        return prompt[i : i + width].split("\n\n", 1)[0]
    return prompt[:width]


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_message(body: str) -> tuple[str, str]:
    """(message, error type) from an OpenAI-style error body ({"error": {...}} or vLLM's flat one)."""
    try:
        data = json.loads(body)
    except ValueError:
        return _one_line(body) or "(empty body)", ""
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return _one_line(err.get("message") or body), str(err.get("type") or "")
        if isinstance(err, str):
            return _one_line(err), ""
    return _one_line(body), ""


class _Retryable(Exception):
    def __init__(self, message: str, *, connection: bool) -> None:
        super().__init__(message)
        self.connection = connection


class _Router:
    """Replica choice: pinned keys, least-loaded for new keys, down-marking. Loop-thread only."""

    def __init__(self, n: int, max_pins: int, down_for_s: float) -> None:
        self.load = [0] * n
        self.pinned_count = [0] * n
        self.requests = [0] * n
        self.down_until = [0.0] * n
        self.pins: OrderedDict[str, int] = OrderedDict()
        self.max_pins = max_pins
        self.down_for_s = down_for_s

    def _live(self) -> list[int]:
        now = time.monotonic()
        live = [i for i, t in enumerate(self.down_until) if t <= now]
        return live or list(range(len(self.load)))

    def choose(self, key: str) -> int:
        live = self._live()
        i = self.pins.get(key)
        if i is not None and i in live:
            self.pins.move_to_end(key)
            return i
        if i is not None:
            self.pinned_count[i] -= 1
        j = min(live, key=lambda r: (self.load[r], self.pinned_count[r], r))
        self.pins[key] = j
        self.pins.move_to_end(key)
        self.pinned_count[j] += 1
        while len(self.pins) > self.max_pins:
            _, old = self.pins.popitem(last=False)
            self.pinned_count[old] -= 1
        return j

    def mark_down(self, i: int) -> None:
        self.down_until[i] = time.monotonic() + self.down_for_s

    def all_down(self) -> bool:
        now = time.monotonic()
        return all(t > now for t in self.down_until)


class OpenAIEngine:
    """An `Engine` over one or more OpenAI-compatible servers; see the module docstring."""

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        *,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        value_endpoint: str = "/classify",
        value_model: str | None = None,
        api_key: str | None = None,
        affinity_key: Callable[[str], str] = default_affinity_key,
        max_connections: int = 1024,
        max_pins: int = 100_000,
        down_for_s: float = 5.0,
    ) -> None:
        urls = [u.rstrip("/") for u in base_urls]
        if not urls:
            raise EngineError("openai engine: no base URL given")
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise EngineError(f"openai engine: base URL {u!r} must start with http:// or https://")
        if timeout_s <= 0 or max_retries < 0 or backoff_s < 0:
            raise EngineError("openai engine: timeout_s must be > 0, max_retries and backoff_s >= 0")
        # "/v1" at the end of a base URL is accepted (OpenAI SDK style) and dropped
        self.base_urls = [u[:-3] if u.endswith("/v1") else u for u in urls]
        self.model = model
        self.value_model = value_model or model
        self.timeout_s = timeout_s
        self.connect_timeout_s = min(connect_timeout_s, timeout_s)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.value_endpoint = "/" + value_endpoint.lstrip("/")
        self.affinity_key = affinity_key
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._max_connections = max_connections
        self._router = _Router(len(self.base_urls), max_pins, down_for_s)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    # ---- bookkeeping, for tests and logs ---------------------------------------------------

    @property
    def in_flight(self) -> list[int]:
        """Rows (sum of `n`) in flight per replica."""
        return list(self._router.load)

    @property
    def requests_per_replica(self) -> list[int]:
        """HTTP attempts sent to each replica so far."""
        return list(self._router.requests)

    def replica_of(self, prompt: str) -> int | None:
        """The replica `prompt`'s tree is pinned to, if any."""
        return self._router.pins.get(self.affinity_key(prompt))

    # ---- the Engine protocol -----------------------------------------------------------------

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "logprobs": 1,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            # A stock vLLM server would give every prompt of one seed the same noise.
            payload["seed"] = params.for_prompt(prompt).seed
        try:
            data = await self._post("/v1/completions", payload, self.affinity_key(prompt), params.n)
        except PromptTooLongError as exc:
            room = _room_left(str(exc))
            if room is None or room < 1 or room >= params.max_tokens:
                raise
            payload["max_tokens"] = room  # prompt fits; only prompt + max_tokens did not
            data = await self._post("/v1/completions", payload, self.affinity_key(prompt), params.n)
        return _parse_completions(data, params.n)

    async def value(self, prompts: Sequence[str]) -> list[float]:
        prompts = list(prompts)
        if not prompts:
            return []
        payload = {"model": self.value_model, "input": prompts}
        data = await self._post(self.value_endpoint, payload, self.affinity_key(prompts[0]), len(prompts),
                                value=True)
        return _parse_values(data, len(prompts))

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> OpenAIEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- HTTP --------------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise EngineError(f"openai engine for {self.model!r} is closed")
        if self._session is None:  # created on first use: it needs the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                headers=self._headers,
            )
        return self._session

    async def _post(self, path: str, payload: dict[str, Any], key: str, rows: int, *,
                    value: bool = False) -> Any:
        session = self._get_session()
        router = self._router
        last = ""
        unreachable = True  # every attempt so far failed to connect
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            i = router.choose(key)
            url = self.base_urls[i] + path
            router.load[i] += rows
            router.requests[i] += 1
            try:
                return await self._attempt(session, url, payload, value)
            except _Retryable as exc:
                last = str(exc)
                unreachable &= exc.connection
                if exc.connection:
                    router.mark_down(i)
            finally:
                router.load[i] -= rows
        message = f"{last} (gave up after {self.max_retries + 1} attempts)"
        if unreachable and router.all_down():
            raise EngineUnavailableError(message)
        raise EngineError(message)

    async def _attempt(self, session: aiohttp.ClientSession, url: str, payload: dict[str, Any],
                       value: bool) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=self.connect_timeout_s)
        try:
            async with session.post(url, json=payload, timeout=timeout) as resp:
                status = resp.status
                body = await resp.text()
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                aiohttp.ClientPayloadError, aiohttp.ServerFingerprintMismatch) as exc:
            raise _Retryable(f"cannot reach {url}: {_one_line(str(exc) or type(exc).__name__)}",
                             connection=True) from exc
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError subclasses
            if isinstance(exc, aiohttp.ConnectionTimeoutError):
                raise _Retryable(f"cannot reach {url}: connect timed out after "
                                 f"{self.connect_timeout_s:g} s", connection=True) from exc
            raise EngineError(f"{url} did not answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise EngineError(f"request to {url} failed: {_one_line(str(exc) or type(exc).__name__)}") from exc
        if status >= 500:
            msg, _ = _server_message(body)
            raise _Retryable(f"{url} answered {status}: {msg}", connection=False)
        if status >= 400:
            msg, kind = _server_message(body)
            low = (msg + " " + kind).lower()
            if kind == "NoValueHeadError" or (value and status in (404, 405)):
                raise NoValueHeadError(f"{url}: no value model behind this endpoint ({status}: {msg})")
            if any(h in low for h in _CONTEXT_HINTS):
                raise PromptTooLongError(f"{url}: prompt too long for the model's context: {msg}")
            raise EngineError(f"{url} rejected the request ({status}): {msg}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise EngineError(f"{url} answered {status} with a body that is not JSON: "
                              f"{_one_line(body, 120)}") from exc


def _room_left(message: str) -> int | None:
    """max_tokens that still fit, from vLLM's context-length message, if it says so."""
    ctx, prompt = _MAX_CTX.search(message), _PROMPT_LEN.search(message)
    if not ctx or not prompt:
        return None
    used = int(next(g for g in prompt.groups() if g))
    return int(ctx.group(1)) - used


def _parse_completions(data: Any, n: int) -> list[Completion]:
    try:
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        out = [_parse_choice(c) for c in choices]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"malformed /v1/completions answer: {type(exc).__name__}: {_one_line(str(exc), 120)}") from exc
    if len(out) != n:
        raise EngineError(f"server returned {len(out)} completions, asked for {n}")
    return out


def _parse_choice(c: dict[str, Any]) -> Completion:
    lp = c.get("logprobs") or {}
    token_logprobs = [x for x in (lp.get("token_logprobs") or []) if x is not None]
    ids = c.get("token_ids")
    if ids is None:
        tokens = lp.get("tokens") or []
        if tokens and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
            ids = [int(t[len("token_id:"):]) for t in tokens]
        else:
            ids = [-1] * len(lp.get("token_logprobs") or tokens)
    cum = c.get("cumulative_logprob")
    if cum is None and token_logprobs:
        cum = float(sum(token_logprobs))
    stop_reason = c.get("stop_reason")
    return Completion(
        text=str(c["text"]),
        token_ids=tuple(int(t) for t in ids),
        cumulative_logprob=None if cum is None else float(cum),
        finish_reason=str(c.get("finish_reason") or "stop"),
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
    )


def _parse_values(data: Any, n: int) -> list[float]:
    try:
        items = sorted(data["data"], key=lambda d: d.get("index", 0))
        values = []
        for d in items:
            x = d["probs"] if "probs" in d else d["data"]
            while isinstance(x, list):
                x = x[0]
            values.append(float(x))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise EngineError(f"malformed value answer: {type(exc).__name__}: {_one_line(str(exc), 120)}") from exc
    if len(values) != n:
        raise EngineError(f"server returned {len(values)} values, asked for {n}")
    return values
