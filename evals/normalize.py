"""MARIO_EVAL's `string_normalize`, rebuilt: one answer string -> a tuple of alternatives.

Steps follow MARIO_EVAL's order (ALPHAMATH.md §8). Where MARIO_EVAL rewrites to one string we
do too; where it keeps several readings we return them all, and the comparer accepts a match
between ANY alternative of the reference and ANY of the prediction:

- percent `10\\%` -> {"0.1", "10"} (both readings);
- degrees `30^\\circ` -> {"30", "\\frac{30\\pi}{180}"} (both readings);
- base-n `1011_2` / `1011_{2}` -> {"1011", "11"};
- clock times `8 pm` / `20:34` -> "[h, m]" (pm: both readings).

Unlike MARIO_EVAL the alternatives stay parseable LaTeX (spaces kept, case kept): the parsing
is math-verify's, which needs `\\sin x` not `\\sinx`. `canonical` gives MARIO's fully squashed
form (no spaces, lower case) for the cheap string comparison. Pure functions, no sympy.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["alternatives", "canonical", "parse_number", "strip_dollars"]

_MATRIX_ENV_RE = re.compile(r"\\(begin|end)\{(?:cases|array)\}(?:\{[lcr|]*\})?")
_WRAP_TEXT_RE = re.compile(r"^\\(?:text|mbox|textbf|mathrm|textrm)\{(.*)\}$", re.S)
_SET_BUILDER_RE = re.compile(r"^\\\{\s*[a-zA-Z]\s*(?:\\mid|\|)\s*(.*)\\\}$", re.S)
_SPACES_RE = re.compile(r"(?<!\\)\\[:,;! ]|~|\\quad|\\qquad")
_AND_OR_RE = re.compile(r"\\text\{\s*(?:and|or)\s*\}|\s+(?:and|or)\s+")
_SCALE = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_SCALE_RE = re.compile(r"\s*\\?(?:text\{\s*)?(thousand|million|billion|trillion)\}?", re.I)
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])\s*\.?")
_IN_RE = re.compile(r"^\s*[a-zA-Z]\w*\s*\\in\s*")
_UNITS = (
    "centimeters?", "meters?", "millimeters?", "kilometers?", "inch(?:es)?", "feet", "foot",
    "yards?", "miles?", "degrees?", "dollars?", "cents?", "units?", "square units?",
    "sq(?:uare)? ?(?:units|feet|inches|meters|cm|m|ft)", "cubic (?:units|feet|inches|meters|cm)",
    "hours?", "minutes?", "seconds?", "days?", "weeks?", "months?", "years?", "mph", "cm",
    "mm", "km", "kg", "ft", "in", "yd", "mi", "hrs?", "mins?", "secs?", "pounds?", "lbs?",
    "ounces?", "oz", "grams?", "liters?", "gallons?", "people", "students", "points?", "ways",
    "times", "percent", "p\\.m\\.", "a\\.m\\.", "pm", "am", "m", "g", "L", "l", "s",
)
_UNIT_ALT = "|".join(_UNITS)
# 1) `\text{ cm}^2` and friends, for the fixed unit list (with plural and power)
_TEXT_UNIT_RE = re.compile(r"\\(?:text|mbox|mathrm)\{\s*(?:" + _UNIT_ALT + r")\s*\}(?:\^\{?\d\}?)?")
# 2) bare long units after a number and a space (MARIO: short ones only after a space as well;
#    "10cm" is NOT stripped)
_BARE_UNIT_RE = re.compile(
    r"(?<=\d)\s+(?:" + "|".join(u for u in _UNITS if len(u) > 1 and u not in ("in", "times", "am", "pm"))
    + r")(?:\^\{?\d\}?)?\s*$"
)
_ANY_TEXT_RE = re.compile(r"\\(?:text|mbox|textbf|mathrm|textrm)\{\s*([^{}]*?)\s*\}")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_DEGREE_NUM_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree)")
_BASE_RE = re.compile(r"^([0-9a-fA-F]+)_\{?(\d+)\}?$")
_PERCENT_RE = re.compile(r"^(-?\d+(?:\.\d+)?)\s*\\?%$")
_THOUSANDS_RE = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_MIXED_SLASH_RE = re.compile(r"^(-?)(\d+)\s+(\d+)\s*/\s*(\d+)$")
_MIXED_FRAC_RE = re.compile(r"^(-?)(\d+)\s*\\frac\s*\{?(\d+)\}?\s*\{?(\d+)\}?$")
_TIME_RE = re.compile(r"^(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?\s*(a\.?m\.?|p\.?m\.?)?$", re.I)
_NUMBER_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
_FRAC_NUM_RE = re.compile(r"^([-+]?)\\frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}$")
_FRAC_SHORT_RE = re.compile(r"^([-+]?)\\frac\s*(\d)\s*(\d)$")
_SLASH_NUM_RE = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_SCI_RE = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?$")
_UNICODE = {"√": "\\sqrt", "π": "\\pi", "∞": "\\infty", "∪": "\\cup", "·": "\\cdot", "×": "\\times",
            "−": "-", "≤": "\\le", "≥": "\\ge", "≠": "\\ne"}
_ESCAPES = {"\f": "\\f", "\b": "\\b", "\a": "\\a", "\t": "\\t", "\r": "\\r", "\v": "\\v"}


def strip_dollars(s: str) -> str:
    """Drop one surrounding `$…$` (or `\\(…\\)`, `\\[…\\]`)."""
    s = s.strip()
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= 2 * len(open_) and s.startswith(open_) and s.endswith(close):
            inner = s[len(open_):-len(close)]
            if "$" not in inner:
                return inner.strip()
    return s


def _strip_outer_braces(s: str) -> str:
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        depth = 0
        for i, c in enumerate(s):
            depth += c == "{"
            depth -= c == "}"
            if depth == 0 and i < len(s) - 1:
                return s
        s = s[1:-1].strip()
    return s


def _base(s: str) -> str:
    """MARIO's steps up to the point where readings fork; one string in, one out."""
    for raw, fixed in _ESCAPES.items():  # escapes that Python ate (`"\frac"` -> form feed + "rac")
        s = s.replace(raw, fixed)
    s = strip_dollars(s)
    # 1) matrix environments: cases/array -> matrix; `\\\\` row separators kept
    s = _MATRIX_ENV_RE.sub(lambda m: f"\\{m.group(1)}{{matrix}}", s)
    # 2) a whole-string \text{…}
    m = _WRAP_TEXT_RE.match(s)
    if m and "{" not in m.group(1):
        s = m.group(1).strip()
    # 3) set-builder: the condition
    m = _SET_BUILDER_RE.match(s)
    if m:
        s = m.group(1).strip()
    # 4) thin spaces, {,}
    s = _SPACES_RE.sub(lambda m: " " if m.group(0) in ("\\ ", "~", "\\quad", "\\qquad") else "", s)
    s = s.replace("{,}", ",")
    # 5) dollars
    s = s.replace("\\$", "").replace("$", "").strip()
    # 6) "and"/"or" -> ","
    s = re.sub(r",\s*,", ",", _AND_OR_RE.sub(", ", s))  # "1, 2, and 3": no empty element
    # 7) million/billion
    m = re.match(r"^(-?\d+(?:\.\d+)?)" + _SCALE_RE.pattern + r"$", s, re.I)
    if m:
        s = f"{m.group(1)}\\times 10^{{{_SCALE[m.group(2).lower()]}}}"
    # 8) \left \right, `x \in`
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _IN_RE.sub("", s)
    # 9) units: \text{unit}, then bare long units, then any \text{letters} left around a value
    s = _TEXT_UNIT_RE.sub("", s).strip()
    s = _BARE_UNIT_RE.sub("", s).strip()
    if re.search(r"[\d}]", _ANY_TEXT_RE.sub("", s)):
        s = _ANY_TEXT_RE.sub(lambda m: m.group(1) if len(m.group(1)) <= 1 else "", s).strip()
    else:
        s = _ANY_TEXT_RE.sub(lambda m: m.group(1), s).strip()
    # 10) outer braces, fractions, unicode, "- "
    s = _strip_outer_braces(s)
    for variant in ("\\dfrac", "\\tfrac", "\\cfrac"):
        s = s.replace(variant, "\\frac")
    for u, a in _UNICODE.items():
        s = s.replace(u, a)
    s = s.replace("- ", "-").rstrip(".").strip()
    # 11) thousands separators, mixed numbers
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    m = _MIXED_SLASH_RE.match(s) or _MIXED_FRAC_RE.match(s)
    if m:
        sign, whole, num, den = m.groups()
        if int(den) != 0 and int(num) < int(den):
            s = f"{sign}\\frac{{{int(whole) * int(den) + int(num)}}}{{{den}}}"
    return s


