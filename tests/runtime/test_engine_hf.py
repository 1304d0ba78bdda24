"""HFEngine on the tiny local model: decoding matches transformers, batching, logprobs, values."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
import torch

from runtime.engine import Engine, SamplingParams
from runtime.engines.hf import HFEngine
from runtime.engines.value_head import load_value_head, save_value_head
from runtime.errors import EngineError, NoValueHeadError
from tests.engine_prompts import CODE_STEP, Q1, Q2, Q3, other_value_model
from tests.loop_ticker import LoopTicker

STOPS = ("</code>", "</step>")


def reference_greedy(model_dir: Path, prompt: str, max_new_tokens: int, stop: str) -> tuple[str, list[int]]:
    """transformers' own greedy decoding, cut before `stop` (the engine's contract)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    text = tok.decode(new, skip_special_tokens=True)
    return text.split(stop)[0], new


async def _load(model_dir: Path, **kw) -> HFEngine:
    return await HFEngine.load(str(model_dir), **kw)


async def test_greedy_matches_transformers_generate(tiny_model_dir: Path) -> None:
    engine = await _load(tiny_model_dir)
    assert isinstance(engine, Engine)
    try:
        for prompt, stop in ((Q1, "</code>"), (Q2 + CODE_STEP, "</step>"), (Q3, "</code>")):
            params = SamplingParams(temperature=0.0, max_tokens=120, stop=(stop,))
            [got] = await engine.generate(prompt, params)
            [again] = await engine.generate(prompt, params)
            want_text, want_ids = reference_greedy(tiny_model_dir, prompt, 120, stop)
            assert got == again  # deterministic
            assert got.text == want_text
            assert list(got.token_ids) == want_ids[: len(got.token_ids)]
            assert got.finish_reason == "stop" and got.stop_reason == stop
    finally:
        await engine.aclose()


async def test_stop_strings_length_and_eos(tiny_model_dir: Path) -> None:
    async with await _load(tiny_model_dir) as engine:
        tok = engine.tokenizer
        # the earliest match wins; the text is cut before it, token_ids include its last token
        [c] = await engine.generate(Q1, SamplingParams(max_tokens=120, stop=("\n</code>", "</code>")))
        assert c.stop_reason == "\n</code>" and c.finish_reason == "stop"
        assert c.text.startswith("<step>\n<p>\n") and c.text.endswith("```")
        assert "</code>" not in c.text
        assert tok.decode(c.token_ids).endswith("</code>")
        assert not tok.decode(c.token_ids[:-1]).endswith("</code>")
        # max_tokens
        [c] = await engine.generate(Q1, SamplingParams(max_tokens=5))
        assert c.finish_reason == "length" and c.stop_reason is None and len(c.token_ids) == 5
        assert c.text == tok.decode(c.token_ids)
        # EOS: the answer step is followed by <|endoftext|> in training
        [c] = await engine.generate(Q2 + CODE_STEP, SamplingParams(max_tokens=200))
        assert c.finish_reason == "stop" and c.stop_reason is None
        assert c.token_ids[-1] == tok.eos_token_id
        assert c.text.endswith("</step>\n") and "<|endoftext|>" not in c.text


async def test_seeded_sampling_is_reproducible_in_any_batch(tiny_model_dir: Path) -> None:
    async with await _load(tiny_model_dir, batch_wait_ms=30) as engine:
        params = SamplingParams(temperature=1.0, n=3, seed=1234, max_tokens=60, stop=STOPS)
        alone = await engine.generate(Q1, params)
        assert len(alone) == 3
        noise = SamplingParams(temperature=1.0, n=2, max_tokens=40)
        batched, *_ = await asyncio.gather(
            engine.generate(Q1, params), engine.generate(Q2, noise), engine.generate(Q3, noise)
        )
        assert [c.text for c in batched] == [c.text for c in alone]
        assert [c.token_ids for c in batched] == [c.token_ids for c in alone]
        other_seed = await engine.generate(Q1, SamplingParams(temperature=1.0, n=3, seed=99, max_tokens=60))
        assert [c.token_ids for c in other_seed] != [c.token_ids for c in alone]


