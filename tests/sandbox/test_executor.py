"""The in-sandbox executor's observation semantics, called in-process (no rlimits, no bwrap).

Expected strings are AlphaMath's (ALPHAMATH.md §1.3, checked against the original
`python_tool.py` logic): the released model was trained on exactly these observations.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.executor import (
    BoundedCapture,
    execute,
    new_namespace,
    postprocess,
    print_statement_indices,
    run_snippet,
    sanitize,
)


def observation(code: str, history: list[str] | None = None) -> str:
    # Prints outside the captured statement leak to the real stdout in the original; swallow
    # them here so the test output stays clean.
    with redirect_stdout(io.StringIO()):
        stdout, error = execute(history or [], code)
    return error if error is not None else stdout


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        # REPL style: a bare last expression is the output; non-str values are NOT rounded.
        ("1/3", "0.3333333333333333"),
        ("x = [1, 2]\nx", "[1, 2]"),
        ("'abc'", "abc"),
        # A printed float is rounded to 4 decimals when that is not longer.
        ("print(1/3)", "0.3333"),
        ("print(123456.789012)", "123456.789"),
        ("print(1e-7)", "0.0"),
        ("print(2)", "2"),  # "2.0\n" would be longer: kept
        ("'123456.789012'", "123456.789"),  # a str value is rounded too
        # A non-final lone print is lost (it leaks to the real stdout).
        ("print(1)\nx=2", ""),
        ("x = 5", ""),
        # >= 2 prints: one segment per print, labelled with the print's argument source.
        ("a=2;print(a);b=a*3;print(b)", "a: 2\nb: 6"),
        ("print('x', 3)\nprint(2.50000001)", "'x', 3: x 3\n2.50000001: 2.5"),
        ("def f(x): return x\nprint(f(2))\nprint(f(3))", "f(2: 2\nf(3: 3"),  # non-greedy regex
        ("for i in range(2):\n    print(i)\nprint('done')", "i: 0\n1\n'done': done"),
        ("if True:\n    if True:\n        print(5)\nprint(6)", "5: 5\n6: 6"),
        ("print(1)\nprint(2)\nprint(undefined_after)", "NameError: name 'undefined_after' is not defined"),
        # Statements after the last of >= 2 prints never run.
        ("print(1)\nprint(2)\nraise ValueError('never')", "1: 1\n2: 2"),
        # A print inside `with` is not a "print statement": 1 print, whole body, last captured.
        ("with open('/dev/null') as f:\n    print(1)\nprint(2)", "2"),
        # Errors: type and message only, partial output discarded.
        ("x", "NameError: name 'x' is not defined"),
        ("print(1)\n1/0", "ZeroDivisionError: division by zero"),
        ("def f(:", "SyntaxError: invalid syntax (<unknown>, line 1)"),
        ("exit()", "SystemExit: None"),
        ("raise KeyboardInterrupt('stop')", "KeyboardInterrupt: stop"),
        # Fences and a leading `python` are stripped.
        ("```python\nprint(7)\n```", "7"),
        ("  \n```\nPython\nprint(3)\n```  ", "3"),
        ("", ""),
        # No pre-imported libraries: the model must import them itself.
        ("sympy.Rational(1, 3)", "NameError: name 'sympy' is not defined"),
        ("os.getcwd()", "NameError: name 'os' is not defined"),
        ("import sympy; sympy.Rational(1,3)+1", "4/3"),
        ("```python\nimport sympy as sp\nx = sp.Symbol('x')\nsp.solve(x**2 - 2, x)\n```", "[-sqrt(2), sqrt(2)]"),
        # Not `__main__`, as in the original (its globals were a library module's); the `if`
        # holds a print, so this is the two-segment path with an empty first segment.
        ("if __name__ == '__main__':\n    print('main')\nprint('end')", "'main': 'end': end"),
    ],
)
def test_alphamath_observations(code: str, expected: str) -> None:
    assert observation(code) == expected


def test_error_and_stdout_are_split() -> None:
    assert run_snippet("1/0", new_namespace()) == ("", "ZeroDivisionError: division by zero")
    assert run_snippet("print(3)", new_namespace()) == ("3", None)


def test_truncation_to_250_dots_250() -> None:
    out = observation("'a' * 300 + 'b' * 300")
    assert len(out) == 503
    assert out == "a" * 250 + "..." + "b" * 250


def test_exactly_500_chars_is_not_truncated() -> None:
    assert observation("'z' * 500") == "z" * 500


def test_printed_truncation_counts_the_newline_then_strips() -> None:
    # print adds "\n": 601 chars, the kept tail ends in "\n", which the final strip removes.
    assert observation("print('a' * 300 + 'b' * 300)") == "a" * 250 + "..." + "b" * 249


def test_long_digit_string_is_a_float() -> None:
    # The float check runs before truncation: 600 digits parse as a float (lossy, as original).
    assert observation("print('1' * 600)") == str(round(float("1" * 600), 4))


_NO_FLOAT = st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="0123456789")


@given(st.text(alphabet=_NO_FLOAT, min_size=501))
def test_truncation_property(text: str) -> None:
    # Printable, no whitespace (nothing is stripped), no digits (a long string cannot be a float).
    out = postprocess(text)
    assert len(out) == 503
    assert out == text[:250] + "..." + text[-250:]


def test_history_is_replayed_silently_in_one_namespace() -> None:
    history = ["x = 21", "print('noise')\n1/0", "y = x * 2"]
    assert observation("y", history) == "42"


def test_history_after_two_prints_drops_trailing_statements() -> None:
    # As in the original, a replayed snippet with >= 2 prints never runs what follows them.
    assert observation("z", ["print(1)\nprint(2)\nz = 3"]) == "NameError: name 'z' is not defined"


def test_functions_see_module_globals() -> None:
    # One dict for globals and locals (the original passed locals=None).
    assert observation("k = 3\ndef f():\n    return k * 2\nf()") == "6"


def test_last_statement_runs_twice_when_eval_fails() -> None:
    # eval of the last statement raises, so the original exec's it again (captured).
    code = "calls = []\ndef f():\n    calls.append(1)\n    return 1 / 0\ntry:\n    f()\nexcept Exception:\n    pass"
    namespace = new_namespace()
    with redirect_stdout(io.StringIO()):
        run_snippet(code, namespace)
    assert namespace["calls"] == [1]  # the `try` statement is not an expression: exec'd once
    with redirect_stdout(io.StringIO()):
        assert run_snippet("f()", namespace) == ("", "ZeroDivisionError: division by zero")
    assert namespace["calls"] == [1, 1, 1]  # eval, then exec again


def test_sanitize() -> None:
    assert sanitize("```python\nx = 1\n```\n") == "x = 1"
    assert sanitize("`` PYTHON x") == "x"
    # The original's regex also eats a `python` prefix of an identifier.
    assert sanitize("python_var = 1") == "_var = 1"


def test_print_statement_indices() -> None:
    import ast

    body = ast.parse(
        "print(1)\nx = 1\nfor i in []:\n    print(i)\nwhile False:\n    pass\n"
        "def f():\n    print(2)\nif x:\n    pass\nelse:\n    print(3)\nasync def g():\n    print(4)"
    ).body
    # `else` bodies and async defs are not searched, as in the original.
    assert print_statement_indices(body) == [0, 2, 4]


def test_bounded_capture_keeps_head_and_tail() -> None:
    capture = BoundedCapture(limit=1000, keep=300)
    for _ in range(100):
        capture.write("h" * 50)
    capture.write("T" * 300)
    value = capture.getvalue()
    assert value == "h" * 300 + "T" * 300
    assert postprocess(value) == "h" * 250 + "..." + "T" * 250


def test_huge_output_is_bounded_but_observation_is_exact() -> None:
    code = "for i in range(300_000):\n    print('abcdefgh')\nprint('END')"
    out = observation(code)
    # Two top-level prints -> two segments; the first is truncated to 250 + ... + 250.
    head, _, rest = out.partition("...")
    assert head.startswith("'abcdefgh': abcdefgh\nabcdefgh")
    assert rest.endswith("abcdefgh\n'END': END")


# Segments are compiled from the parsed tree, not unparsed and re-parsed as the original does;
# these pin what must not change with that.


def test_compile_time_errors_keep_the_original_message() -> None:
    # The original compiles the unparsed segment text, so the line is counted within the last
    # statement's own text (1), not the snippet (2).
    assert observation("x = 1\nreturn 2") == "SyntaxError: 'return' outside function (<string>, line 1)"
    assert observation("yield 1") == "SyntaxError: 'yield' outside function (<string>, line 1)"


def test_a_compile_error_in_a_later_segment_raises_after_the_earlier_ones_ran() -> None:
    namespace = new_namespace()
    namespace["seen"] = []
    with redirect_stdout(io.StringIO()):
        result = run_snippet("seen.append(1)\nprint(1)\nreturn\nprint(2)", namespace)
    assert result == ("", "SyntaxError: 'return' outside function (<string>, line 1)")
    assert namespace["seen"] == [1]  # the first segment ran before the second failed


def test_a_repeated_snippet_carries_nothing_between_namespaces() -> None:
    # Plans are cached by text; what they hold (code objects) makes fresh objects each run.
    code = "def g(a=[]):\n    a.append(1)\n    return len(a)\ng.calls = getattr(g, 'calls', 0) + 1\n(g(), g.calls)"
    assert [observation(code) for _ in range(3)] == ["(1, 1)"] * 3
    assert observation("g()", [code]) == "2"  # within one namespace, state is kept as before
