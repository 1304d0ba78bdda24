"""Attach a freshly initialised value head to a causal LM: AlphaMath's `save_value_head.py`.

    init_value_head_dir("path/or/hub-id", Path("out"))

`out` gets the model (files copied from a local directory, or downloaded and saved from a hub
id), `value_head.safetensors` with weight ~ N(0, config.initializer_range) and bias 0 (so the
fresh head predicts ≈ 0, as the paper says), and `"value_model": true` in config.json
(DESIGN.md "Value-head checkpoints"). The head itself is built and written by
runtime.engines.value_head; this module only handles the directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from runtime.engines.model_dir import missing_local_model
from runtime.engines.value_head import VALUE_HEAD_FILES, init_value_head, save_value_head
from training.errors import CheckpointError

__all__ = ["DEFAULT_INITIALIZER_RANGE", "init_value_head_dir", "mark_value_model", "text_config_of"]

DEFAULT_INITIALIZER_RANGE = 0.02  # transformers' default where a config lacks the field


def text_config_of(config: Any) -> Any:
    """The language-model part of a (possibly multimodal) transformers config."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def mark_value_model(model_dir: Path) -> None:
    """Set `"value_model": true` in `model_dir/config.json`, keeping every other field."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
    config["value_model"] = True
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def init_value_head_dir(model: str | Path, out: Path, *, seed: int = 0) -> Path:
    """Write `model` plus a fresh value head into `out` (may equal `model`: then in place).

    An existing head in `out` is replaced. Raises CheckpointError with one line if the model
    cannot be read.
    """
    from transformers import AutoConfig

    out = Path(out)
    src = Path(model)
    if missing := missing_local_model(model):
        raise CheckpointError(missing)
    try:
        config = AutoConfig.from_pretrained(str(model))
    except Exception as exc:  # foreign errors: one line naming the model
        raise CheckpointError(f"cannot load model config of {model}: {exc}".splitlines()[0]) from exc
    text = text_config_of(config)
    hidden = getattr(text, "hidden_size", None)
    if not isinstance(hidden, int):
        raise CheckpointError(f"model {model} has no hidden_size in its config")
    init_range = float(getattr(text, "initializer_range", None) or DEFAULT_INITIALIZER_RANGE)

    # 1) the model files into `out`
    if src.is_dir():
        if src.resolve() != out.resolve():
            shutil.copytree(src, out, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(*VALUE_HEAD_FILES, ".*"))
    else:  # a hub id
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            lm = AutoModelForCausalLM.from_pretrained(str(model))
            tok = AutoTokenizer.from_pretrained(str(model))
        except Exception as exc:
            raise CheckpointError(f"cannot load model {model}: {exc}".splitlines()[0]) from exc
        lm.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    for name in VALUE_HEAD_FILES:  # a stale .pth would shadow nothing, but would confuse
        (out / name).unlink(missing_ok=True)
    # 2) the head, 3) the config flag
    save_value_head(init_value_head(hidden, init_range, seed), out)
    mark_value_model(out)
    return out
