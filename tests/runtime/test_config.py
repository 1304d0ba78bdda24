from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runtime.config import apply_overrides, build_config, load_preset, merge, preset_names
from runtime.errors import ConfigError


def test_greedy_preset_carries_the_papers_values() -> None:
    config = build_config(load_preset("greedy"))
    assert config.strategy.name == "greedy"
    assert config.strategy.temperature == 0.0
    assert config.strategy.max_depth == 10
    assert config.strategy.prompt_format == "react_sft"
    assert "greedy" in preset_names()


def test_overrides_and_flags_apply_in_order() -> None:
    data = merge(load_preset("greedy"), "engine", {"model": "m", "device": None})
    data = apply_overrides(data, ["strategy.max_tokens=64", "run.limit=3", "engine.model=other"])
    config = build_config(data)
    assert config.strategy.max_tokens == 64
    assert config.run.limit == 3
    assert config.engine.model == "other"
    assert config.engine.device == "cpu"


@pytest.mark.parametrize("override, message", [
    ("strategy.max_tokens=-1", "strategy.max_tokens"),
    ("strategy.nope=1", "strategy.nope"),
    ("bogus.x=1", "unknown section 'bogus'"),
    ("no_equals", "section.key=value"),
    ("run.shard=3/2", "run.shard"),
])
def test_bad_values_are_one_clear_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(apply_overrides(load_preset("greedy"), [override]))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_our_validators_messages_read_as_written() -> None:
    """Pydantic's own message gets the bad value appended; a validator of ours says what matters
    itself — neither "Value error, " nor the value twice, nor a whole section echoed."""
    with pytest.raises(ConfigError) as info:
        build_config(apply_overrides(load_preset("greedy"), [
            "engine.kind=openai", "engine.model=m", "engine.value_model=v"]))
    assert str(info.value) == "config engine: value_model is for the hf and vllm engines, not openai"
    with pytest.raises(ConfigError, match=r"^config run\.shard: shard .*, got 3/2$"):
        build_config(apply_overrides(load_preset("greedy"), ["run.shard=3/2"]))
    with pytest.raises(ConfigError, match=r"^config strategy\.max_tokens: .* \(got -1\)$"):
        build_config(apply_overrides(load_preset("greedy"), ["strategy.max_tokens=-1"]))


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="greedy"):
        load_preset("no-such-preset")


def test_preset_from_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("strategy:\n  max_depth: 3\n")
    assert build_config(load_preset(str(path))).strategy.max_depth == 3


def test_results_hash_ignores_where_but_not_what() -> None:
    base = build_config(load_preset("greedy"))
    moved = build_config(apply_overrides(load_preset("greedy"), ["run.output=/tmp/x.jsonl", "run.concurrency=3"]))
    changed = build_config(apply_overrides(load_preset("greedy"), ["strategy.max_tokens=5"]))
    assert base.results_hash() == moved.results_hash()
    assert base.results_hash() != changed.results_hash()


def test_results_hash_follows_the_weights_at_a_model_path(tmp_path: Path) -> None:
    """A retrained or newly shipped model at the same path is a different experiment."""
    from runtime.engines.model_dir import model_fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 64}')
    weights = bytearray(range(256)) * 4096  # 1 MiB: wider than the sampled chunks' spacing
    (model / "model.safetensors").write_bytes(weights)

    def hashed() -> str:
        return build_config(apply_overrides(load_preset("greedy"), [f"engine.model={model}"])).results_hash()

    before, fingerprint = hashed(), model_fingerprint(model)
    assert hashed() == before and model_fingerprint(str(model)) == fingerprint
    weights[len(weights) // 2] ^= 1  # one byte, where a sampled chunk reads
    (model / "model.safetensors").write_bytes(weights)
    assert model_fingerprint(model) != fingerprint and hashed() != before
    # a separate value model counts by its path and weights too; without one the hash is as before
    critic = tmp_path / "critic"
    shutil.copytree(model, critic)

    def with_critic() -> str:
        return build_config(apply_overrides(load_preset("greedy"), [f"engine.model={model}",
                                                                   f"engine.value_model={critic}"])).results_hash()

    paired = with_critic()
    assert paired != hashed() and with_critic() == paired
    (critic / "model.safetensors").write_bytes(weights[:-1])
    assert with_critic() != paired
    # a hub id or a server's model name has no local weights to read
    assert model_fingerprint("Qwen/Qwen2.5-Math-7B") is None


def test_sandbox_max_uses_default_follows_the_mode() -> None:
    from runtime.config import compose_config
    from runtime.evaluate import sandbox_limits

    fresh = sandbox_limits(compose_config("greedy"))
    reuse = sandbox_limits(compose_config("greedy", sandbox={"reuse_process": True}))
    pinned = sandbox_limits(compose_config("greedy", sandbox={"reuse_process": True, "max_uses": 7,
                                                              "pool_size": 3, "worker_runs": 5}))
    assert (fresh.max_uses, fresh.reuse_process) == (100, False)
    assert (reuse.max_uses, reuse.reuse_process, reuse.worker_runs) == (100_000, True, 1_000)
    assert (pinned.max_uses, pinned.pool_size, pinned.worker_runs) == (7, 3, 5)
