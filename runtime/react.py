"""The two ReAct step formats a policy speaks (ALPHAMATH.md §1): prompts, stops, parsing.

* ``react_sft`` (default; what AlphaMath-7B speaks, §1.2). XML steps, delimiter ``"\\n"``::

      <question> {question} </question>\\n{step 1}\\n{step 2}\\n
      <step>\\n<p>\\n{thought}\\n</p>\\n<code>\\n```python\\n{code}\\n```\\n</code>\\n
      <output>\\n{observation}\\n</output>\\n</step>
      <step>\\n<p>\\n{thought}\\n</p>\\n<p>\\nFinal Answer: {answer}\\n</p>\\n</step>

  Byte-exact to the original, because the released model was trained on exactly these bytes and
  its value head is read at the ``"\\n"`` after ``</step>`` that ends every prompt.
* ``react`` (round 1, base model, §1.1). Instructions + 2 sampled demonstrations + the question,
  blocks joined by ``"\\n\\n"``. A step is "Thought: …", "Action: python_interpreter" (or None),
  "Action Input:" and a python-fenced block; the node then gets "Observation: …". The last step
  is "Thought: …" plus "Final Answer: …".

Where we differ from the original, and why:

* The react instructions and demonstrations are our own (runtime/react_prompts.py); the
  original's json files are not available. Its examples carried literal ``{{ }}`` (never
  ``.format``-ed); ours have single braces.
* Parse failures are returned as ``ParsedStep.error`` instead of raised: the original raised out
  of SBS/MCTS batch steps and dropped the whole question's step (§1.4 caveat). Callers record
  ``SENTINEL_NO_VALID_CHILD`` instead.
* react_sft: a ``<code>`` block whose only fence is the opening one (a truncated generation) is an
  error; the original's regex accepted it as the empty program ``"\\n```"``.
* An empty final answer (also ``"$$"``) is an error; the original silently kept such a node as a
  non-terminal, non-code step that nothing else handles.
* react: an action other than ``python_interpreter``/``None``, or an empty Action Input, is an
  error (the original ran it and observed ``KeyError: 'name'`` or nothing); react answers also
  lose one surrounding ``$…$`` (the original only did this for react_sft; its grader removes them
  anyway).
* A trailing stop string left in the text (engines that include it) is tolerated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from runtime import react_prompts

__all__ = [
    "CODE_ACTION",
    "FORMATS",
    "NO_ACTION",
    "NO_ACTION_OBSERVATION",
    "SENTINELS",
    "SENTINEL_NO_VALID_CHILD",
    "SENTINEL_TOO_MANY_CODE_ERRORS",
    "SENTINEL_TOO_MANY_STEPS",
    "ParsedStep",
    "ReactFewShotFormat",
    "ReactFormat",
    "ReactSftFormat",
    "get_format",
    "is_sentinel",
]

# §1.4: final_answer values that mark invalid terminals (reward −1, never an answer).
SENTINEL_NO_VALID_CHILD = "Fail to generate parsable text for next step."
# (sic) "sove": the original's typo, kept so saved trees compare equal
SENTINEL_TOO_MANY_STEPS = "Fail to sove the problem within limited steps."
SENTINEL_TOO_MANY_CODE_ERRORS = "Too many consecutive steps have code errors."
SENTINELS: frozenset[str] = frozenset(
    {SENTINEL_NO_VALID_CHILD, SENTINEL_TOO_MANY_STEPS, SENTINEL_TOO_MANY_CODE_ERRORS}
)

CODE_ACTION = react_prompts.TOOL_NAME  # "python_interpreter"
NO_ACTION = "None"
# What the original's "None" tool returns; a strategy uses it instead of running the sandbox.
NO_ACTION_OBSERVATION = "No action, no observation. Please continue to solve."

FINAL_ANSWER = "Final Answer:"


def is_sentinel(answer: str | None) -> bool:
    """True for the §1.4 invalid-terminal strings, which must never be returned as an answer."""
    return answer is not None and answer in SENTINELS


@dataclass(frozen=True)
class ParsedStep:
    """One generated step, parsed. Exactly one of code/answer/no-action/error describes it."""

    text: str  # the step as it goes into the next prompt, before any observation
    thought: str
    code: str | None = None  # with its ```python fences, as the original captures it
    final_answer: str | None = None
    action: str | None = None  # CODE_ACTION, NO_ACTION, or None
    error: str | None = None

    @property
    def is_code(self) -> bool:
        return self.error is None and self.code is not None

    @property
    def is_answer(self) -> bool:
        return self.error is None and self.final_answer is not None


class ReactFormat(Protocol):
    """A step format; strategies see only this, so they work with either format."""

    name: str
    stop: tuple[str, ...]
    delimiter: str

    def build_prompt(
        self, question: str, steps: Sequence[str], *, rng: random.Random | None = None
    ) -> str: ...

    def parse(self, generated: str) -> ParsedStep: ...

    def with_observation(self, step: ParsedStep, observation: str) -> str: ...

    def format_step(
        self, thought: str, *, code: str | None = None, final_answer: str | None = None
    ) -> str: ...

    def value_prompt(self, question: str, steps: Sequence[str]) -> str: ...


def _strip_dollars(answer: str) -> str:
    """Remove one surrounding ``$…$``: models write ``$\\frac{1}{2}$``; graders want inside."""
    if answer.startswith("$") and answer.endswith("$"):  # a lone "$" becomes "", as upstream
        return answer[1:-1]
    return answer


def _fence(code: str) -> str:
    """Bare code → a ```python block; an already fenced block is kept as it is."""
    if code.lstrip().startswith("```"):
        return code.strip()
    return f"```python\n{code}\n```"


