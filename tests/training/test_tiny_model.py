"""The tiny local model: format learned, tokenizer exact, value head present, cache and atomicity."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import torch

from training.tiny_model import MARKER, build_tiny_model, main, make_corpus, make_problem

# AlphaMath's code-step parse (ALPHAMATH.md §1.2): <code> then a fenced block ending the text.
CODE_RE = re.compile(r"<code>\s*```python\n(.*?)\n```\s*$", re.S)
ANSWER_RE = re.compile(r"Final Answer:\s*(.+?)\s*</p>", re.S)
# Out-of-template wording (GSM8K-like): the CLI smoke run feeds such questions to the tiny model.
REAL_STYLE = [
    "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
    "per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it take?",
]


def _unseen_questions(k: int) -> list[str]:
    seen = {doc.split(" </question>")[0].removeprefix("<question> ") for doc in make_corpus(4000, 0)}
    rng = random.Random(2024)
    out: list[str] = []
    while len(out) < k:
        q, _, _ = make_problem(rng)
        if q not in seen:
            out.append(q)
    return out


def _greedy(model, tok, prompt: str, max_new_tokens: int = 100) -> str:
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_greedy_output_on_unseen_questions_is_a_parsable_react_step(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    for q in [*_unseen_questions(3), *REAL_STYLE]:
        prompt = f"<question> {q} </question>\n"
        step = _greedy(model, tok, prompt).split("</code>")[0]
        assert step.startswith("<step>\n<p>\n"), step
        match = CODE_RE.search(step)
        assert match, f"no parsable code block in {step!r}"
        compile(match.group(1), "<step>", "exec")  # valid python
        # after the observation is pasted in, the next step is a final answer
        prompt += step.rstrip("\n") + "\n</code>\n<output>\n7\n</output>\n</step>\n"
        answer_step = _greedy(model, tok, prompt).split("</step>")[0]
        assert ANSWER_RE.search(answer_step), answer_step


def test_checkpoint_contents(tiny_model_dir: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["value_model"] is True and config["model_type"] == "qwen2"
    assert config["hidden_size"] // config["num_attention_heads"] >= 32  # vLLM CPU needs it
    head = load_file(str(tiny_model_dir / "value_head.safetensors"))
    assert head["v_head.summary.weight"].shape == (1, config["hidden_size"])
    assert torch.equal(head["v_head.summary.bias"], torch.zeros(1))
    assert float(head["v_head.summary.weight"].std()) < 0.05  # N(0, initializer_range)
    assert (tiny_model_dir / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id == tok.eos_token_id
    for text in ("<question> a  b\n\n\tc </question>\n<step>\n", "```python\nprint(12 + 7)\n```\n", " é ✓ 42"):
        assert tok.decode(tok(text)["input_ids"]) == text


def test_cached_directory_is_returned_quickly(tiny_model_dir: Path, capsys) -> None:
    stamp = (tiny_model_dir / MARKER).stat().st_mtime_ns
    t0 = time.perf_counter()
    assert build_tiny_model(tiny_model_dir) == tiny_model_dir
    assert main([str(tiny_model_dir)]) == 0
    assert time.perf_counter() - t0 < 2.0
    assert (tiny_model_dir / MARKER).stat().st_mtime_ns == stamp
    assert "tiny model ready" in capsys.readouterr().out


def test_half_built_directory_is_rebuilt_atomically(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")  # a crash left this, with no marker
    assert build_tiny_model(out, train_steps=2, batch_size=2) == out
    assert (out / MARKER).is_file() and (out / "value_head.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp dirs left behind
