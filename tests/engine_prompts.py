"""Prompts shared by the engine tests (hf and vllm are checked against each other on these), and a
separate value model built from the tiny one."""

from __future__ import annotations

import shutil
from pathlib import Path

Q1 = "<question> Tom has 12 apples and buys 7 more. How many apples does Tom have? </question>\n"
Q2 = "<question> Mia had 50 cards and lost 8 of them. How many cards remain? </question>\n"
CODE_STEP = (
    "<step>\n<p>\nCompute what is left.\n</p>\n<code>\n```python\nprint(50 - 8)\n```\n</code>\n"
    "<output>\n42\n</output>\n</step>\n"
)
Q3 = "<question> Zoe buys 4 boxes with 9 shells in each box. How many shells does Zoe buy? </question>\n"


def other_value_model(src: Path, dst: Path) -> Path:
    """A copy of model `src` with a scaled trunk and its own value head: a separate value model
    whose values differ from `src`'s in both parts."""
    import torch
    from transformers import AutoModelForCausalLM

    from runtime.engines.value_head import load_value_head, save_value_head

    shutil.copytree(src, dst)
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        for p in model.model.layers[-1].parameters():
            p.mul_(1.5)
    model.save_pretrained(dst, safe_serialization=True)
    head = load_value_head(src, model.config.hidden_size)
    assert head is not None
    with torch.no_grad():
        head.weight.mul_(-2.0)
        head.bias.fill_(0.1)
    save_value_head(head, dst)
    return dst
