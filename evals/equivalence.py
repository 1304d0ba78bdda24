"""MARIO_EVAL-style answer comparison: pure functions; the sympy part runs inside pool workers.

`quick_verdict` is sympy-free and runs in the caller (plain numbers and equal strings decide
most pairs); `equivalent` is the full comparison a worker runs, WITHOUT a timeout of its own (the
pool enforces one from outside). Nothing here raises: a failure is False.

Pipeline, per (reference alternative, prediction alternative) pair (`normalize.alternatives`):
1. equal after MARIO's squashing (`canonical`) -> True;
2. both plain numbers -> the tolerance rule below, no sympy;
3. math-verify `parse` (latex2sympy2_extended) + `verify` with its own timeouts OFF. That covers
   intervals (open/closed ends), ordered tuples vs unordered `{}`/bare-comma sets, equations
   (up to sign), inequalities, complex numbers, `f(x)=`/`y=` vs the bare expression, matrices
   and symbolic equality (simplify, then numeric evaluation);
4. what MARIO_EVAL does and math-verify does not: a row vector equals the column vector with
   the same entries; in paper-faithful mode, MARIO's numeric tolerance on evaluated sympy values.

Tolerance. Default (deliberately stricter than MARIO_EVAL): plain numbers compare exactly, except
that a decimal may round a value with no finite decimal expansion to relative 1e-6 (`0.333333`
= 1/3, `0.33` ≠ 1/3, `16386.17` ≠ `16386.16`, `3.0005` ≠ 3); sympy values go through
math-verify's `verify` (6-decimal rounding of floats; `1.41` ≠ √2, `1.414214` = √2). `paper_faithful=True` restores
MARIO_EVAL's rule: gt evaluated to a float; |diff| < 5e-3 absolute when |gt| ≥ 1, relative 1e-3
below, absolute 1e-3 at gt = 0 (so `1.41` = √2 and `3.0005` = 3), and its quirks: `\\boxed{2}` ≠
`2`, units glued to a number (`10cm`) are not stripped.
"""

from __future__ import annotations

import cmath
import functools
import logging
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from evals.normalize import alternatives, base_n_value, canonical, parse_number, strip_dollars

__all__ = ["equivalent", "numbers_equal", "quick_verdict"]

logging.getLogger("math_verify").setLevel(logging.ERROR)

Number = tuple[Fraction, bool]
_BOXED = ("\\boxed", "\\fbox")


def numbers_equal(reference: Number, prediction: Number, paper_faithful: bool = False) -> bool:
    """The tolerance rule (see the module docstring) on two parsed plain numbers."""
    (gt, gt_dec), (pred, pred_dec) = reference, prediction
    if gt == pred:
        return True
    if paper_faithful:
        return _mario_close(float(gt), float(pred))
    if _terminates(gt) and _terminates(pred):
        return False  # both exact decimals (or integers): no rounding to forgive
    if not (gt_dec or pred_dec):
        return False
    return abs(gt - pred) <= Fraction(1, 10**6) * max(abs(gt), abs(pred))


def _terminates(x: Fraction) -> bool:
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _mario_close(gt: float, pred: float) -> bool:
    diff = abs(gt - pred)
    if diff == 0:
        return True
    if abs(gt) >= 1:
        return diff < 5e-3
    if gt != 0:
        return diff / abs(gt) < 1e-3
    return diff < 1e-3


def _prepared(s: str) -> tuple[str, ...]:
    return alternatives(s) if s else ()


