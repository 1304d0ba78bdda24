"""The miniature AlphaMath's model builder: whole-tag tokenizer, a loadable policy+value model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evals.synthetic import synth_arith_sft_rows
from runtime.engines.value_head import load_value_head
from training.mini import WHOLE_TOKENS, MiniSpec, build_base_model, corpus_texts, write_contrast_rows, write_sft_rows
from training.data import read_training_rows

SMALL = MiniSpec(layers=1, hidden=64, heads=2, intermediate=128, vocab_size=500, max_positions=512)


def test_base_model_is_a_complete_deterministic_checkpoint(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = build_base_model(tmp_path / "a", seed=1, spec=SMALL, corpus_size=300)
    b = build_base_model(tmp_path / "b", seed=1, spec=SMALL, corpus_size=300)
    tok = AutoTokenizer.from_pretrained(a)
    model = AutoModelForCausalLM.from_pretrained(a)
    assert json.loads((a / "config.json").read_text())["value_model"] is True
    assert load_value_head(a, SMALL.hidden) is not None
    spec = json.loads((a / "mini_spec.json").read_text())
    assert spec["parameters"] == model.num_parameters() and spec["layers"] == 1
    other = AutoModelForCausalLM.from_pretrained(b)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters(), strict=True))

    # Every format tag is one token and text round-trips exactly (code is parsed from it).
    for tag in WHOLE_TOKENS:
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    texts = corpus_texts(synth_arith_sft_rows("test", 20, 0, level="synth-arith-hard"))
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert len(ids) < 0.8 * len(tok.tokenize(text.replace("<", "< ")))  # tags really merged
        assert len(ids) < SMALL.max_positions


def test_sft_rows_are_correct_training_rows(tmp_path: Path) -> None:
    rows = read_training_rows(write_sft_rows(tmp_path / "sft.jsonl", n=30, seed=2))
    assert len(rows) == 30 and all(r.correct and all(s.q == 1.0 for s in r.steps) for r in rows)
    assert all(r.steps[-1].text.count("Final Answer:") == 1 for r in rows)


def test_contrast_rows_round_trip_with_value_targets(tmp_path: Path) -> None:
    """What `cli.py train` reads back: per problem one correct row and three flawed ones whose
    last step (the wrong answer) has target -1."""
    rows = read_training_rows(write_contrast_rows(tmp_path / "contrast.jsonl", n=10, seed=2))
    assert len(rows) == 40 and sum(r.correct for r in rows) == 10
    assert all(r.steps[-1].q == (1.0 if r.correct else -1.0) for r in rows)


def test_release_is_float16_and_serves_like_the_source(tmp_path: Path) -> None:
    import asyncio

    from safetensors import safe_open

    from runtime.engine import SamplingParams
    from runtime.engines.hf import HFEngine
    from training.mini import export_release

    src = build_base_model(tmp_path / "src", seed=0, spec=SMALL, corpus_size=200)
    dst = export_release(src, tmp_path / "release", card="# card\n")
    with safe_open(str(dst / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}
    assert (dst / "README.md").read_text() == "# card\n"
    assert json.loads((dst / "config.json").read_text())["value_model"] is True

    async def greedy_and_value(model: Path) -> tuple[str, float]:
        engine = await HFEngine.load(model)
        try:
            prompt = "<question> Tom has 5 apples. </question>\n"
            (out,) = await engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0.0))
            (value,) = await engine.value([prompt])
            return out.text, value
        finally:
            await engine.aclose()

    (text_a, value_a), (text_b, value_b) = (asyncio.run(greedy_and_value(m)) for m in (src, dst))
    assert abs(value_a - value_b) < 1e-2
    assert isinstance(text_b, str)  # float16 rounding may change a random model's argmax

    (src / "value_head.safetensors").unlink()
    with pytest.raises(ValueError, match="has no value head"):
        export_release(src, tmp_path / "nohead", card="")
