"""Pull the final answer out of a model's output text.

A basic extractor; formats are tried in this order and, within a format, the LAST occurrence
wins (models restate and correct themselves):

1. `Final Answer: …` (AlphaMath's ReAct format), cut at a following `</p>` and end of line;
2. `\\boxed{…}` / `\\fbox{…}` with nested braces balanced;
3. `The answer is …` up to the end of the line, without a trailing period;
4. GSM8K's `#### n`.

One surrounding `$…$` is stripped from the result. `None` when no format matches (or for a
non-string). Bytes are decoded as UTF-8; bytes that are not UTF-8 raise a `ValueError` saying so.
"""

from __future__ import annotations

import re

__all__ = ["extract_answer"]

_FINAL = "Final Answer:"
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS_RE = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s+is\b[ \t]*:?", re.IGNORECASE)
_HASHES_RE = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)


def extract_answer(text: str | bytes) -> str | None:
    """The final answer in `text`, or None when none of the known formats is present."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"extract_answer: text is not UTF-8 ({exc.reason} at byte "
                             f"{exc.start})") from exc
    if not isinstance(text, str) or not text:
        return None
    for finder in (_final_answer, _boxed, _answer_is, _hashes):
        found = finder(text)
        if found is not None:
            found = _strip_dollars(found.strip())
            if found:
                return found
    return None


def _final_answer(text: str) -> str | None:
    at = text.rfind(_FINAL)
    if at < 0:
        return None
    rest = text[at + len(_FINAL):]
    end = rest.find("</p>")
    if end >= 0:
        rest = rest[:end]
    rest = rest.strip()
    # The answer is one line; anything after it (e.g. "<Solution complete>") is not part of it.
    return rest.split("\n", 1)[0] if rest else None


def _boxed(text: str) -> str | None:
    boxes = list(_BOX_RE.finditer(text))
    if not boxes:
        return None
    closing = _brace_pairs(text)
    for m in reversed(boxes):
        open_at = m.end() - 1
        if open_at in closing:
            return text[m.end():closing[open_at]]
    return None


def _brace_pairs(text: str) -> dict[int, int]:
    """Position of each `{` -> position of its matching `}` (one linear pass; escaped braces
    `\\{` `\\}` do not count; unclosed braces are absent)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return None
    line = text[matches[-1].end():].split("\n", 1)[0].strip()
    if line.endswith(".") and not line.endswith(".."):
        line = line[:-1]
    return line


def _hashes(text: str) -> str | None:
    matches = _HASHES_RE.findall(text)
    return matches[-1] if matches else None


def _strip_dollars(s: str) -> str:
    if len(s) >= 2 and s.startswith("$") and s.endswith("$") and "$" not in s[1:-1]:
        return s[1:-1].strip()
    return s
