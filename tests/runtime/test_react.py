"""ReAct step formats (runtime/react.py): byte-exact goldens for react_sft (ALPHAMATH.md §1.2),
the round-1 react layout (§1.1), parse edge cases, and format_step/parse round trips."""

from __future__ import annotations

import contextlib
import io
import random
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from runtime import react_prompts
from runtime.react import (
    FORMATS,
    NO_ACTION,
    NO_ACTION_OBSERVATION,
    SENTINEL_NO_VALID_CHILD,
    SENTINEL_TOO_MANY_CODE_ERRORS,
    SENTINEL_TOO_MANY_STEPS,
    SENTINELS,
    ParsedStep,
    ReactFormat,
    get_format,
    is_sentinel,
)

SFT: ReactFormat = get_format("react_sft")
REACT: ReactFormat = get_format("react")

CODE_GEN = "<step>\n<p>\nCompute the sum.\n</p>\n<code>\n```python\nprint(1 + 1)\n```"
CODE_NODE = (
    "<step>\n<p>\nCompute the sum.\n</p>\n<code>\n```python\nprint(1 + 1)\n```\n</code>\n"
    "<output>\n2\n</output>\n</step>"
)
ANSWER_GEN = "<step>\n<p>\nSo the sum is 2.\n</p>\n<p>\nFinal Answer: $2$\n</p>\n"
ANSWER_NODE = "<step>\n<p>\nSo the sum is 2.\n</p>\n<p>\nFinal Answer: $2$\n</p>\n</step>"


# ------------------------------------------------------------------------- registry, sentinels


def test_registry_names_and_unknown_name() -> None:
    assert {name: fmt.name for name, fmt in FORMATS.items()} == {
        "react_sft": "react_sft",
        "react": "react",
    }
    with pytest.raises(ValueError, match="react, react_sft"):
        get_format("xml")


def test_sentinels() -> None:
    assert SENTINEL_TOO_MANY_STEPS == "Fail to sove the problem within limited steps."
    assert SENTINELS == {
        SENTINEL_NO_VALID_CHILD,
        SENTINEL_TOO_MANY_STEPS,
        SENTINEL_TOO_MANY_CODE_ERRORS,
    }
    assert all(is_sentinel(s) for s in SENTINELS)
    assert not is_sentinel(None)
    assert not is_sentinel("2")


# ---------------------------------------------------------------------------- react_sft goldens


def test_sft_constants() -> None:
    assert SFT.stop == ("\n</code>", "</code>", "</step>")
    assert SFT.delimiter == "\n"


def test_sft_prompt_without_steps() -> None:
    assert SFT.build_prompt("What is 1+1?", []) == "<question> What is 1+1? </question>\n"


def test_sft_prompt_with_two_steps() -> None:
    assert SFT.build_prompt("What is 1+1?", [CODE_NODE, ANSWER_NODE]) == (
        "<question> What is 1+1? </question>\n"
        "<step>\n<p>\nCompute the sum.\n</p>\n<code>\n```python\nprint(1 + 1)\n```\n</code>\n"
        "<output>\n2\n</output>\n</step>\n"
        "<step>\n<p>\nSo the sum is 2.\n</p>\n<p>\nFinal Answer: $2$\n</p>\n</step>\n"
    )


def test_sft_code_step_node_text() -> None:
    step = SFT.parse(CODE_GEN)
    assert step == ParsedStep(
        text=CODE_GEN + "\n</code>",
        thought="Compute the sum.",
        code="```python\nprint(1 + 1)\n```",
        action="python_interpreter",
    )
    assert step.is_code and not step.is_answer
    # the observation is stripped, as the original's caller does
    assert SFT.with_observation(step, "2\n") == CODE_NODE


def test_sft_answer_step() -> None:
    step = SFT.parse(ANSWER_GEN)
    assert step == ParsedStep(text=ANSWER_NODE, thought="So the sum is 2.", final_answer="2")
    assert step.is_answer and not step.is_code
    with pytest.raises(ValueError):
        SFT.with_observation(step, "2")


