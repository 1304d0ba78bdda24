"""`init_value_head_dir`: AlphaMath's save_value_head.py — shapes, init statistics, serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from runtime.engines.hf import HFEngine
from runtime.engines.value_head import BIAS_KEY, WEIGHT_KEY
from runtime.errors import AlphaMathError
from training.errors import CheckpointError
from training.value_head import init_value_head_dir

Q = "<question> Tom has 2 apples and buys 3 more. How many apples? </question>\n"


def bare_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "value_head.safetensors").unlink()
    config = json.loads((dst / "config.json").read_text())
    del config["value_model"]
    (dst / "config.json").write_text(json.dumps(config))
    return dst


async def test_fresh_head_on_a_bare_model_is_served(tiny_model_dir: Path, tmp_path: Path) -> None:
    bare = bare_copy(tiny_model_dir, tmp_path / "bare")
    out = init_value_head_dir(bare, tmp_path / "out", seed=1)
    state = load_file(str(out / "value_head.safetensors"))
    assert state[WEIGHT_KEY].shape == (1, 128) and state[BIAS_KEY].shape == (1,)
    assert torch.equal(state[BIAS_KEY], torch.zeros(1))
    assert json.loads((out / "config.json").read_text())["value_model"] is True
    assert not (bare / "value_head.safetensors").exists()  # the source is untouched
    async with await HFEngine.load(out, value_head=True) as engine:
        (v,) = await engine.value([Q])
    assert -1.0 < v < 1.0 and abs(v) < 0.9  # a fresh head predicts near 0, never saturated
    # same seed, same head; another seed, another head; in place works too
    again = init_value_head_dir(bare, tmp_path / "again", seed=1)
    assert torch.equal(load_file(str(again / "value_head.safetensors"))[WEIGHT_KEY], state[WEIGHT_KEY])
    init_value_head_dir(bare, bare, seed=2)
    other = load_file(str(bare / "value_head.safetensors"))[WEIGHT_KEY]
    assert not torch.equal(other, state[WEIGHT_KEY])


def test_weight_std_follows_initializer_range(tmp_path: Path) -> None:
    from transformers import Qwen2Config

    model = tmp_path / "cfg"
    Qwen2Config(hidden_size=4096, initializer_range=0.05, num_attention_heads=32,
                num_key_value_heads=8).save_pretrained(model)
    out = init_value_head_dir(model, tmp_path / "out")
    w = load_file(str(out / "value_head.safetensors"))[WEIGHT_KEY]
    assert w.shape == (1, 4096)
    assert float(w.std()) == pytest.approx(0.05, rel=0.05)
    assert abs(float(w.mean())) < 0.005


def test_unreadable_model_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="cannot load model config") as info:
        init_value_head_dir(tmp_path / "empty", tmp_path / "out")
    assert isinstance(info.value, AlphaMathError) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="nowhere: no such directory"):  # not a hub-id riddle
        init_value_head_dir(tmp_path / "nowhere", tmp_path / "out")
