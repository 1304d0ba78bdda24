"""The value head beside a causal-LM checkpoint: load, initialise, save.

Format (DESIGN.md "Value-head checkpoints"): `value_head.safetensors` in the model directory with
`v_head.summary.weight` [1, hidden] and `v_head.summary.bias` [1] — trl's
`AutoModelForCausalLMWithValueHead` names, which AlphaMath kept. AlphaMath's own `value_head.pth`
(a torch state dict with the same keys) is read too. The value of a state is
`tanh(weight · h_last + bias)`, `h_last` being the final hidden state at the last prompt token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from runtime.errors import EngineError, NoValueHeadError

__all__ = [
    "BIAS_KEY",
    "VALUE_HEAD_FILES",
    "WEIGHT_KEY",
    "find_value_head_file",
    "init_value_head",
    "load_value_head",
    "missing_value_head",
    "save_value_head",
]

WEIGHT_KEY = "v_head.summary.weight"
BIAS_KEY = "v_head.summary.bias"
# Looked up in this order; the first that exists wins.
VALUE_HEAD_FILES = ("value_head.safetensors", "value_head.pth")


def missing_value_head(model: object) -> NoValueHeadError:
    """The error for a value request to `model`, which has no value head, with what to do."""
    return NoValueHeadError(
        f"model {model} has no value head ({' / '.join(VALUE_HEAD_FILES)}), which value-guided "
        "strategies (sbs, mcts) need: use a checkpoint trained with one (`alphamath train`) or "
        "attach a fresh, untrained one (`alphamath value-head init MODEL OUT`)")


def find_value_head_file(model_dir: Path | str) -> Path | None:
    """The value-head file of `model_dir`, or None."""
    for name in VALUE_HEAD_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            return path
    return None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: one clear line
        raise EngineError(f"cannot read value head {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise EngineError(f"value head {path} is not a state dict (got {type(state).__name__})")
    return state


def load_value_head(model_dir: Path | str, hidden_size: int) -> torch.nn.Linear | None:
    """Load the head of `model_dir` as a float32 `Linear(hidden_size, 1)`; None if there is none.

    Raises EngineError when the file is unreadable, lacks the keys, or has the wrong shapes.
    """
    path = find_value_head_file(model_dir)
    if path is None:
        return None
    state = _read_state(path)
    missing = [k for k in (WEIGHT_KEY, BIAS_KEY) if k not in state]
    if missing:
        raise EngineError(f"value head {path} lacks {', '.join(missing)} (has {sorted(state)})")
    weight, bias = state[WEIGHT_KEY], state[BIAS_KEY]
    if tuple(weight.shape) != (1, hidden_size) or tuple(bias.shape) != (1,):
        raise EngineError(
            f"value head {path} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}; "
            f"expected (1, {hidden_size}) and (1,) for this model's hidden size {hidden_size}"
        )
    head = torch.nn.Linear(hidden_size, 1)
    with torch.no_grad():
        head.weight.copy_(weight.to(torch.float32))
        head.bias.copy_(bias.to(torch.float32))
    head.requires_grad_(False)  # inference only
    head.eval()
    return head


def init_value_head(hidden_size: int, initializer_range: float, seed: int = 0) -> torch.nn.Linear:
    """A fresh head as AlphaMath's save_value_head.py makes it: weight ~ N(0, range), bias 0."""
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(hidden_size, 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn((1, hidden_size), generator=gen) * initializer_range)
        head.bias.zero_()
    return head


def save_value_head(linear: torch.nn.Linear, model_dir: Path | str) -> Path:
    """Write `value_head.safetensors` into `model_dir`; returns its path."""
    from safetensors.torch import save_file

    if linear.out_features != 1 or linear.bias is None:
        raise EngineError(f"a value head is Linear(hidden, 1) with a bias, got {linear}")
    path = Path(model_dir) / VALUE_HEAD_FILES[0]
    state = {
        WEIGHT_KEY: linear.weight.detach().to("cpu", torch.float32).contiguous(),
        BIAS_KEY: linear.bias.detach().to("cpu", torch.float32).contiguous(),
    }
    save_file(state, str(path))
    return path
