"""`HFEngine`: the `Engine` protocol over a transformers causal LM (+ optional value head).

    engine = await HFEngine.load("path/to/model", device="cpu")
    completions = await engine.generate(prompt, SamplingParams(n=5, temperature=0.6, stop=("</code>",)))
    values = await engine.value([prompt_a, prompt_b])
    await engine.aclose()

How it runs:
- All torch work happens on ONE dedicated worker thread (a single-thread executor): the event
  loop never blocks and torch calls never overlap. Loading runs there too.
- Requests in flight together are packed by a `MicroBatcher` into one left-padded batch. A request
  with `n` samples counts `n` rows toward `max_batch_size`; its prompt is tokenized and prefilled
  ONCE and the KV cache row is repeated `n` times.
- Decoding is a manual loop over a `DynamicCache` with per-row temperature / top_p / stop strings /
  max_tokens; finished rows are dropped from the batch (and its cache) as they finish.
- No prefix caching: every batch prefills its prompts from scratch. That is fine for tests and
  small models; use the vLLM engine where sibling prompts sharing prefixes matter.
- `metrics()`: the running batch is the rows of each forward pass (the prefill and every decode
  step; rows leave as they finish), the same measure as vLLM's running requests per step.

Semantics (as vLLM's defaults):
- `text` is cut BEFORE the stop string that matched (`stop_reason` = that string, finish "stop");
  EOS gives finish "stop" with `stop_reason` None; `max_tokens` (or the model's context) gives
  "length". `token_ids` run up to and including the token that completed the stop string (or the
  EOS token), and `cumulative_logprob` covers exactly `token_ids`.
- `cumulative_logprob` sums log_softmax of the RAW logits at the sampled tokens — the model's
  unmodified distribution, before temperature and top_p — because MCTS priors are
  `exp(cumulative_logprob / len(token_ids))` of the policy itself.
- Seeds: a request with `params.seed` samples from its own `torch.Generator` seeded with
  `prompt_seed(params.seed, prompt)`, so its samples do not depend on what else is in the batch
  and different prompts are independent draws; other requests share the engine's generator,
  seeded from `seed`.
- `value(prompts)` = tanh(w · h_last + b), `h_last` the final-layer hidden state at each prompt's
  last token. Without a value head it raises NoValueHeadError. With `value_model` the value is a
  second checkpoint's (its trunk and head; same worker thread, so the two never run at once) and
  the policy's own head, if any, is not loaded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from runtime.engine import Completion, EngineMetrics, SamplingParams
from runtime.engines.batcher import MicroBatcher
from runtime.engines.model_dir import missing_local_model
from runtime.engines.value_head import VALUE_HEAD_FILES, load_value_head, missing_value_head
from runtime.errors import EngineError, PromptTooLongError

__all__ = ["EngineStats", "HFEngine"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass
class EngineStats:
    """Counters, updated by the worker thread (plain ints: reads from the loop are safe)."""

    generate_batches: int = 0  # batched prefill+decode runs
    generate_requests: int = 0
    generate_rows: int = 0
    prompt_tokens: int = 0  # prefilled (once per request, not per row)
    generated_tokens: int = 0
    decode_steps: int = 0  # forward passes of the decode loop
    value_batches: int = 0
    value_prompts: int = 0


@dataclass(frozen=True)
class _GenRequest:
    prompt: str
    params: SamplingParams


@dataclass
class _Row:
    """One sample being decoded."""

    request: int
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)
    logprob: float = 0.0
    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | None = None
    checked: int = 0  # text length already searched for stop strings


class _Worker:
    """The torch side. Every method runs on the engine's single worker thread."""

    def __init__(self, model: Any, tokenizer: Any, head: torch.nn.Linear | None, device: torch.device, seed: int):
        self.model = model
        self.tokenizer = tokenizer
        self.head = head
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.stats = EngineStats()
        self.stopping = threading.Event()  # set by aclose(): abort a running decode loop
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        self.max_len = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)

    # ---- shared helpers ------------------------------------------------------------------

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """input_ids, attention_mask, position_ids for left-padded `seqs` (positions start at 0
        at each sequence's first real token, as transformers' generate() does)."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                mask[i, width - len(s) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    def _encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    # ---- generation ----------------------------------------------------------------------

    def generate_batch(self, reqs: Sequence[_GenRequest]) -> list[list[Completion] | BaseException]:
        results: list[list[Completion] | BaseException] = [EngineError("not run")] * len(reqs)
        live: list[int] = []
        prompts: list[list[int]] = []
        for i, req in enumerate(reqs):
            ids = self._encode(req.prompt)
            if not ids:
                results[i] = EngineError("cannot generate from an empty prompt")
            elif len(ids) >= self.max_len:
                results[i] = PromptTooLongError(
                    f"prompt is {len(ids)} tokens, the model's context is {self.max_len}"
                )
            else:
                live.append(i)
                prompts.append(ids)
        if live:
            with torch.inference_mode():
                rows = self._decode([reqs[i].params for i in live], prompts)
            for j, i in enumerate(live):
                results[i] = [
                    Completion(
                        text=r.text,
                        token_ids=tuple(r.tokens),
                        cumulative_logprob=r.logprob,
                        finish_reason=r.finish_reason or "length",
                        stop_reason=r.stop_reason,
                    )
                    for r in rows
                    if r.request == j
                ]
        return results

    def _decode(self, params: list[SamplingParams], prompts: list[list[int]]) -> list[_Row]:
        from transformers import DynamicCache

        stats = self.stats
        stats.generate_batches += 1
        stats.generate_requests += len(params)
        stats.prompt_tokens += sum(map(len, prompts))
        # 1) prefill each prompt once, then repeat its cache row n times
        ids, mask, pos = self._left_pad(prompts)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        expand = torch.tensor([r for r, p in enumerate(params) for _ in range(p.n)], device=self.device)
        cache.batch_select_indices(expand)
        logits = out.logits[:, -1, :].float()[expand]
        mask, last_pos = mask[expand], pos[expand, -1]
        rows = [_Row(request=r, params=p) for r, p in enumerate(params) for _ in range(p.n)]
        stats.generate_rows += len(rows)
        prompt_len = [len(prompts[r.request]) for r in rows]
        active = list(range(len(rows)))  # indices into `rows`, aligned with the batch dimension
        generators = [
            torch.Generator(device=self.device).manual_seed(p.seed) if p.seed is not None else None
            for p in params
        ]
        while active:
            if self.stopping.is_set():
                raise EngineError("engine closed during generation")
            # 2) choose the next token of every active row
            batch_rows = [rows[i] for i in active]
            tokens, logps = self._sample(logits, batch_rows, generators)
            # 3) record it, check EOS / stop strings / length
            keep: list[int] = []
            for b, i in enumerate(active):
                row = rows[i]
                tok = int(tokens[b])
                row.tokens.append(tok)
                row.logprob += float(logps[b])
                self._check_finished(row, tok, prompt_len[i])
                if row.finish_reason is None:
                    keep.append(b)
            stats.generated_tokens += len(active)
            if not keep:
                break
            # 4) drop finished rows from the batch and the cache, then one decode step
            if len(keep) < len(active):
                sel = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(sel)
                mask, last_pos, tokens = mask[sel], last_pos[sel], tokens[sel]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            last_pos = last_pos + 1
            out = self.model(input_ids=tokens.view(-1, 1), attention_mask=mask,
                             position_ids=last_pos.view(-1, 1), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logits = out.logits[:, -1, :].float()
            stats.decode_steps += 1
        return rows

    def _sample(
        self, logits: torch.Tensor, rows: list[_Row], generators: list[torch.Generator | None]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next token per row (argmax where temperature is 0) and its RAW log-probability."""
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        sampled = [b for b, r in enumerate(rows) if r.params.temperature > 0]
        if sampled:
            idx = torch.tensor(sampled, device=logits.device)
            temp = torch.tensor([rows[b].params.temperature for b in sampled], device=logits.device)
            top_p = torch.tensor([rows[b].params.top_p for b in sampled], device=logits.device)
            probs = torch.softmax(logits[idx] / temp[:, None], dim=-1)
            sorted_p, order = probs.sort(dim=-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= top_p[:, None], 0.0)
            # one draw per request group, from the request's generator or the engine's
            groups: dict[int, list[int]] = {}
            for k, b in enumerate(sampled):
                groups.setdefault(rows[b].request, []).append(k)
            for req, ks in groups.items():
                gen = generators[req] or self.generator
                kk = torch.tensor(ks, device=logits.device)
                pick = torch.multinomial(sorted_p[kk], 1, generator=gen).squeeze(1)
                chosen = order[kk].gather(1, pick[:, None]).squeeze(1)
                tokens[idx[kk]] = chosen
        return tokens, logprobs.gather(1, tokens[:, None]).squeeze(1)

    def _check_finished(self, row: _Row, tok: int, prompt_len: int) -> None:
        decode = self.tokenizer.decode
        if tok in self.eos_ids:
            row.finish_reason = "stop"
            row.text = decode(row.tokens[:-1], skip_special_tokens=True)
            return
        stops = tuple(s for s in row.params.stop if s)
        if stops:  # decoded after every token: a stop string may span tokens
            text = decode(row.tokens, skip_special_tokens=True)
            # only the tail can hold a new match (a few chars of slack for multi-byte merges)
            start = max(0, row.checked - max(map(len, stops)) - 4)
            hits = [(p, k) for k, s in enumerate(stops) if (p := text.find(s, start)) >= 0]
            row.checked = len(text)
            if hits:
                p, k = min(hits)  # earliest match; ties go to the first listed stop
                row.text, row.stop_reason, row.finish_reason = text[:p], stops[k], "stop"
                return
        if len(row.tokens) >= row.params.max_tokens or prompt_len + len(row.tokens) >= self.max_len:
            row.finish_reason = "length"
            row.text = decode(row.tokens, skip_special_tokens=True)

    # ---- value ---------------------------------------------------------------------------

    def value_batch(self, groups: Sequence[Sequence[str]]) -> list[list[float] | BaseException]:
        head = self.head
        assert head is not None
        flat = [self._encode(p) for g in groups for p in g]
        results: list[list[float] | BaseException] = []
        bad = {n for n, ids in enumerate(flat) if not ids or len(ids) > self.max_len}
        good = [n for n in range(len(flat)) if n not in bad]
        values: dict[int, float] = {}
        if good:
            self.stats.value_batches += 1
            self.stats.value_prompts += len(good)
            ids, mask, pos = self._left_pad([flat[n] for n in good])
            with torch.inference_mode():
                body = getattr(self.model, self.model.base_model_prefix)
                hidden = body(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                h_last = hidden.last_hidden_state[:, -1, :].float()  # left padded: last = last token
                v = torch.tanh(head(h_last)).squeeze(-1).tolist()
            values = dict(zip(good, v, strict=True))
        n = 0
        for g in groups:
            idx = list(range(n, n + len(g)))
            n += len(g)
            if any(not flat[i] for i in idx):
                results.append(EngineError("cannot compute the value of an empty prompt"))
            elif any(i in bad for i in idx):
                results.append(PromptTooLongError(
                    f"value prompt is longer than the model's context ({self.max_len} tokens)"))
            else:
                results.append([values[i] for i in idx])
        return results


class HFEngine:
    """A transformers model behind the `Engine` protocol; build it with `await HFEngine.load(...)`."""

    def __init__(
        self,
        *,
        name: str,
        worker: _Worker,
        executor: ThreadPoolExecutor,
        max_batch_size: int,
        batch_wait_ms: float,
        value_worker: _Worker | None = None,
        value_name: str | None = None,
    ) -> None:
        self.name = name
        self._worker = worker
        self._value_worker = value_worker or worker
        self._value_name = value_name or name
        self._executor = executor
        self._closed = False
        loop_executor = executor  # the closures below must not reach `self`
        value_worker = self._value_worker

        # The batchers' process functions close over the worker and executor, not over `self`.
        async def run_generate(batch: list[_GenRequest]) -> list[list[Completion] | BaseException]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(loop_executor, worker.generate_batch, batch)

        async def run_value(batch: list[list[str]]) -> list[list[float] | BaseException]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(loop_executor, value_worker.value_batch, batch)

        self._gen_batcher: MicroBatcher[_GenRequest, list[Completion]] = MicroBatcher(
            run_generate, max_batch=max_batch_size, wait_ms=batch_wait_ms, name=f"{name} generate"
        )
        self._value_batcher: MicroBatcher[list[str], list[float]] = MicroBatcher(
            run_value, max_batch=max_batch_size, wait_ms=batch_wait_ms, name=f"{name} value"
        )

    # ---- construction --------------------------------------------------------------------

    @classmethod
    async def load(
        cls,
        model: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch_size: int = 32,
        batch_wait_ms: float = 5.0,
        seed: int = 0,
        value_head: bool | None = None,
        num_threads: int | None = None,
        value_model: str | Path | None = None,
    ) -> HFEngine:
        """Load `model` (a local directory or a hub id) on the engine's own worker thread.

        `value_head`: None loads the head if the checkpoint has one; True requires it; False
        ignores it. `value_model`: a second checkpoint (with a value head, which it must have) that
        answers `value()` instead of `model`'s head. `num_threads` sets torch's intra-op threads
        (process-wide) if given. Any failure raises EngineError with one line naming the model.
        """
        name = str(model)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-engine")
        loop = asyncio.get_running_loop()
        try:
            worker = await loop.run_in_executor(
                executor, _load_worker, name, device, dtype, seed,
                False if value_model is not None else value_head, num_threads
            )
            value_worker = None
            if value_model is not None:
                value_worker = await loop.run_in_executor(
                    executor, _load_worker, str(value_model), device, dtype, seed, True, num_threads
                )
                value_worker.stats = worker.stats  # one engine, one set of counts
        except BaseException:
            executor.shutdown(wait=False, cancel_futures=True)
            raise
        return cls(name=name, worker=worker, executor=executor, max_batch_size=max_batch_size,
                   batch_wait_ms=batch_wait_ms, value_worker=value_worker,
                   value_name=None if value_model is None else str(value_model))

    # ---- the Engine protocol -------------------------------------------------------------

    @property
    def stats(self) -> EngineStats:
        return self._worker.stats

    def metrics(self) -> EngineMetrics:
        """Rows per forward pass of `generate` (value batches are not counted); no prefix cache."""
        s = self._worker.stats
        # every forward pass, prefill or decode step, samples one token for each of its rows
        return EngineMetrics(steps=s.generate_batches + s.decode_steps, batched_rows=s.generated_tokens)

    @property
    def has_value_head(self) -> bool:
        return self._value_worker.head is not None

    @property
    def tokenizer(self) -> Any:
        return self._worker.tokenizer

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        if self._closed:
            raise EngineError(f"engine for {self.name!r} is closed")
        request = _GenRequest(prompt, params.for_prompt(prompt))
        return await self._gen_batcher.submit(request, weight=params.n)

    async def value(self, prompts: Sequence[str]) -> list[float]:
        if self._closed:
            raise EngineError(f"engine for {self.name!r} is closed")
        if self._value_worker.head is None:
            raise missing_value_head(self._value_name)
        prompts = list(prompts)
        if not prompts:
            return []
        return await self._value_batcher.submit(prompts, weight=len(prompts))

    async def aclose(self) -> None:
        """Fail pending requests with EngineError, stop a running batch, end the worker thread."""
        if self._closed:
            return
        self._closed = True
        self._worker.stopping.set()
        await self._gen_batcher.aclose()
        await self._value_batcher.aclose()
        # wait for the worker to notice `stopping` without blocking the loop
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def __aenter__(self) -> HFEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _load_worker(
    name: str, device: str, dtype: str, seed: int, value_head: bool | None, num_threads: int | None
) -> _Worker:
    """Runs on the worker thread: model, tokenizer and value head, or one-line EngineError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if num_threads:
        torch.set_num_threads(num_threads)
    path = Path(name).expanduser()
    local = path.is_dir()
    if missing := missing_local_model(name):
        raise EngineError(missing)
    if dtype not in _DTYPES and dtype != "auto":
        raise EngineError(f"cannot load model {name!r}: unknown dtype {dtype!r} (use one of {sorted(_DTYPES)})")
    try:
        dev = torch.device(device)
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=_DTYPES.get(dtype, "auto"))
        model.to(dev).eval()
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"cannot load model {name!r}: {msg}") from exc
    head = None
    if value_head is not False:
        hidden = model.config.get_text_config().hidden_size
        head_dir = path if local else _hub_head_dir(name)
        head = load_value_head(head_dir, hidden) if head_dir is not None else None
        if head is None and value_head:
            raise missing_value_head(name)
        if head is not None:
            head = head.to(dev)
    return _Worker(model, tokenizer, head, dev, seed)


def _hub_head_dir(repo_id: str) -> Path | None:
    """The snapshot directory holding a hub model's value-head file, if it has one."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    for fname in VALUE_HEAD_FILES:
        try:
            return Path(hf_hub_download(repo_id, fname)).parent
        except Exception:  # absent, offline, gated: no head
            continue
    return None
