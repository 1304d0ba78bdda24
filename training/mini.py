"""The miniature AlphaMath's model: a few-million-parameter Qwen2 built and warm-started here.

    base = build_base_model(Path("runs/mini/s0/base"), seed=0)       # tokenizer + random weights
    write_sft_rows(Path("sft.jsonl"), n=20_000, seed=0)              # correct synthetic solutions
    train(TrainConfig(data=..., model=base, **SFT_TRAINING))         # the warm start

The recipe is docs/MINI.md's feasibility run: 4 layers, d_model 256, 4 heads (head_dim 64:
vLLM's CPU attention needs >= 32), tied embeddings, a byte-level BPE tokenizer with single
digits and whole format tags, trained on the synthetic solutions (~650 entries), AdamW at lr 1.5e-3, batch 32,
the loss masked on the question and on the pasted-in interpreter outputs. ~3.4 M parameters, so
a float16 copy of the weights is 6.8 MB (the size the project can ship).

The model is a plain transformers checkpoint with `value_head.safetensors` (DESIGN.md), so the
hf and vLLM engines and `training.train` serve and train it like any other model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evals.synthetic import synth_arith_contrast_rows, synth_arith_sft_rows
from runtime.engines.value_head import init_value_head, save_value_head
from training.data import TrainingRow, write_training_rows
from training.tiny_model import EOS, train_tokenizer
from training.value_head import mark_value_model

__all__ = ["LEVEL", "SFT_TRAINING", "MiniSpec", "build_base_model", "corpus_texts", "export_release",
           "write_contrast_rows", "write_sft_rows"]

LEVEL = "synth-arith-hard"  # 3–6 operations: where docs/MINI.md saw search beat greedy
# The react_sft format's tags (with the newlines the format puts around them), one token each:
# byte-level pre-tokenization would split `<step>` into three. ~200 tokens per solution, not ~330.
WHOLE_TOKENS = ("<question>", "</question>\n", "<step>\n", "</step>\n", "<p>\n", "\n</p>\n",
                "<code>\n", "</code>\n", "<output>\n", "\n</output>\n", "```python\n", "\n```\n",
                "Final Answer: ", "print(")

# TrainConfig fields of the warm start (docs/MINI.md). beta 0: the SFT rows are all correct
# (every Q = 1), so a value loss on them would only teach the head to say "1" everywhere.
SFT_TRAINING: dict[str, Any] = {"lr": 1.5e-3, "batch_size": 32, "beta": 0.0, "mask_observations": True,
                                "max_len": 512, "warmup_ratio": 0.03, "epochs": 1, "group_by_length": True}


@dataclass(frozen=True)
class MiniSpec:
    layers: int = 4
    hidden: int = 256
    heads: int = 4
    intermediate: int = 704
    vocab_size: int = 700  # BPE target (256 of it is the byte alphabet); may come out smaller
    max_positions: int = 1024


def corpus_texts(rows: Iterable[TrainingRow]) -> list[str]:
    """The text the model reads and writes: prompt + steps (each as the trainer tokenizes it)."""
    return [row.prompt + "".join(step.text.strip() + "\n" for step in row.steps) for row in rows]


def write_sft_rows(path: Path, *, n: int, seed: int, level: str = LEVEL,
                   q: float | None = 1.0) -> Path:
    """`n` correct solutions of training-split problems as training rows (every q = `q`; None:
    LM-only rows)."""
    return write_training_rows(synth_arith_sft_rows("train", n, seed, level=level, q=q), path)


def write_contrast_rows(path: Path, *, n: int, seed: int, level: str = LEVEL, flawed: int = 3,
                        one_expression_share: float = 0.5) -> Path:
    """Value-training rows for `n` training-split problems: a correct solution and `flawed` ones,
    each with one slip of the kinds the mini policy makes (`synth_arith_contrast_rows`)."""
    return write_training_rows(synth_arith_contrast_rows("train", n, seed, level=level, flawed=flawed,
                                                         one_expression_share=one_expression_share), path)


def build_base_model(out: Path, *, seed: int, spec: MiniSpec = MiniSpec(), corpus_size: int = 4000,
                     level: str = LEVEL) -> Path:
    """Tokenizer trained on `corpus_size` synthetic solutions + a random-weight Qwen2 + a fresh
    value head, saved in `out` (replaced if present). Deterministic for a seed."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    # The tokenizer sees the test split's wording too only through the shared templates: its
    # corpus is training problems (a seed of its own, so it is not the SFT data itself).
    corpus = corpus_texts(synth_arith_sft_rows("train", corpus_size, seed + 10_000, level=level))
    tokenizer = train_tokenizer(corpus, spec.vocab_size, whole=WHOLE_TOKENS)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        num_hidden_layers=spec.layers,
        intermediate_size=spec.intermediate,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # Reload as serving will (transformers may adjust the tokenizer it builds for Qwen2).
    AutoTokenizer.from_pretrained(out)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = eos_id
    model.save_pretrained(out, safe_serialization=True)
    save_value_head(init_value_head(spec.hidden, config.initializer_range, seed), out)
    mark_value_model(out)
    (out / "mini_spec.json").write_text(json.dumps({"seed": seed, "level": level, **spec.__dict__,
                                                    "parameters": model.num_parameters()}) + "\n")
    return out


def export_release(src: Path, dst: Path, *, card: str) -> Path:
    """Copy a trained mini model into `dst` as the project ships it: float16 weights (half the
    size; the engines load them as float32 on CPU), the tokenizer, the float32 value head (257
    numbers), `"value_model": true`, and `README.md` = `card`. `dst` is replaced."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.engines.value_head import load_value_head

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    head = load_value_head(src, model.config.hidden_size)
    if head is None:
        raise ValueError(f"{src} has no value head: only a trained policy+value model ships")
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    model.to(torch.float16).save_pretrained(dst, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    save_value_head(head, dst)
    mark_value_model(dst)
    (dst / "README.md").write_text(card)
    return dst
