"""SamplingParams and the seed an engine samples a prompt with (`prompt_seed`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.engine import SamplingParams, prompt_seed


@given(seed=st.integers(0, 2**32), prompt=st.text(max_size=200))
def test_prompt_seed_is_a_pure_62_bit_function(seed: int, prompt: str) -> None:
    got = prompt_seed(seed, prompt)
    assert got == prompt_seed(seed, prompt)
    # vLLM seeds sample i with seed + i: that must stay a signed 64-bit integer
    assert 0 <= got < 2**62


def test_one_seed_gives_each_prompt_its_own_seed() -> None:
    prompts = [f"<question> {i} + 1 </question>" for i in range(1000)]
    assert len({prompt_seed(42, p) for p in prompts}) == 1000
    assert prompt_seed(42, prompts[0]) != prompt_seed(43, prompts[0])
    # the separator keeps ("1", "2x") and ("12", "x") apart
    assert prompt_seed(1, "2x") != prompt_seed(12, "x")


def test_for_prompt_replaces_only_the_seed() -> None:
    params = SamplingParams(temperature=0.6, top_p=0.9, max_tokens=30, n=5, stop=("</code>",), seed=7)
    mixed = params.for_prompt("Q")
    assert mixed.seed == prompt_seed(7, "Q")
    assert (mixed.temperature, mixed.top_p, mixed.max_tokens, mixed.n, mixed.stop) == (0.6, 0.9, 30, 5, ("</code>",))
    unseeded = SamplingParams(temperature=0.6)
    assert unseeded.for_prompt("Q") is unseeded


@pytest.mark.parametrize("field,value", [("temperature", -0.1), ("top_p", 0.0), ("max_tokens", 0), ("n", 0)])
def test_invalid_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})
