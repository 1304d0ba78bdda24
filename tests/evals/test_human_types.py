"""Every `human_type` of the MATH annotation, each with equivalent and non-equivalent predictions.

References are real MATH answers (or their shape); each row: (reference, prediction, expected).
All rows of a type are graded in one `grade_many` batch (fast), and checked one by one on failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evals import Grader

pytestmark = pytest.mark.timeout(120)

Row = tuple[str, str, bool]

CASES: dict[str, list[Row]] = {
    "Real": [
        ("2", "2", True), ("2", "2.0", True), ("2", "+2", True), ("18", "18.00", True),
        ("0.5", ".5", True), ("-3", "-3.0", True), ("1,000", "1000", True),
        ("10,\\!080", "10080", True), ("\\frac{1}{2}", "0.5", True), ("\\frac{7}{8}", "0.875", True),
        ("-\\frac{1}{2}", "\\frac{-1}{2}", True), ("\\frac{1}{2}", "1/2", True),
        ("\\frac{3}{2}", "1\\frac{1}{2}", True), ("\\sqrt{8}", "2\\sqrt{2}", True),
        ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True), ("4\\pi", "4 \\pi", True),
        ("\\$23.40", "23.4", True), ("25\\%", "0.25", True), ("90^\\circ", "90", True),
        ("\\frac{5}{2}", "2.5", True), ("3\\sqrt{5}", "\\sqrt{45}", True),
        ("1.5 \\times 10^{4}", "15000", True), ("\\text{5}", "5", True), ("6", "$6$", True),
        ("2", "3", False), ("2", "-2", False), ("0.5", "0.05", False), ("1,000", "100", False),
        ("\\frac{1}{2}", "\\frac{1}{3}", False), ("\\frac{1}{3}", "0.33", False),
        ("\\sqrt{8}", "2\\sqrt{3}", False), ("4\\pi", "4", False), ("\\$23.40", "23.41", False),
        ("25\\%", "0.5", False), ("16386.16", "16386.17", False), ("3", "3.0005", False),
        ("\\sqrt{2}", "1.41", False), ("\\pi", "3.14", False), ("10", "1", False),
    ],
    "Expression": [
        ("x^2 + 2x + 1", "(x+1)^2", True), ("6r^2 - 4r - 24", "2(3r^2 - 2r - 12)", True),
        ("\\frac{x+1}{2}", "\\frac{1}{2}x + \\frac{1}{2}", True), ("2x^2 - 18", "2(x-3)(x+3)", True),
        ("a^2 b", "b a^2", True), ("\\sqrt{x^2}", "|x|", True), ("10\\sqrt{2}", "\\sqrt{200}", True),
        ("4x(8x^2 - x + 5)", "32x^3 - 4x^2 + 20x", True), ("\\frac{1}{y} + y", "\\frac{1 + y^2}{y}", True),
        ("26\\pi", "26 \\pi", True), ("(r+5)^3", "r^3 + 15r^2 + 75r + 125", True),
        ("x^3 + 3x - 6", "3x + x^3 - 6", True),
        ("x^2 + 2x + 1", "(x-1)^2", False), ("6r^2 - 4r - 24", "6r^2 - 4r - 25", False),
        ("\\frac{x+1}{2}", "\\frac{x+1}{3}", False), ("2x^2 - 18", "2(x-3)^2", False),
        ("a^2 b", "a b^2", False), ("10\\sqrt{2}", "10\\sqrt{3}", False),
        ("4x(8x^2 - x + 5)", "4x(8x^2 - x + 6)", False), ("\\frac{1}{y} + y", "-\\frac{1}{y} + y", False),
        ("26\\pi", "27\\pi", False), ("(r+5)^3", "(r+5)^2", False),
        ("x^3 + 3x - 6", "x^3 + 3x - 7", False), ("x + 1", "x", False),
    ],
    "Vector": [
        ("(3, -5)", "(3,-5)", True), ("(1, 2)", "\\left(1, 2\\right)", True),
        ("\\left(\\tfrac32, -\\tfrac52\\right)", "\\left(\\frac{3}{2}, -\\frac{5}{2}\\right)", True),
        ("(0.5, 2)", "(\\frac12, 2)", True), ("(2, 1)", "(2.0, 1.0)", True),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
        ("\\begin{pmatrix} 3 \\\\ -1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 3 & -1 & 2 \\end{pmatrix}", True),
        ("(1, \\sqrt{2})", "(1, 2^{1/2})", True), ("(2, 3, 4)", "x=2, y=3, z=4", True),
        ("(-1, 6)", "(-1,6)", True), ("(9, 11)", "( 9 , 11 )", True),
        ("(3, -5)", "(-5, 3)", False), ("(1, 2)", "(1, 3)", False), ("(9, 11)", "(11, 9)", False),
        ("(0.5, 2)", "(0.5, -2)", False), ("(2, 3, 4)", "(2, 3)", False),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}2\\\\1\\end{pmatrix}", False),
        ("\\begin{pmatrix} 3 \\\\ -1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 3 \\\\ 1 \\\\ 2 \\end{pmatrix}", False),
        ("(1, \\sqrt{2})", "(1, \\sqrt{3})", False), ("(-1, 6)", "(-1, 7)", False),
        ("(1, 2)", "[1, 2]", False),
    ],
    "Set": [
        ("\\{1, 2\\}", "\\{2, 1\\}", True), ("1, 2, 3", "3, 2, 1", True), ("-2, 1", "1, -2", True),
        ("\\{-3, 3\\}", "\\pm 3", True), ("2 \\text{ and } 5", "5, 2", True),
        ("\\{1, 2, 3\\}", "\\{3,2,1\\}", True), ("-\\frac{1}{2}, 3", "3, -0.5", True),
        ("1 + \\sqrt{2}, 1 - \\sqrt{2}", "1 - \\sqrt{2}, 1 + \\sqrt{2}", True),
        ("\\{0, 1\\}", "\\left\\{ 0, 1 \\right\\}", True), ("5, -5", "-5, 5", True),
        ("\\{1, 2\\}", "\\{1, 3\\}", False), ("\\{1, 2, 3\\}", "\\{1, 2\\}", False),
        ("-2, 1", "-2, 2", False), ("\\{-3, 3\\}", "3", False), ("2, 5", "2, 5, 7", False),
        ("-\\frac{1}{2}, 3", "\\frac{1}{2}, 3", False), ("5, -5", "5", False),
        ("1 + \\sqrt{2}, 1 - \\sqrt{2}", "1 + \\sqrt{2}, -1 - \\sqrt{2}", False),
        ("\\{0, 1\\}", "\\{0, 2\\}", False), ("1, 2, 3", "1, 2, 4", False),
    ],
    "Matrix": [
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
        ("\\begin{pmatrix} 1/2 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} 0.5 & 0 \\\\ 0 & 1 \\end{pmatrix}", True),
        ("\\begin{pmatrix} 2 & 0 \\\\ 0 & 2 \\end{pmatrix}", "\\begin{bmatrix} 2 & 0 \\\\ 0 & 2 \\end{bmatrix}", True),
        ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\left(\\begin{matrix} -1 & 0 \\\\ 0 & -1 \\end{matrix}\\right)", True),
        ("\\begin{pmatrix} \\frac{1}{2} & \\frac{\\sqrt{3}}{2} \\\\ 0 & 1 \\end{pmatrix}",
         "\\begin{pmatrix} \\dfrac{1}{2} & \\dfrac{\\sqrt{3}}{2} \\\\ 0 & 1 \\end{pmatrix}", True),
        ("\\begin{pmatrix} 0 & 1 \\\\ 1 & 0 \\end{pmatrix}", "\\begin{pmatrix} 0 & 1 \\\\ 1 & 0 \\end{pmatrix}", True),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", False),
        ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&3\\\\2&4\\end{pmatrix}", False),
        ("\\begin{pmatrix} 1/2 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} 0.5 & 0 \\\\ 0 & -1 \\end{pmatrix}", False),
        ("\\begin{pmatrix} 2 & 0 \\\\ 0 & 2 \\end{pmatrix}", "\\begin{pmatrix} 2 & 0 & 0 & 2 \\end{pmatrix}", False),
        ("\\begin{pmatrix} 0 & 1 \\\\ 1 & 0 \\end{pmatrix}", "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", False),
        ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "-1", False),
    ],
    "Interval": [
        ("[1, 2)", "[1,2)", True), ("(-\\infty, 3]", "(-\\infty,3]", True),
        ("x \\in [2, 5)", "[2, 5)", True), ("[-3, 2]", "\\left[-3, 2\\right]", True),
        ("(-\\infty, -\\frac12) \\cup (-\\frac13, \\infty)", "(-\\infty,-0.5)\\cup(-\\frac{1}{3},\\infty)", True),
        ("[0, 1)", "[0, 1)", True), ("(2, \\infty)", "(2,\\infty)", True),
        ("[\\frac{1}{2}, \\frac{4}{3}]", "[0.5, \\frac43]", True), ("(-\\infty, 0) \\cup (0, \\infty)", "(-\\infty,0)\\cup(0,\\infty)", True),
        ("[1, 2)", "(1, 2)", False), ("[1, 2)", "[1, 2]", False), ("(-\\infty, 3]", "(-\\infty, 3)", False),
        ("[-3, 2]", "(-3, 2]", False), ("[0, 1)", "(0, 1)", False), ("(2, \\infty)", "[2, \\infty)", False),
        ("[\\frac{1}{2}, \\frac{4}{3}]", "[\\frac{1}{2}, \\frac{4}{4}]", False), ("x \\in [-2, 7]", "[-2, 8]", False),
        ("(-\\infty, -\\frac12) \\cup (-\\frac13, \\infty)", "(-\\infty,-0.5]\\cup(-\\frac{1}{3},\\infty)", False),
    ],
    "Complex": [
        ("2 + 3i", "3i + 2", True), ("-11 + 27i", "-11+27i", True), ("\\frac{i}{5}", "\\frac{1}{5}i", True),
        ("1 - i", "-i + 1", True), ("\\frac{1}{2} + \\frac{\\sqrt{3}}{2}i", "0.5 + \\frac{\\sqrt{3}}{2} i", True),
        ("-i", "-1 \\cdot i", True), ("3 - 4i", "3-4i", True), ("i", "1i", True),
        ("\\frac{i}{5}", "0.2i", True), ("i", "\\sqrt{-1}", True),
        ("2 + 3i", "2 - 3i", False), ("-11 + 27i", "-11 + 28i", False), ("\\frac{i}{5}", "-\\frac{i}{5}", False),
        ("1 - i", "1 + i", False), ("-i", "i", False), ("3 - 4i", "4 - 3i", False), ("i", "1", False),
        ("\\frac{1}{2} + \\frac{\\sqrt{3}}{2}i", "\\frac{1}{2} - \\frac{\\sqrt{3}}{2}i", False),
    ],
    "Equation": [
        ("y = 2x + 3", "y=2x+3", True), ("x + y = 1", "-x - y = -1", True), ("x + y = 1", "y = 1 - x", True),
        ("y = -\\frac{1}{2}x + 3", "y = -0.5x + 3", True), ("x^2 + y^2 = 25", "y^2 + x^2 = 25", True),
        ("2x - y = 4", "y = 2x - 4", True), ("y = 2x + 3", "y = 2x + 4", False),
        ("x + y = 1", "x - y = 1", False), ("y = -\\frac{1}{2}x + 3", "y = \\frac{1}{2}x + 3", False),
        ("x^2 + y^2 = 25", "x^2 + y^2 = 5", False), ("2x - y = 4", "y = 2x + 4", False),
        ("y = 2x + 3", "2x + 4", False),
    ],
    "Function": [
        ("f(x) = 2x + 1", "2x + 1", True), ("y = -2x", "-2x", True), ("f^{-1}(x) = \\frac{x - 1}{2}", "\\frac{x-1}{2}", True),
        ("2x + 1", "f(x) = 1 + 2x", True), ("y = x^2", "y = x \\cdot x", True), ("g(x) = \\sqrt{x}", "x^{1/2}", True),
        ("f(x) = 2x + 1", "2x - 1", False), ("y = -2x", "2x", False), ("f^{-1}(x) = \\frac{x - 1}{2}", "\\frac{x+1}{2}", False),
        ("2x + 1", "f(x) = 2x", False), ("y = x^2", "y = x^3", False), ("g(x) = \\sqrt{x}", "x^2", False),
    ],
    "Inequality": [
        ("x < 3", "3 > x", True), ("x \\le 3", "x \\leq 3", True), ("x > -2", "-2 < x", True),
        ("x \\ge 0", "0 \\le x", True), ("x < 3", "x \\le 3", False), ("x \\le 3", "x \\ge 3", False),
        ("x > -2", "x > 2", False), ("x \\ge 0", "x > 0", False),
    ],
    "Others": [
        ("\\text{(C)}", "C", True), ("\\text{(C)}", "(C)", True), ("\\text{Monday}", "Monday", True),
        ("\\text{Evelyn}", "evelyn", True), ("\\text{east}", "East", True), ("\\text{odd}", "odd", True),
        ("\\text{(A)}", "\\text{(A)}", True), ("\\text{A, C}", "A, C", True),
        ("\\text{(C)}", "D", False), ("\\text{Monday}", "Tuesday", False), ("\\text{Evelyn}", "Bob", False),
        ("\\text{east}", "west", False), ("\\text{odd}", "even", False), ("\\text{(A)}", "(B)", False),
        ("\\text{yes}", "Yes", True), ("\\text{no}", "yes", False), ("\\text{(E)}", "E", True),
        ("\\text{(E)}", "\\text{(D)}", False),
    ],
}

ROWS = [(t, r, p, e) for t, rows in CASES.items() for r, p, e in rows]


# Known gaps, kept visible: math-verify (our parser) reads these differently from MARIO_EVAL.
KNOWN_GAPS: list[Row] = [
    ("(-\\infty, 0) \\cup (0, \\infty)", "x \\neq 0", True),  # ≠ as a set: one direction only
]


@pytest.mark.parametrize(("reference", "prediction", "expected"), KNOWN_GAPS)
@pytest.mark.xfail(strict=True, reason="known gap, see KNOWN_GAPS")
def test_known_gaps(grader: Grader, reference: str, prediction: str, expected: bool) -> None:
    assert grader.is_equiv(reference, prediction) is expected


def test_at_least_200_cases_and_both_verdicts_per_type() -> None:
    assert len(ROWS) >= 200
    for htype, rows in CASES.items():
        assert {e for _, _, e in rows} == {True, False}, htype


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(max_workers=2) as g:
        yield g


@pytest.mark.parametrize("htype", sorted(CASES))
def test_human_type(grader: Grader, htype: str) -> None:
    rows = CASES[htype]
    verdicts = grader.grade_many([(r, p) for r, p, _ in rows])
    wrong = [(r, p, e) for (r, p, e), v in zip(rows, verdicts) if v is not e]
    assert wrong == []