def alternatives(s: str) -> tuple[str, ...]:
    """The readings of answer `s` after MARIO-style normalisation (first: the main one)."""
    base = _base(s)
    out = [base]
    # percent: both readings
    m = _PERCENT_RE.match(base)
    if m:
        value = Fraction(m.group(1))
        out = [_fmt(value / 100), _fmt(value)]
    elif "%" in base:
        out = [base.replace("\\%", "").replace("%", "").strip()]
    # degrees: both readings
    if _DEGREE_RE.search(base):
        plain = _DEGREE_RE.sub("", base).strip()
        radians = _DEGREE_NUM_RE.sub(lambda m: f"\\frac{{{m.group(1)}\\pi}}{{180}}", base)
        out = [plain, radians]
    # base-n subscripts: both readings
    m = _BASE_RE.match(base)
    if m and 2 <= int(m.group(2)) <= 36:
        try:
            out = [m.group(1), str(int(m.group(1), int(m.group(2))))]
        except ValueError:
            pass
    # clock times
    m = _TIME_RE.match(base)
    if m and (m.group(2) or m.group(4)):
        h, mi, sec, ampm = m.groups()
        tail = f", {int(mi or 0)}" + (f", {int(sec)}" if sec else "")
        hours = [int(h)]
        if ampm and ampm[0].lower() == "p" and int(h) < 12:
            hours.append(int(h) + 12)
        out = [f"[{hh}{tail}]" for hh in hours]
    return tuple(dict.fromkeys(a for a in out if a))