@pytest.mark.parametrize(
    ("generated", "expected_text"),
    [
        (ANSWER_GEN + "</step>", ANSWER_NODE),  # engine kept the stop string
        (CODE_GEN + "\n</code>", CODE_GEN + "\n</code>"),
        (CODE_GEN + "</code>", CODE_GEN + "\n</code>"),  # stopped at the bare "</code>"
        ("\n" + CODE_GEN + "\n", CODE_GEN + "\n</code>"),
    ],
)
def test_sft_parse_tolerates_stop_strings_and_whitespace(
    generated: str, expected_text: str
) -> None:
    step = SFT.parse(generated)
    assert step.error is None
    assert step.text == expected_text


def test_sft_value_prompt_ends_at_newline_after_step() -> None:
    prompt = SFT.value_prompt("What is 1+1?", [CODE_NODE])
    assert prompt == f"<question> What is 1+1? </question>\n{CODE_NODE}\n"
    assert prompt.endswith("</step>\n")


def test_sft_format_step_goldens() -> None:
    assert SFT.format_step("Compute the sum.", code="print(1 + 1)") == CODE_GEN
    assert SFT.format_step("Compute the sum.", code="```python\nprint(1 + 1)\n```") == CODE_GEN
    assert SFT.format_step("So the sum is 2.", final_answer="$2$") == ANSWER_GEN
    with pytest.raises(ValueError):
        SFT.format_step("t")
    with pytest.raises(ValueError):
        SFT.format_step("t", code="x = 1", final_answer="1")


# ----------------------------------------------------------------------------- react_sft parsing


def _answer(answer_line: str) -> str:
    return f"<step>\n<p>\nt\n</p>\n<p>\nFinal Answer: {answer_line}\n</p>\n"


@pytest.mark.parametrize(
    ("answer_line", "expected"),
    [
        # one surrounding $…$ is removed, and only one
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("$$x$$", "$x$"),
        ("$x$ and $y$", "x$ and $y"),  # the original's rule, naive on purpose
        ("x$", "x$"),
        ("  42  ", "42"),
        # up to the LAST </p>: an answer containing </p> keeps it
        ("a</p>b", "a</p>b"),
    ],
)
def test_sft_answer_extraction(answer_line: str, expected: str) -> None:
    assert SFT.parse(_answer(answer_line)).final_answer == expected


def test_sft_answer_without_closing_paragraph_takes_the_rest() -> None:
    assert SFT.parse("<step>\n<p>\nt\n</p>\n<p>\nFinal Answer: 42").final_answer == "42"


@pytest.mark.parametrize(
    ("generated", "message"),
    [
        (CODE_GEN.replace("Compute the sum.", "Final Answer: 2"), "both"),
        ("<step>\n<p>\nI am thinking.\n</p>\n", "neither"),
        ("", "neither"),
        # truncated code: only the opening fence (the original accepted this as empty code)
        ("<step>\n<p>\nt\n</p>\n<code>\n```python\nprint(1", "closing fence"),
        ("<step>\n<p>\nt\n</p>\n<code>\n```python\n```", "empty"),
        (_answer("$"), "empty"),
        (_answer(""), "empty"),
    ],
)
def test_sft_parse_errors(generated: str, message: str) -> None:
    step = SFT.parse(generated)
    assert step.error is not None and message in step.error
    assert step.code is None and step.final_answer is None
    assert not step.is_code and not step.is_answer


def test_sft_code_keeps_everything_to_the_last_fence() -> None:
    generated = "<step>\n<p>\nt\n</p>\n<code>\n```python\ns = '''a'''\nprint(s)\n```"
    assert SFT.parse(generated).code == "```python\ns = '''a'''\nprint(s)\n```"


# ---------------------------------------------------------------------------------------- react


def test_react_constants() -> None:
    assert REACT.stop == ("\nObservation:", "Observation:", "<Solution complete>")
    assert REACT.delimiter == "\n\n"


