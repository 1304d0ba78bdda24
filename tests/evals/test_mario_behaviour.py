"""The behaviours of MARIO_EVAL's 15 test categories (ALPHAMATH.md §8), as small cases.

Each row: (reference, prediction, expected). Rows where we deliberately differ from MARIO_EVAL
are in `PAPER_ONLY` (checked with `paper_faithful=True`) and `DELIBERATE` (our default).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evals import Grader

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(max_workers=2) as g:
        yield g


CASES: list[tuple[str, str, bool]] = [
    # 1) sympy set and complex ------------------------------------------------------------------
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}", True),
    ("\\{1, 2, 3\\}", "\\{1, 2\\}", False),
    ("\\{-1+i, -1-i\\}", "\\{-1-i, -1+i\\}", True),
    ("\\{-1+i, -1-i\\}", "\\{-1+i, 1-i\\}", False),
    # 2) real numbers and lists -----------------------------------------------------------------
    ("10,\\!000", "10000", True),  # thousands separator with \!
    ("10{,}000", "10000", True),
    ("1,234,567", "1234567", True),
    ("7\\frac{3}{4}", "7.75", True),  # mixed number
    ("7 3/4", "\\frac{31}{4}", True),
    ("-2\\frac{1}{2}", "-2.5", True),
    ("11_2", "3", True),  # base subscript: value reading
    ("1011_2", "11_{10}", True),  # both subscripted: values compare
    ("152A_{11}", "152A_{12}", False),  # same digits, other base: not the digits reading
    ("11_2", "11_3", False),
    ("11_2", "11", True),  # ... and digits reading
    ("1011_{2}", "11", True),
    ("11_2", "4", False),
    ("50\\%", "0.5", True),  # percent: both readings
    ("50\\%", "50", True),
    ("50\\%", "5", False),
    ("1 \\text{ and } 2", "2, 1", True),  # "and" list, unordered
    ("3 and 4", "4, 3", True),
    ("1, 2, 3", "3, 2, 1", True),  # bare list: unordered
    ("(1, 2)", "(2, 1)", False),  # tuple: ordered
    ("(1, 2)", "[1, 2]", False),  # the bracket type matters
    ("1, 2", "1, 3", False),
    # 3) complex numbers with i -----------------------------------------------------------------
    ("2 + 3i", "3i + 2", True),
    ("2 + 3i", "2 - 3i", False),
    ("\\frac{1}{2} - \\frac{\\sqrt{3}}{2} i", "0.5 - \\frac{\\sqrt3}{2}i", True),
    ("-i", "i", False),
    # 4) fractions --------------------------------------------------------------------------------
    ("\\tfrac{1}{2}", "\\frac12", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\frac{3}{\\sqrt{3}}", "\\sqrt3", True),
    ("\\frac{1}{3}", "0.3333333", True),
    ("\\frac{1}{3}", "0.3", False),
    # 5) units ------------------------------------------------------------------------------------
    ("10\\text{ cm}^2", "10", True),
    ("10 \\text{ weeks}", "10", True),
    ("10 weeks", "10", True),
    ("10 cm^2", "10", True),
    ("\\$10", "10", True),
    ("\\$10.50", "10.5", True),
    ("5\\text{ dollars}", "5", True),
    ("10 \\text{ cm}", "11", False),
    ("8:30", "8:30", True),
    ("8 pm", "20:00", True),  # clock times: [h, m], pm both readings
    ("8:30 \\text{ a.m.}", "8:30", True),
    # 6) \left / \right ---------------------------------------------------------------------------
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("\\left[ 0, 1 \\right)", "[0, 1)", True),
    ("\\left\\{ 1, 2 \\right\\}", "\\{2, 1\\}", True),
    ("\\left( 1, 2 \\right)", "(1, 3)", False),
    # 7) sqrt shorthand ---------------------------------------------------------------------------
    ("\\sqrt2", "\\sqrt{2}", True),
    ("2\\sqrt3", "\\sqrt{12}", True),
    ("\\sqrt3", "\\sqrt{2}", False),
    # 8) equations ----------------------------------------------------------------------------------
    ("x + y = 1", "-x - y = -1", True),  # up to sign
    ("x + y = 1", "y = 1 - x", True),
    ("x + y = 1", "x + y = 2", False),
    ("y = 2x + 3", "y = 3x + 2", False),
    ("x^2 + y^2 = 4", "x^2 + y^2 = 2", False),
    # 9) expressions --------------------------------------------------------------------------------
    ("x^2 + 2x + 1", "(x + 1)^2", True),
    ("\\frac{x^2 - 1}{x - 1}", "x + 1", True),
    ("a(b + c)", "ab + ac", True),
    ("x^2 + 2x + 1", "(x - 1)^2", False),
    # 10) matrices ----------------------------------------------------------------------------------
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{pmatrix} 0.5 \\\\ 1 \\end{pmatrix}", "\\begin{pmatrix} \\frac12 \\\\ 1 \\end{pmatrix}", True),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}", True),  # row = column
    ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\4&3\\end{pmatrix}", False),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", False),
    # 11) trigonometry -----------------------------------------------------------------------------
    ("\\sec x", "\\frac{1}{\\cos x}", True),
    ("\\sin(90^\\circ - x)", "\\cos x", True),
    ("\\sin^2 x + \\cos^2 x", "1", True),
    ("\\sin x", "\\cos x", False),
    ("30^\\circ", "\\frac{\\pi}{6}", True),  # degrees: both readings
    ("30^\\circ", "30", True),
    ("30^{\\circ}", "60", False),
    # 12) scientific notation ----------------------------------------------------------------------
    ("1.5 \\times 10^{3}", "1500", True),
    ("3 \\times 10^{-2}", "0.03", True),
    ("2 \\text{ million}", "2000000", True),
    ("1.5 \\times 10^{3}", "150", False),
    # 13) intervals --------------------------------------------------------------------------------
    ("x \\in [2, 5)", "[2, 5)", True),
    ("(-\\infty, 3]", "(-\\infty, 3]", True),
    ("(-\\infty, 3]", "(-\\infty, 3)", False),  # open/closed mismatch
    ("[1, 2) \\cup (3, 4]", "[1,2)\\cup(3,4]", True),
    ("[1, 2) \\cup (3, 4]", "[1,2]\\cup(3,4]", False),
    ("(0, \\infty)", "(0, \\infty]", True),  # sympy: an infinite end is always open
    # 14) coordinates ------------------------------------------------------------------------------
    ("(1, 2, 3)", "x = 1, y = 2, z = 3", True),
    ("(3, 4)", "(3,4)", True),
    ("(3, 4)", "(4, 3)", False),
    # 15) functions ---------------------------------------------------------------------------------
    ("f(x) = 2x + 1", "2x + 1", True),
    ("y = -2x", "-2x", True),
    ("2x + 1", "f(x) = 2x + 1", True),
    ("f(x) = 2x + 1", "2x - 1", False),
    # MARIO's other RUN examples ----------------------------------------------------------------
    ("\\text{(C)}", "C", True),
    ("\\text{(C)}", "D", False),
]


@pytest.mark.parametrize(("reference", "prediction", "expected"), CASES)
def test_mario_behaviour(grader: Grader, reference: str, prediction: str, expected: bool) -> None:
    assert grader.is_equiv(reference, prediction) is expected


# MARIO_EVAL's tolerance and quirks, only with paper_faithful=True ---------------------------------
PAPER_ONLY: list[tuple[str, str, bool, bool]] = [
    # (reference, prediction, paper_faithful verdict, our default verdict)
    ("\\sqrt2", "1.41", True, False),  # |diff| 0.0042 < 5e-3
    ("3", "3.0005", True, False),
    ("3", "3.01", False, False),
    ("1000", "1000.004", True, False),
    ("0.5", "0.5004", True, False),
    ("0.5", "0.5006", False, False),
    ("\\pi", "3.14", True, False),
    ("\\boxed{2}", "2", False, True),  # MARIO's parsers do not read \boxed
    ("\\sqrt2", "1.414214", True, True),
]


@pytest.mark.parametrize(("reference", "prediction", "faithful", "ours"), PAPER_ONLY)
def test_paper_faithful_switch(
    grader: Grader, reference: str, prediction: str, faithful: bool, ours: bool
) -> None:
    assert grader.is_equiv(reference, prediction, paper_faithful=True) is faithful
    assert grader.is_equiv(reference, prediction) is ours


def test_paper_faithful_grader_default() -> None:
    with Grader(max_workers=1, paper_faithful=True) as g:
        assert g.is_equiv("\\sqrt2", "1.41") is True
        assert g.is_equiv("\\sqrt2", "1.41", paper_faithful=False) is False
        assert g.grade_many([("3", "3.0005"), ("3", "3.01")]) == [True, False]


# --- MARIO's last resort: numeric agreement at test points --------------------------------------
def test_random_points_fallback() -> None:
    import sympy as sp

    from evals.equivalence import random_points_equal

    x, y = sp.symbols("x y")
    assert random_points_equal(sp.sin(x) ** 2 + sp.cos(x) ** 2 + x, 1 + x)  # an identity
    assert random_points_equal((x + 1) ** 3, x**3 + 3 * x**2 + 3 * x + 1)
    assert not random_points_equal(x - y, y - x)  # symbols get different values
    assert not random_points_equal(x + 1, x + 1.001)  # default: an identity, not an approximation
    assert random_points_equal(x + 1, x + 1.0001, paper_faithful=True)  # MARIO: |diff| < 1e-3
    assert not random_points_equal(x, y)  # different free symbols: not compared
    assert not random_points_equal(sp.Integer(2), sp.Integer(2))  # no symbols: not this rule
