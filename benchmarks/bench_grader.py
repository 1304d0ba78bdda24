"""Benchmark the grader against math-verify on the 5000 MATH reference answers.

Pairs are built from each reference: equivalent rewrites (label True) and near misses (label
False), so every pair's label is known by construction. One run reports, for our `Grader` (cold
cache, pool on every core) and for math-verify (single process, its timeouts off): checks/s,
agreement with the labels, agreement between the two, and every category of disagreement with
a count and an example.

    .venv/bin/python benchmarks/bench_grader.py            # all 5000 references
    .venv/bin/python benchmarks/bench_grader.py --limit 500 --show 3

A standalone script (not imported by the package).
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Pair = tuple[str, "tuple[str, ...]", str, bool, str]  # (kind, references, prediction, label, type)


# --- pair generation -----------------------------------------------------------------------------

_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")
_INT_RE = re.compile(r"^-?\d+$")


def _terminating(num: int, den: int) -> str | None:
    x = Fraction(num, den)
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return None if d != 1 else format(float(x), ".10g")


def _split_top(s: str) -> list[str] | None:
    """Split `s` at top-level commas (None when brackets are unbalanced)."""
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
        if c == "," and depth == 0 and not (cur and cur[-1] == "\\"):  # `\,` is a thin space
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts if depth == 0 else None


def rewrites(a: str, htype: str, rng: random.Random) -> list[tuple[str, str]]:
    """Equivalent forms of answer `a`: (kind, prediction)."""
    out = [("dollars+spaces", f"$ {a} $")]
    if "\\frac" in a and "\\dfrac" not in a:
        out.append(("frac->dfrac", a.replace("\\frac", "\\dfrac")))
    elif "\\dfrac" in a:
        out.append(("dfrac->frac", a.replace("\\dfrac", "\\frac")))
    m = _FRAC_RE.match(a)
    if m and int(m.group(3)) != 0:
        dec = _terminating(int(m.group(2)), int(m.group(3)))
        if dec is not None:
            out.append(("frac->decimal", m.group(1) + dec))
    if a[:1] in "([" and a[-1:] in ")]" and "\\left" not in a:
        out.append(("add-left-right", f"\\left{a[0]}{a[1:-1]}\\right{a[-1]}"))
    if _INT_RE.match(a):
        n = int(a)
        if abs(n) >= 1000:
            out.append(("thousands-sep", f"{n:,}"))
        out.append(("units-appended", f"{a}\\text{{ units}}"))
        out.append(("int->float", f"{a}.0"))
    if a.startswith("\\{") and a.endswith("\\}"):
        parts = _split_top(a[2:-2])
        if parts and len(parts) > 1:
            out.append(("set-reordered", "\\{" + ",".join(reversed(parts)) + "\\}"))
    elif htype in ("Set", "Real") and "," in a and a[:1] not in "([" and not a.startswith("\\"):
        parts = _split_top(a)
        if parts and len(parts) > 1 and not re.match(r"^\d{1,3}(,\s*(\\!)?\s*\d{3})+(\.\d+)?$", a):
            out.append(("list-reordered", ",".join(reversed(parts))))
    if htype == "Expression" and "=" not in a and "x" in a and "\\in" not in a:
        out.append(("y=-prefix", f"y = {a}"))
    return out


def near_misses(a: str, htype: str, rng: random.Random) -> list[tuple[str, str]]:
    """Non-equivalent forms of answer `a`: (kind, prediction)."""
    out = []
    # not a digit of a unit's power (`\text{ cm}^2`): changing it changes the unit only
    digits = [m.start() for m in re.finditer(r"\d", a) if not a[:m.start()].endswith("}^")]
    if digits:
        i = digits[-1]
        out.append(("digit-changed", a[:i] + str((int(a[i]) + 1) % 10) + a[i + 1:]))
    # (not for equations: MARIO_EVAL compares them up to sign, so `-b=0` IS `b=0`)
    if a.strip() not in ("0", "") and "=" not in a and not a.startswith(("(", "[", "\\{", "\\left")):
        out.append(("sign-flipped", a[1:] if a.startswith("-") else f"-{a}"))
    if htype == "Interval" and a[:1] in "([" and "\\infty" not in a[:8]:
        out.append(("interval-end-flipped", {"(": "[", "[": "("}[a[0]] + a[1:]))
    if htype == "Vector" and a.startswith("(") and a.endswith(")"):
        parts = _split_top(a[1:-1])
        if parts and len(parts) == 2 and parts[0].strip() != parts[1].strip():
            out.append(("tuple-swapped", f"({parts[1].strip()}, {parts[0].strip()})"))
    if a.startswith("\\{") and a.endswith("\\}"):
        parts = _split_top(a[2:-2])
        if parts and len(parts) > 1:
            out.append(("set-element-dropped", "\\{" + ",".join(parts[:-1]) + "\\}"))
    return out


def build_pairs(limit: int | None, seed: int = 0) -> list[Pair]:
    from evals.datasets import load_dataset

    rng = random.Random(seed)
    pairs: list[Pair] = []
    for prob in load_dataset("math", limit=limit):
        refs = tuple(prob.answer)
        htype = str((prob.meta or {}).get("human_type", "?"))
        a = refs[0]
        for kind, pred in rewrites(a, htype, rng):
            pairs.append((kind, refs, pred, True, htype))
        for kind, pred in near_misses(a, htype, rng):
            if len(refs) > 1 and pred in refs:
                continue
            pairs.append((kind, refs, pred, False, htype))
    return pairs


# --- the two checkers ----------------------------------------------------------------------------


def run_ours(pairs: list[Pair], paper_faithful: bool) -> tuple[list[bool], float, float]:
    from evals.grader import Grader

    start = time.perf_counter()
    with Grader(paper_faithful=paper_faithful) as g:
        g.is_equiv("x+1", "1+x")  # start the pool (and import sympy in every worker)
        warm = time.perf_counter()
        verdicts = g.grade_many([(refs, pred) for _, refs, pred, _, _ in pairs], timeout_s=10.0)
        end = time.perf_counter()
    return verdicts, end - warm, warm - start


def run_math_verify(pairs: list[Pair]) -> tuple[list[bool], float]:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)

    def p(s: str) -> list[Any]:
        s = s.strip()
        out = parse(s if s.startswith("$") else f"${s}$", parsing_timeout=None)  # type: ignore[arg-type]
        return out or parse(s, parsing_timeout=None)  # type: ignore[arg-type]

    verdicts = []
    start = time.perf_counter()
    for _, refs, pred, _, _ in pairs:
        try:
            target = p(pred)
            verdicts.append(any(verify(p(r), target, timeout_seconds=None) for r in refs))  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001
            verdicts.append(False)
    return verdicts, time.perf_counter() - start


# --- report --------------------------------------------------------------------------------------


def _pct(x: int, n: int) -> str:
    return f"{100 * x / n:.2f}%" if n else "n/a"


def report(pairs: list[Pair], ours: list[bool], mv: list[bool], show: int,
           out: Callable[[str], None] = print) -> None:
    n = len(pairs)
    labels = [p[3] for p in pairs]
    out(f"pairs: {n} ({sum(labels)} equivalent, {n - sum(labels)} near misses)")
    out(f"agreement with labels: ours {_pct(sum(o == y for o, y in zip(ours, labels)), n)}, "
        f"math-verify {_pct(sum(m == y for m, y in zip(mv, labels)), n)}")
    out(f"agreement ours vs math-verify: {_pct(sum(o == m for o, m in zip(ours, mv)), n)}")
    groups: dict[tuple[str, bool, bool, bool], list[Pair]] = defaultdict(list)
    for pair, o, m in zip(pairs, ours, mv):
        if o != pair[3] or m != pair[3]:
            groups[(pair[0], pair[3], o, m)].append(pair)
    out("\ndisagreements (kind, label, ours, math-verify): count, examples")
    for (kind, label, o, m), items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        right = "ours right" if o == label else ("math-verify right" if m == label else "both wrong")
        out(f"- {kind:22} label={label!s:5} ours={o!s:5} mv={m!s:5} n={len(items):4}  [{right}]")
        for _, refs, pred, _, htype in items[:show]:
            out(f"      {htype:10} ref={list(refs)!r:.70}  pred={pred!r:.70}")
    by_kind = Counter((p[0], p[3]) for p in pairs)
    out("\npairs per kind: " + ", ".join(f"{k}({'T' if y else 'F'})={c}"
                                          for (k, y), c in sorted(by_kind.items())))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N references (default all)")
    ap.add_argument("--show", type=int, default=2, help="examples per disagreement category")
    ap.add_argument("--paper-faithful", action="store_true", help="grade MARIO_EVAL's way")
    ap.add_argument("--skip-math-verify", action="store_true")
    args = ap.parse_args(argv)
    pairs = build_pairs(args.limit)
    print(f"built {len(pairs)} pairs from {args.limit or 5000} references")
    ours, t_ours, t_start = run_ours(pairs, args.paper_faithful)
    print(f"ours: {len(pairs) / t_ours:,.0f} checks/s ({t_ours:.1f} s, cold cache; "
          f"pool start {t_start:.1f} s not counted)")
    if args.skip_math_verify:
        mv = ours
    else:
        mv, t_mv = run_math_verify(pairs)
        print(f"math-verify: {len(pairs) / t_mv:,.0f} checks/s ({t_mv:.1f} s, one process)")
    report(pairs, ours, mv, args.show)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