def _paired(reference: str, prediction: str,
            pred_alts: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The readings to compare. A base-n number's digits reading exists for a side WITHOUT a
    subscript; when both sides carry one, only their values count (152A_{11} ≠ 152A_{12})."""
    ref_value, pred_value = base_n_value(reference), base_n_value(prediction)
    if ref_value is not None and pred_value is not None:
        return (ref_value,), (pred_value,)
    return _prepared(reference), pred_alts


def quick_verdict(
    references: Sequence[str], prediction: str, paper_faithful: bool = False
) -> bool | None:
    """True/False when cheap string and number checks decide; None when sympy must."""
    pred_alts = _prepared(prediction)
    if not pred_alts:
        return False
    undecided = False
    for reference in references:
        ref_alts, p_alts = _paired(reference, prediction, pred_alts)
        for r in ref_alts:
            for p in p_alts:
                if canonical(r) == canonical(p):
                    return True
        rn = [parse_number(r) for r in ref_alts]
        pn = [parse_number(p) for p in p_alts]
        if all(x is not None for x in rn) and all(x is not None for x in pn):
            if any(numbers_equal(r, p, paper_faithful) for r in rn for p in pn if r and p):
                return True
        elif ref_alts:
            undecided = True
    return None if undecided else False


def equivalent(references: Sequence[str], prediction: str, paper_faithful: bool = False) -> bool:
    """The full comparison (sympy included, no timeout of its own). Any failure -> False."""
    try:
        quick = quick_verdict(references, prediction, paper_faithful)
        if quick is not None:
            return quick
        pred_alts = _prepared(prediction)
        for reference in references:
            ref_alts, p_alts = _paired(reference, prediction, pred_alts)
            for r in ref_alts:
                for p in p_alts:
                    if _pair_equivalent(r, p, paper_faithful):
                        return True
        return False
    except Exception:  # noqa: BLE001 - a grader returns False rather than raise
        return False


def _pair_equivalent(ref: str, pred: str, paper_faithful: bool) -> bool:
    if paper_faithful and (any(b in ref for b in _BOXED) != any(b in pred for b in _BOXED)):
        return False  # MARIO_EVAL's parsers do not read \boxed: `\boxed{2}` vs `2` is False
    rn, pn = parse_number(ref), parse_number(pred)
    if rn is not None and pn is not None:
        return numbers_equal(rn, pn, paper_faithful)
    gold, target = _parse(ref, paper_faithful), _parse(pred, paper_faithful)
    if not gold or not target:
        return False
    from math_verify import verify

    if verify(gold, target, timeout_seconds=None):  # type: ignore[arg-type]
        return True
    g, t = gold[0], target[0]
    if _is_matrix(g) and _is_matrix(t) and g.shape == t.shape[::-1] and 1 in g.shape:
        if verify([g.T], [t], timeout_seconds=None):  # row vector = column vector
            return True
    gi, ti = _i_as_imaginary(g), _i_as_imaginary(t)
    if (gi is not g or ti is not t) and verify([gi], [ti], timeout_seconds=None):
        return True  # MARIO: an expression whose only free symbol is `i` is complex
    if paper_faithful and _tolerant_sympy(gi, ti):
        return True
    return random_points_equal(gi, ti, paper_faithful)


# MARIO_EVAL's last resort: equal values at 10 points — integers 1..10 first, then floats in
# [1, 10]. It catches identities sympy's simplify misses (and runs only after verify failed).
_POINTS = [float(k) for k in (2, 3, 5, 7, 10)] + [1.37, 2.71, 4.13, 6.59, 8.83]


def random_points_equal(gold: Any, target: Any, paper_faithful: bool = False) -> bool:
    """Two expressions with the same free symbols agree at every test point. Default tolerance:
    relative 1e-9 (an identity, not an approximation); paper-faithful: MARIO's |diff| < 1e-3."""
    from sympy import Expr

    if not (isinstance(gold, Expr) and isinstance(target, Expr)):
        return False
    symbols = sorted(gold.free_symbols, key=str)
    if not symbols or set(symbols) != target.free_symbols:
        return False
    for k, x in enumerate(_POINTS):
        # a different value per symbol, so x - y ≠ 0 is not mistaken for an identity
        subs = {sym: _POINTS[(k + j) % len(_POINTS)] + 0.5 * j for j, sym in enumerate(symbols)}
        try:
            a, b = complex(gold.evalf(subs=subs)), complex(target.evalf(subs=subs))
        except (TypeError, ValueError, ZeroDivisionError):
            return False
        if not all(map(cmath.isfinite, (a, b))):
            return False
        diff = abs(a - b)
        if diff > (1e-3 if paper_faithful else 1e-9 * max(1.0, abs(a))):
            return False
    return True


def _i_as_imaginary(x: Any) -> Any:
    from sympy import Basic, I

    if isinstance(x, Basic) and {str(s) for s in x.free_symbols} == {"i"}:
        return x.subs({s: I for s in x.free_symbols})  # the parser's `i` may carry assumptions
    return x


def _is_matrix(x: Any) -> bool:
    from sympy import MatrixBase

    return isinstance(x, MatrixBase)


def _tolerant_sympy(gold: Any, target: Any) -> bool:
    """MARIO's tolerance on evaluated numbers (paper-faithful mode only)."""
    from sympy import Basic

    if not (isinstance(gold, Basic) and isinstance(target, Basic)):
        return False
    if getattr(gold, "free_symbols", None) or getattr(target, "free_symbols", None):
        return False
    try:
        g, t = complex(gold.evalf()), complex(target.evalf())
    except (TypeError, ValueError):
        return False
    if g.imag or t.imag:
        return abs(g - t) < 1e-3
    return _mario_close(g.real, t.real)


@functools.lru_cache(maxsize=50_000)
def _parse(s: str, paper_faithful: bool) -> list[Any]:
    """math-verify's parse, timeouts OFF; cached per worker (references repeat across rows)."""
    from latex2sympy2_extended.math_normalization import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    norm = NormalizationConfig(basic_latex=True, units=not paper_faithful,
                               malformed_operators=True, nits=True, boxed="all", equations=False)
    configs = [LatexExtractionConfig(normalization_config=norm), ExprExtractionConfig()]
    # LatexExtractionConfig only looks inside math delimiters: wrap bare answers in $…$, and
    # fall back to the raw string for plain expressions such as "1/2".
    inner = strip_dollars(s)
    try:
        parsed: list[Any] = parse(f"${inner}$", configs, parsing_timeout=None)  # type: ignore[arg-type]
        if not parsed:
            parsed = parse(inner, configs, parsing_timeout=None)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        return []
    return parsed