def base_n_value(s: str) -> str | None:
    """The decimal value of a number with a base subscript (`1011_2` → "11"), else None."""
    m = _BASE_RE.match(_base(s))
    if not m or not 2 <= int(m.group(2)) <= 36:
        return None
    try:
        return str(int(m.group(1), int(m.group(2))))
    except ValueError:
        return None


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    if 10**12 % x.denominator == 0:
        return format(float(x), ".12g")
    return f"\\frac{{{x.numerator}}}{{{x.denominator}}}"


def canonical(s: str) -> str:
    """MARIO's final squashing: no spaces, lower case (for string equality only)."""
    return re.sub(r"\s+", "", s).lower()


def parse_number(s: str) -> tuple[Fraction, bool] | None:
    """A plain number as (exact value, written-as-decimal), or None. No sympy.

    Integers, decimals, `a/b`, `\\frac{a}{b}`, `\\frac34`, `a\\times10^{b}`, a leading sign."""
    s = s.strip()
    try:
        if _NUMBER_RE.match(s):
            decimal = not re.match(r"^[-+]?\d+\.?$", s)
            if len(s) > 60:
                return None
            return Fraction(s.rstrip(".") if s.endswith(".") else s), decimal
        m = _FRAC_NUM_RE.match(s) or _FRAC_SHORT_RE.match(s)
        if m:
            sign, num, den = m.groups()
            if int(den) == 0:
                return None
            value = Fraction(int(num), int(den))
            return (-value if sign == "-" else value), False
        m = _SLASH_NUM_RE.match(s)
        if m and int(m.group(2)) != 0:
            return Fraction(int(m.group(1)), int(m.group(2))), False
        m = _SCI_RE.match(s)
        if m and abs(int(m.group(2))) <= 30:
            mant = Fraction(m.group(1))
            return mant * Fraction(10) ** int(m.group(2)), "." in m.group(1)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None