def test_react_prompt_layout_without_rng() -> None:
    assert REACT.build_prompt("What is 1+1?", []) == (
        react_prompts.INSTRUCTIONS
        + "\n\nThe following are 2 demonstration examples.\n\n"
        + react_prompts.EXAMPLES[0]
        + "\n\n"
        + react_prompts.EXAMPLES[1]
        + "\n\nNow! It's your turn.\n\nQuestion: What is 1+1?\n\n"
    )


def test_react_prompt_with_steps() -> None:
    prompt = REACT.build_prompt("Q?", ["step one", "step two"])
    assert prompt.endswith("Now! It's your turn.\n\nQuestion: Q?\n\nstep one\n\nstep two\n\n")
    assert REACT.value_prompt("Q?", ["step one", "step two"]) == prompt


def test_react_prompt_sampling_is_deterministic_per_rng() -> None:
    prompts = [REACT.build_prompt("Q?", [], rng=random.Random(seed)) for seed in range(20)]
    assert prompts == [REACT.build_prompt("Q?", [], rng=random.Random(s)) for s in range(20)]
    assert len(set(prompts)) > 1
    for prompt in prompts:
        chosen = [ex for ex in react_prompts.EXAMPLES if ex in prompt]
        assert len(chosen) == 2


REACT_CODE_GEN = (
    "Thought: Add them.\n\nAction: python_interpreter\n\n"
    "Action Input: ```python\nprint(1 + 1)\n```\n"
)


def test_react_action_step() -> None:
    step = REACT.parse(REACT_CODE_GEN)
    assert step == ParsedStep(
        text=REACT_CODE_GEN.strip(),
        thought="Add them.",
        code="```python\nprint(1 + 1)\n```",
        action="python_interpreter",
    )
    assert REACT.with_observation(step, "2") == REACT_CODE_GEN.strip() + "\n\nObservation: 2"
    assert REACT.format_step("Add them.", code="print(1 + 1)") == REACT_CODE_GEN


def test_react_none_action() -> None:
    generated = "Thought: No tool needed.\n\nAction: None\n\nAction Input: None\n"
    assert REACT.format_step("No tool needed.") == generated
    step = REACT.parse(generated)
    assert step.error is None and step.action == NO_ACTION
    assert not step.is_code and not step.is_answer
    assert REACT.with_observation(step, NO_ACTION_OBSERVATION) == (
        "Thought: No tool needed.\n\nAction: None\n\nAction Input: None\n\n"
        "Observation: No action, no observation. Please continue to solve."
    )


@pytest.mark.parametrize(
    "generated",
    [
        "Thought: Done.\n\nFinal Answer: $5$\n",
        "Thought: Done.\n\nFinal Answer: $5$\n<Solution complete>",  # stop string kept
        "Thought: Final Answer: 3 was wrong.\n\nFinal Answer: 5",  # the LAST one counts
    ],
)
def test_react_final_answer(generated: str) -> None:
    step = REACT.parse(generated)
    assert step.is_answer and step.final_answer == "5"
    assert step.text == generated.removesuffix("<Solution complete>").strip()


@pytest.mark.parametrize(
    ("generated", "message"),
    [
        (REACT_CODE_GEN + "\nFinal Answer: 2", "both"),
        ("Thought: hmm.\n\nAction: calculator\n\nAction Input: 1+1", "unknown action"),
        ("Thought: I keep thinking.", "neither"),
        ("Thought: t\n\nFinal Answer: ", "empty"),
    ],
)
def test_react_parse_errors(generated: str, message: str) -> None:
    step = REACT.parse(generated)
    assert step.error is not None and message in step.error
    assert not step.is_code and not step.is_answer
    with pytest.raises(ValueError):
        REACT.with_observation(step, "x")


_EXAMPLE_TOOL_CALL = re.compile(
    r"Action Input: ```python\n(.*?)\n```\n\nObservation: (.*?)\n\n", re.S
)


