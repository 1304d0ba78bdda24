from __future__ import annotations

import pytest

from evals import extract_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # --- AlphaMath "Final Answer:" -------------------------------------------------------
        ("Thought: easy.\nFinal Answer: 42", "42"),
        ("Final Answer: $\\frac{1}{2}$", "\\frac{1}{2}"),
        ("<p>\nFinal Answer: 7\n</p>", "7"),
        ("<p>Final Answer: $x^2$</p>\n<Solution complete>", "x^2"),
        ("Final Answer: 3\n<Solution complete>", "3"),
        ("Final Answer: 1\nwait, no.\nFinal Answer: 2", "2"),  # last one wins
        ("Final Answer: \\boxed{5}", "\\boxed{5}"),  # left for the grader, which reads \boxed
        ("Final Answer: $5$ and $6$", "$5$ and $6$"),  # not one surrounding pair: kept
        # --- \boxed / \fbox, nested braces -------------------------------------------------
        ("so \\boxed{12}.", "12"),
        ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not count
        ("first \\boxed{1} then \\fbox{2}", "2"),
        ("\\boxed{3} then \\boxed{4} done", "4"),
        ("\\boxed{3} then \\boxed{unclosed", "3"),  # an unclosed last box falls back
        ("$\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}$",
         "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
        # --- "The answer is" ---------------------------------------------------------------
        ("Thus, the answer is 3.5.", "3.5"),
        ("The answer is $\\pi$.\nThanks", "\\pi"),
        ("The answer is 1. Actually the answer is 2.", "2"),
        ("The final answer is: 10", "10"),
        # --- GSM8K ####  --------------------------------------------------------------------
        ("She pays 5 * 2 = 10.\n#### 1,234", "1,234"),
        ("#### 1\n#### 2", "2"),
        # --- preference order: Final Answer > boxed > answer is > #### --------------------
        ("\\boxed{1}\nFinal Answer: 2", "2"),
        ("The answer is 1. \\boxed{2}", "2"),
    ],
)
def test_extract(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "no answer here", "\\boxed{never closed", "Final Answer:   ", "####", "The answer is"],
)
def test_nothing_found(text: str) -> None:
    assert extract_answer(text) is None


def test_long_text_is_fast() -> None:
    text = "\\boxed{" * 20_000 + "x"  # many unclosed boxes: still linear enough
    assert extract_answer(text[:40_000]) is None


def test_bytes() -> None:
    assert extract_answer("Final Answer: 4".encode()) == "4"
    with pytest.raises(ValueError, match="not UTF-8"):
        extract_answer(b"Final Answer: \xff\xfe")
    assert extract_answer(None) is None  # type: ignore[arg-type]