def _drop_suffix(text: str, suffixes: Sequence[str]) -> str:
    """Strip, then drop trailing stop strings an engine may have left in (parse is idempotent)."""
    text = text.strip()
    ordered = sorted(suffixes, key=len, reverse=True)
    while suffix := next((s for s in ordered if text.endswith(s)), None):
        text = text[: -len(suffix)].rstrip()
    return text


def _failed(text: str, message: str) -> ParsedStep:
    return ParsedStep(text=text, thought="", error=message)


# ------------------------------------------------------------------------------------ react_sft

# The original's code regex: `<code>`, whitespace, then everything up to the LAST fence that
# follows whitespace; the capture keeps the fences.
_SFT_CODE = re.compile(r"<code>\s*(.*\s```)", re.DOTALL)
_SFT_ANSWER = re.compile(r"Final Answer:\s*(.*)</p>", re.DOTALL)
_SFT_THOUGHT = re.compile(
    r"\s*(?:<step>\s*)?(?:<p>\s*)?(.*?)(?:\s*</p>)?(?:\s*<p>)?\s*", re.DOTALL
)


def _sft_thought(prefix: str) -> str:
    """The analysis inside ``<step>\\n<p>\\n…\\n</p>``, without tags or outer whitespace."""
    match = _SFT_THOUGHT.fullmatch(prefix)
    return match.group(1) if match else prefix.strip()


def _code_body(block: str) -> str:
    """What the executor would run: fences, a leading ``python`` tag and whitespace removed."""
    body = block.strip().strip("`").strip()
    return body.removeprefix("python").strip()


class ReactSftFormat:
    """The XML format of §1.2 (rounds ≥ 2 and every released model)."""

    name: str = "react_sft"
    stop: tuple[str, ...] = ("\n</code>", "</code>", "</step>")
    delimiter: str = "\n"

    def build_prompt(
        self, question: str, steps: Sequence[str], *, rng: random.Random | None = None
    ) -> str:
        """``rng`` is unused (no few-shot examples); accepted so the formats are interchangeable."""
        partial = "".join(step + self.delimiter for step in steps) if steps else ""
        return f"<question> {question} </question>\n{partial}"

    def value_prompt(self, question: str, steps: Sequence[str]) -> str:
        """Same bytes as the generation prompt: it ends with the "\\n" after ``</step>``, where the
        value head is trained and read (§1.2)."""
        return self.build_prompt(question, steps)

    def parse(self, generated: str) -> ParsedStep:
        # 1) normalise: the engine strips the stop string, but tolerate one left in
        text = _drop_suffix(generated, self.stop)
        includes_answer = FINAL_ANSWER in text
        code_match = _SFT_CODE.search(text)
        # 2) code step
        if code_match:
            if includes_answer:
                return _failed(text, "step has both code and a final answer")
            block = code_match.group(1).strip(" ").strip('"')
            if not _code_body(block):
                return _failed(text, "code block is empty or lacks its closing fence")
            return ParsedStep(
                text=f"{text}\n</code>",
                thought=_sft_thought(text[: code_match.start()]),
                code=block,
                action=CODE_ACTION,
            )
        # 3) answer step: between the first "Final Answer:" and the last "</p>"
        if includes_answer:
            answer_match = _SFT_ANSWER.search(text)
            if answer_match:
                raw = answer_match.group(1)
            else:
                raw = text.rsplit(FINAL_ANSWER, 1)[-1]
            answer = _strip_dollars(raw.strip())
            if not answer:
                return _failed(text, "empty final answer")
            return ParsedStep(
                text=f"{text}\n</step>",
                thought=_sft_thought(text[: text.index(FINAL_ANSWER)]),
                final_answer=answer,
            )
        return _failed(text, "step has neither code nor a final answer")

    def with_observation(self, step: ParsedStep, observation: str) -> str:
        """Node text of an executed code step; the observation is stripped as the original's
        caller does, so passing an already stripped one changes nothing."""
        if not step.is_code:
            raise ValueError("only a parsed code step takes an observation")
        return f"{step.text}\n<output>\n{observation.strip()}\n</output>\n</step>"

    def format_step(
        self, thought: str, *, code: str | None = None, final_answer: str | None = None
    ) -> str:
        """What the model generates before its stop string; ``code`` is bare python (or an
        already fenced block)."""
        head = f"<step>\n<p>\n{thought}\n</p>\n"
        if (code is None) == (final_answer is None):
            raise ValueError("a react_sft step has exactly one of code and final_answer")
        if code is not None:
            return f"{head}<code>\n{_fence(code)}"
        return f"{head}<p>\n{FINAL_ANSWER} {final_answer}\n</p>\n"