async def test_cumulative_logprob_is_the_raw_distribution(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    async with await _load(tiny_model_dir) as engine:
        prompt_ids = engine.tokenizer(Q1)["input_ids"]
        # temperature 0.7 and top_p 0.9 shape the sampling, not the reported logprob
        params = SamplingParams(temperature=0.7, top_p=0.9, n=3, seed=5, max_tokens=40, stop=("</code>",))
        greedy = SamplingParams(max_tokens=40, stop=("</code>",))
        samples = [*await engine.generate(Q1, params), *await engine.generate(Q1, greedy)]
    for c in samples:
        ids = torch.tensor([prompt_ids + list(c.token_ids)])
        with torch.inference_mode():
            logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        n0 = len(prompt_ids)
        want = sum(float(logp[n0 - 1 + k, t]) for k, t in enumerate(c.token_ids))
        assert c.cumulative_logprob == pytest.approx(want, abs=1e-4)


async def test_concurrent_requests_are_batched_with_the_same_results(tiny_model_dir: Path) -> None:
    prompts = [Q1, Q2, Q3, Q2 + CODE_STEP] * 2
    params = SamplingParams(max_tokens=60, stop=STOPS)
    async with await _load(tiny_model_dir, batch_wait_ms=50) as engine:
        alone = [(await engine.generate(p, params))[0].text for p in prompts]
        before = engine.stats.generate_batches
        together = await asyncio.gather(*(engine.generate(p, params) for p in prompts))
        assert engine.stats.generate_batches - before < len(prompts)
        assert [c[0].text for c in together] == alone


async def test_max_batch_size_counts_rows(tiny_model_dir: Path) -> None:
    async with await _load(tiny_model_dir, batch_wait_ms=50, max_batch_size=4) as engine:
        params = SamplingParams(temperature=1.0, n=3, max_tokens=8)
        outs = await asyncio.gather(*(engine.generate(Q1, params) for _ in range(3)))
        assert [len(o) for o in outs] == [3, 3, 3]
        assert engine.stats.generate_batches == 3  # 3 rows each, at most 4 rows a batch
        assert engine.stats.prompt_tokens == 3 * len(engine.tokenizer(Q1)["input_ids"])  # one prefill per request


async def test_metrics_count_rows_per_forward_pass(tiny_model_dir: Path) -> None:
    greedy = SamplingParams(max_tokens=8)  # the tiny model's greedy Q1 runs past 8 tokens
    async with await _load(tiny_model_dir, batch_wait_ms=50) as engine:
        before = engine.metrics()
        assert before.mean_running_batch is None and before.prefix_cache_hit_rate is None
        outs = await asyncio.gather(*(engine.generate(Q1, greedy) for _ in range(4)))
        assert all(c.finish_reason == "length" for [c] in outs)
        [alone] = await engine.generate(Q2, SamplingParams(max_tokens=8))
        m = engine.metrics()
    assert engine.stats.generate_batches == 2
    # one batch of 4 rows for 8 forward passes (prefill + 7 decode steps), then one row alone
    assert (m.steps, m.batched_rows) == (8 + len(alone.token_ids), 32 + len(alone.token_ids))
    assert 1 < m.mean_running_batch <= 4
    assert m.prefix_cache_queries is None and m.prefix_cache_hit_rate is None


async def test_value_is_tanh_of_the_head_at_the_last_token(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    head = load_value_head(tiny_model_dir, model.config.hidden_size)
    assert head is not None
    prompts = [Q1, Q2 + CODE_STEP, Q3 + "<step>\n"]
    async with await _load(tiny_model_dir, batch_wait_ms=30) as engine:
        batched = await engine.value(prompts)
        one_by_one = [(await engine.value([p]))[0] for p in prompts]
        concurrent = await asyncio.gather(*(engine.value([p]) for p in prompts))
        assert await engine.value([]) == []
        for p, v in zip(prompts, batched, strict=True):
            ids = engine.tokenizer(p, return_tensors="pt")["input_ids"]
            with torch.inference_mode():
                h = model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
                want = float(torch.tanh(head(h)))
            assert v == pytest.approx(want, abs=1e-5)
            assert -1.0 <= v <= 1.0
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert [c[0] for c in concurrent] == pytest.approx(one_by_one, abs=1e-5)


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "value_head.safetensors").unlink()
    return dst


async def test_no_value_head(tiny_model_dir: Path, tmp_path: Path) -> None:
    bare = _copy_model(tiny_model_dir, tmp_path / "bare")
    async with await _load(bare) as engine:
        assert not engine.has_value_head
        with pytest.raises(NoValueHeadError, match="has no value head .value_head.safetensors / value_head.pth"):
            await engine.value([Q1])
        [c] = await engine.generate(Q1, SamplingParams(max_tokens=3))  # generation still works
        assert len(c.token_ids) == 3
    with pytest.raises(NoValueHeadError):
        await _load(bare, value_head=True)
    async with await _load(tiny_model_dir, value_head=False) as engine:
        with pytest.raises(NoValueHeadError):
            await engine.value([Q1])


async def test_a_separate_value_model_answers_the_value_calls(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`value_model`: generation is the policy's, values are the other checkpoint's (its trunk and
    its head), and the policy's own head is not used."""
    critic = other_value_model(tiny_model_dir, tmp_path / "critic")
    bare = _copy_model(tiny_model_dir, tmp_path / "bare")
    prompts = [Q1, Q2 + CODE_STEP, Q3 + "<step>\n"]
    params = SamplingParams(max_tokens=12, stop=STOPS)
    async with await _load(critic) as alone:
        want = await alone.value(prompts)
    async with await _load(tiny_model_dir) as own:
        own_values = await own.value(prompts)
        policy_text = [c.text for c in await own.generate(Q1, params)]
    for policy in (tiny_model_dir, bare):
        async with await _load(policy, value_model=critic) as engine:
            assert engine.has_value_head
            assert await engine.value(prompts) == pytest.approx(want, abs=1e-5)
            assert [c.text for c in await engine.generate(Q1, params)] == policy_text
    assert want != pytest.approx(own_values, abs=1e-3)
    with pytest.raises(NoValueHeadError, match="bare"):
        await _load(tiny_model_dir, value_model=bare)
    with pytest.raises(EngineError, match="no such directory"):
        await _load(tiny_model_dir, value_model=tmp_path / "nowhere")


async def test_value_head_pth_is_read(tiny_model_dir: Path, tmp_path: Path) -> None:
    alpha = _copy_model(tiny_model_dir, tmp_path / "alpha")
    state = {"v_head.summary.weight": torch.full((1, 128), 0.01), "v_head.summary.bias": torch.tensor([0.3])}
    torch.save(state, alpha / "value_head.pth")
    head = load_value_head(alpha, 128)
    assert head is not None and float(head.bias) == pytest.approx(0.3)
    async with await _load(alpha) as engine:
        [v] = await engine.value([Q1])
    async with await _load(tiny_model_dir) as engine:
        [v_orig] = await engine.value([Q1])
    assert v != pytest.approx(v_orig)
    # round trip through save_value_head
    save_value_head(head, alpha)
    again = load_value_head(alpha, 128)  # .safetensors now wins
    assert again is not None and torch.equal(again.weight, head.weight)


async def test_value_head_shape_mismatch(tiny_model_dir: Path, tmp_path: Path) -> None:
    odd = _copy_model(tiny_model_dir, tmp_path / "odd")
    save_value_head(torch.nn.Linear(64, 1), odd)
    with pytest.raises(EngineError, match=r"weight \(1, 64\).*expected \(1, 128\)"):
        await _load(odd)


async def test_load_failure_is_one_line_engine_error(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(EngineError, match="cannot load model .*: no such directory") as info:
        await _load(missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "junk").mkdir()
    with pytest.raises(EngineError, match="cannot load model"):
        await _load(tmp_path / "junk")


async def test_event_loop_keeps_running_during_generate(tiny_model_dir: Path) -> None:
    async with await _load(tiny_model_dir) as engine:
        async with LoopTicker(0.001) as ticker:
            await engine.generate(Q1, SamplingParams(temperature=1.0, n=8, max_tokens=200, seed=0))
        assert ticker.ticks >= 20


async def test_cancel_one_caller_and_aclose_fail_cleanly(tiny_model_dir: Path) -> None:
    engine = await _load(tiny_model_dir, batch_wait_ms=30)
    params = SamplingParams(max_tokens=30, stop=STOPS)
    want = (await engine.generate(Q2, params))[0].text
    doomed = asyncio.ensure_future(engine.generate(Q1, params))
    kept = asyncio.ensure_future(engine.generate(Q2, params))
    await asyncio.sleep(0)
    doomed.cancel()
    assert (await kept)[0].text == want
    assert doomed.cancelled()
    # aclose: a long request in flight and one queued behind it both get EngineError
    long = SamplingParams(temperature=1.0, max_tokens=1000, n=32)
    running = asyncio.ensure_future(engine.generate(Q1, long))
    queued = asyncio.ensure_future(engine.generate(Q2, long))
    while engine.stats.generate_batches < 2:  # the long batch started
        await asyncio.sleep(0.001)
    await engine.aclose()
    for t in (running, queued):
        with pytest.raises(EngineError):
            await t
    with pytest.raises(EngineError, match="closed"):
        await engine.generate(Q1, params)


async def test_too_long_prompt_fails_only_that_request(tiny_model_dir: Path) -> None:
    async with await _load(tiny_model_dir, batch_wait_ms=30) as engine:
        long_prompt = Q1 * 60  # > 1024 tokens
        results = await asyncio.gather(
            engine.generate(long_prompt, SamplingParams(max_tokens=3)),
            engine.generate(Q1, SamplingParams(max_tokens=3)),
            return_exceptions=True,
        )
        assert isinstance(results[0], EngineError) and "context" in str(results[0])
        assert isinstance(results[1], list) and len(results[1][0].token_ids) == 3
