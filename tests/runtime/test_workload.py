"""The benchmark workload's two code styles: the same trees, different code to run."""

from __future__ import annotations

from runtime.engine import SamplingParams
from runtime.engines import workload
from sandbox.executor import execute

PARAMS = SamplingParams(temperature=0.6, top_p=1.0, max_tokens=256, n=5, stop=(), seed=None)


def test_code_styles_share_tree_shapes_and_tokens() -> None:
    for prompt in (f"question {i}" for i in range(50)):
        plain, heavy = workload.script(prompt, PARAMS), workload.script_for("sympy")(prompt, PARAMS)
        assert [(c.token_ids, c.cumulative_logprob) for c in plain] == [
            (c.token_ids, c.cumulative_logprob) for c in heavy]
        # only the code differs: the same kinds of step in the same places
        assert [("<code>" in c.text, "Final Answer" in c.text or "answer is" in c.text) for c in plain] == [
            ("<code>" in c.text, "Final Answer" in c.text or "answer is" in c.text) for c in heavy]


def test_sympy_steps_really_compute() -> None:
    fmt = workload._FMT
    codes = [fmt.parse(c.text).code for c in workload.MENUS["sympy"]]
    runnable = [c for c in codes if c and "1/0" not in c]
    assert len(runnable) == 11
    # each replays the ones before it, as a path of such steps does in the sandbox
    stdout, error = execute(runnable[:-1], runnable[-1], [])
    assert (stdout.strip(), error) == ("[1, 15]", None)