# ---------------------------------------------------------------------------------------- react

# The original's action regex: "Action:", the name, "Action Input:", the rest.
_REACT_ACTION = re.compile(r"Action:\s*(.*?)\s*Action Input:\s*(.*)", re.DOTALL)
_OBSERVATION = "Observation: "


def _react_thought(prefix: str) -> str:
    return prefix.strip().removeprefix("Thought:").strip()


class ReactFewShotFormat:
    """The round-1 few-shot format of §1.1, for a base model that has never seen the XML."""

    name: str = "react"
    stop: tuple[str, ...] = ("\nObservation:", "Observation:", "<Solution complete>")
    delimiter: str = "\n\n"

    def __init__(
        self,
        examples: Sequence[str] = react_prompts.EXAMPLES,
        instructions: str = react_prompts.INSTRUCTIONS,
        num_few_shot: int = 2,
    ) -> None:
        if not 1 <= num_few_shot <= len(examples):
            raise ValueError(f"num_few_shot={num_few_shot} needs 1..{len(examples)} examples")
        self.examples = tuple(examples)
        self.instructions = instructions
        self.num_few_shot = num_few_shot

    def build_prompt(
        self, question: str, steps: Sequence[str], *, rng: random.Random | None = None
    ) -> str:
        """Examples are sampled per prompt as in the original; ``rng=None`` takes the first ones
        so that a prompt can be rebuilt byte for byte (tests, value prompts)."""
        k = self.num_few_shot
        chosen = rng.sample(self.examples, k) if rng is not None else list(self.examples[:k])
        prefix = (
            f"The following are {k} demonstration examples."
            if k > 1
            else "The following is a demonstration example."
        )
        suffix = f"Now! It's your turn.\n\nQuestion: {question}{self.delimiter}"
        if steps:
            suffix += self.delimiter.join(steps) + self.delimiter
        return self.delimiter.join([self.instructions, prefix, *chosen, suffix])

    def value_prompt(self, question: str, steps: Sequence[str]) -> str:
        """The generation prompt with the fixed first examples: a state's value must not depend
        on which demonstrations happened to be drawn."""
        return self.build_prompt(question, steps)

    def parse(self, generated: str) -> ParsedStep:
        text = _drop_suffix(generated, self.stop)
        includes_answer = FINAL_ANSWER in text
        action_match = _REACT_ACTION.search(text)
        # 1) a tool step (python or the explicit no-op "None")
        if action_match:
            if includes_answer:
                return _failed(text, "step has both an action and a final answer")
            action = action_match.group(1).strip()
            thought = _react_thought(text[: action_match.start()])
            if action == NO_ACTION:
                return ParsedStep(text=text, thought=thought, action=NO_ACTION)
            if action != CODE_ACTION:
                return _failed(text, f"unknown action {action!r}")
            code = action_match.group(2).strip(" ").strip('"')
            if not _code_body(code):
                return _failed(text, "empty Action Input")
            return ParsedStep(text=text, thought=thought, code=code, action=CODE_ACTION)
        # 2) an answer: whatever follows the last "Final Answer:"
        if includes_answer:
            prefix, _, raw = text.rpartition(FINAL_ANSWER)
            answer = _strip_dollars(raw.strip())
            if not answer:
                return _failed(text, "empty final answer")
            return ParsedStep(text=text, thought=_react_thought(prefix), final_answer=answer)
        return _failed(text, "step has neither an action nor a final answer")

    def with_observation(self, step: ParsedStep, observation: str) -> str:
        """Node text after a tool step; for ``Action: None`` pass ``NO_ACTION_OBSERVATION``."""
        if step.error is not None or (not step.is_code and step.action != NO_ACTION):
            raise ValueError("only a parsed tool step takes an observation")
        return f"{step.text}{self.delimiter}{_OBSERVATION}{observation.strip()}"

    def format_step(
        self, thought: str, *, code: str | None = None, final_answer: str | None = None
    ) -> str:
        """What the model generates before its stop string; neither code nor answer gives the
        ``Action: None`` step."""
        head = f"Thought: {thought}\n\n"
        if code is not None and final_answer is not None:
            raise ValueError("a react step cannot have both code and final_answer")
        if code is not None:
            return f"{head}Action: {CODE_ACTION}\n\nAction Input: {_fence(code)}\n"
        if final_answer is not None:
            return f"{head}{FINAL_ANSWER} {final_answer}\n"
        return f"{head}Action: {NO_ACTION}\n\nAction Input: {NO_ACTION}\n"


FORMATS: dict[str, ReactFormat] = {
    "react_sft": ReactSftFormat(),
    "react": ReactFewShotFormat(),
}


def get_format(name: str) -> ReactFormat:
    """Look a format up by its config name (§6 ``prompt_wrap``)."""
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise ValueError(f"unknown step format {name!r}; known: {known}") from None