@pytest.mark.parametrize("example", react_prompts.EXAMPLES)
def test_demonstrations_are_well_formed_and_truthful(example: str) -> None:
    assert example.startswith("Question: ")
    assert re.search(r"\n\nFinal Answer: [^\n]+\n<Solution complete>$", example)
    assert "{{" not in example
    calls = _EXAMPLE_TOOL_CALL.findall(example)
    assert calls
    namespace: dict[str, object] = {}
    for code, observation in calls:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, namespace)  # our own demonstration code, nothing untrusted
        assert out.getvalue().strip() == observation


def test_react_pool_has_enough_examples() -> None:
    assert len(react_prompts.EXAMPLES) >= 4


# ------------------------------------------------------------------------- property-based tests

_SFT_MARKERS = ("Final Answer:",)
_REACT_MARKERS = (
    "Final Answer:",
    "Action:",
    "Action Input:",
    "Observation:",
    "<Solution complete>",
)
_text = st.text(st.characters(codec="utf-8", exclude_characters="<>`"))


def _clean(s: str, markers: tuple[str, ...]) -> bool:
    return not any(m in s for m in markers)


def _answer_ok(a: str, markers: tuple[str, ...]) -> bool:
    a = a.strip()
    return bool(a) and _clean(a, markers) and not (a.startswith("$") and a.endswith("$"))


@given(thought=_text, code=_text)
def test_sft_code_round_trip(thought: str, code: str) -> None:
    assume(code.strip() and _clean(thought + code, _SFT_MARKERS))
    step = SFT.parse(SFT.format_step(thought, code=code))
    assert step.is_code, step.error
    assert step.thought == thought.strip()
    assert step.code == f"```python\n{code}\n```"


@given(thought=_text, answer=_text)
def test_sft_answer_round_trip(thought: str, answer: str) -> None:
    assume(_clean(thought, _SFT_MARKERS) and _answer_ok(answer, _SFT_MARKERS))
    step = SFT.parse(SFT.format_step(thought, final_answer=answer))
    assert step.is_answer, step.error
    assert step.thought == thought.strip()
    assert step.final_answer == answer.strip()


def _react_thought_ok(t: str) -> bool:
    return _clean(t, _REACT_MARKERS) and not t.strip().startswith("Thought:")


@given(thought=_text, code=_text)
def test_react_code_round_trip(thought: str, code: str) -> None:
    assume(code.strip() and _react_thought_ok(thought) and _clean(code, _REACT_MARKERS))
    step = REACT.parse(REACT.format_step(thought, code=code))
    assert step.is_code, step.error
    assert step.thought == thought.strip()
    assert step.code == f"```python\n{code}\n```"


@given(thought=_text, answer=_text)
def test_react_answer_round_trip(thought: str, answer: str) -> None:
    assume(_react_thought_ok(thought) and _answer_ok(answer, _REACT_MARKERS))
    step = REACT.parse(REACT.format_step(thought, final_answer=answer))
    assert step.is_answer, step.error
    assert step.thought == thought.strip()
    assert step.final_answer == answer.strip()


_FRAGMENTS = st.sampled_from(
    [
        "<step>", "</step>", "<p>", "</p>", "<code>", "</code>", "<output>", "```python", "```",
        "\n", " ", "x = 1", "$", '"', "Final Answer:", "Thought:", "Action:", "Action Input:",
        "None", "python_interpreter", "Observation:", "<Solution complete>", "python",
    ]
)  # fmt: skip
_GENERATED = st.one_of(st.text(), st.lists(_FRAGMENTS | st.text(max_size=3)).map("".join))


@pytest.mark.parametrize("name", sorted(FORMATS))
@given(generated=_GENERATED)
def test_parse_never_raises_and_is_consistent(name: str, generated: str) -> None:
    fmt = get_format(name)
    step = fmt.parse(generated)
    if step.error is not None:
        assert step.code is None and step.final_answer is None
        return
    assert step.is_code + step.is_answer + (step.action == NO_ACTION) == 1
    # the node text parses back to the same step (strategies may re-parse stored text)
    assert fmt.parse(step.text) == step
    if step.is_code or step.action == NO_ACTION:
        assert fmt.with_observation(step, "out").startswith(step.text)
