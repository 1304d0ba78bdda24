"""`synth-arith`: seeded multi-step arithmetic word problems, plus correct ReAct solutions for SFT.

    for p in synth_arith_problems("test", 500, seed=0): ...
    steps = synth_arith_solution(problem)          # react_sft step texts, outputs included

A problem is a start amount followed by 2–4 operations (`synth-arith`; 3–6 for `synth-arith-hard`,
the level at which docs/MINI.md found search to matter) in GSM8K-like wording (docs/MINI.md):
buying more (+), giving away (−), buying k bags of m (+ k·m), giving k friends m each (− k·m),
doubling / tripling (×), and sharing equally keeping one share (exact ÷). Half the problems carry
a distractor sentence. Every intermediate amount is a positive integer below 10,000, so the
answer is an exact integer.

Splits are disjoint by construction, whatever the seeds: a problem belongs to the split given by
a hash of its question text (1 in 5 goes to "test"), and each split's generator rejects the
other's. Duplicate questions are dropped within one call. The operations are kept in
`meta["ops"]` (`[["+", 5], ["*", 2], ...]`, start in `meta["start"]`) so a solution can be
written without parsing the question.

Solutions (`synth_arith_solution`) are in the react_sft XML format (ALPHAMATH.md §1.2): one code
step per operation (the variable carries over, as the executor replays earlier steps), or — for
30 % of problems, seeded — one code step with the whole expression; then a `Final Answer:` step.
`synth_arith_sft_rows` wraps them as training rows (`training.data` format, every q = 1.0) for a
warm-start SFT with `cli.py train`. `synth_arith_flawed_solution` writes one with a slip of the
kinds the mini policy makes (a number copied wrong, mostly), and `synth_arith_contrast_rows` pairs
each correct solution with such flawed ones, with value targets from their outcomes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from runtime.problem import Problem

__all__ = ["LEVELS", "SPLITS", "synth_arith_contrast_rows", "synth_arith_flawed_solution", "synth_arith_problems",
           "synth_arith_sft_rows", "synth_arith_solution"]

SPLITS = ("train", "test")
SOURCE = "synth-arith"
# Dataset name -> (fewest, most) operations per problem. With 2–4 a few-million-parameter model
# saturates (docs/MINI.md: 97 % greedy); errors must pile up over longer chains for search to pay.
LEVELS = {"synth-arith": (2, 4), "synth-arith-hard": (3, 6)}
_MAX = 10_000
_TEST_BUCKETS = 1  # of 5

_NAMES = ("Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma", "Noah", "Zoe", "Leo", "Ava",
          "Omar", "Priya", "Kenji", "Sofia")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells",
          "coins", "stamps", "beads", "buttons", "crayons", "balloons")
_DISTRACTORS = ("The shop is {n} miles away.", "It is {n} degrees outside.",
                "{name}'s sister is {n} years old.", "The bus ride takes {n} minutes.",
                "The store opened {n} years ago.")


def _split_of(question: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 5
    return "test" if bucket < _TEST_BUCKETS else "train"


def _op_sentence(rng: random.Random, op: str, args: tuple[int, ...], name: str, item: str) -> str:
    if op == "+":
        (b,) = args
        return rng.choice((f"Then {name} buys {b} more {item}.", f"A friend gives {name} {b} {item}.",
                           f"{name} finds {b} more {item}."))
    if op == "-":
        (b,) = args
        return rng.choice((f"Then {name} gives away {b} {item}.", f"{name} loses {b} {item}.",
                           f"{name} uses {b} of the {item}."))
    if op == "+*":
        k, m = args
        return rng.choice((f"{name} buys {k} bags with {m} {item} in each bag.",
                           f"{name} gets {k} boxes of {m} {item} each."))
    if op == "-*":
        k, m = args
        return rng.choice((f"{name} gives {k} friends {m} {item} each.",
                           f"{name} puts {m} {item} into each of {k} jars and gives the jars away."))
    if op == "*":
        (k,) = args
        word = {2: "doubles", 3: "triples"}[k]
        return rng.choice((f"Then {name} {word} the number of {item}.",
                           f"{name}'s collection of {item} grows to {k} times as many."))
    (k,) = args  # "/"
    return rng.choice((f"{name} shares the {item} equally with {k - 1} friends and keeps one share.",
                       f"{name} splits the {item} into {k} equal piles and keeps one pile."))


def _apply(x: int, op: str, args: tuple[int, ...]) -> int:
    if op == "+":
        return x + args[0]
    if op == "-":
        return x - args[0]
    if op == "+*":
        return x + args[0] * args[1]
    if op == "-*":
        return x - args[0] * args[1]
    if op == "*":
        return x * args[0]
    return x // args[0]


def _pick_op(rng: random.Random, x: int) -> tuple[str, tuple[int, ...]]:
    """A random operation that keeps the amount a positive integer below _MAX."""
    while True:
        op = rng.choice(("+", "-", "+*", "-*", "*", "/"))
        if op == "+":
            args: tuple[int, ...] = (rng.randint(2, 60),)
        elif op == "-":
            if x < 3:
                continue
            args = (rng.randint(1, min(60, x - 1)),)
        elif op == "+*":
            args = (rng.randint(2, 9), rng.randint(2, 12))
        elif op == "-*":
            k = rng.randint(2, 6)
            if x // k < 2:
                continue
            args = (k, rng.randint(1, min(10, x // k - 1)))
        elif op == "*":
            args = (rng.choice((2, 3)),)
        else:
            divisors = [k for k in range(2, 7) if x % k == 0]
            if not divisors:
                continue
            args = (rng.choice(divisors),)
        y = _apply(x, op, args)
        if 0 < y < _MAX:
            return op, args


def _make(rng: random.Random, ops_range: tuple[int, int]) -> tuple[str, int, list[tuple[str, tuple[int, ...]]], int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    start = rng.randint(5, 120)
    x = start
    ops: list[tuple[str, tuple[int, ...]]] = []
    for _ in range(rng.randint(*ops_range)):
        op, args = _pick_op(rng, x)
        ops.append((op, args))
        x = _apply(x, op, args)
    sentences = [rng.choice((f"{name} has {start} {item}.", f"{name} starts with {start} {item}."))]
    sentences += [_op_sentence(rng, op, args, name, item) for op, args in ops]
    if rng.random() < 0.5:
        d = rng.choice(_DISTRACTORS).format(n=rng.randint(2, 90), name=name)
        sentences.insert(rng.randint(1, len(sentences)), d)
    sentences.append(rng.choice((f"How many {item} does {name} have now?",
                                 f"How many {item} does {name} have at the end?")))
    return " ".join(sentences), start, ops, x


def synth_arith_problems(split: str, n: int, seed: int, *, level: str = SOURCE) -> Iterator[Problem]:
    """`n` distinct problems of `split` ("train" or "test"), the same for the same seed and
    `level` (a key of LEVELS; the default draws exactly what it always did)."""
    if level not in LEVELS:
        raise ValueError(f"unknown synth-arith level {level!r}; known: {', '.join(LEVELS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown synth-arith split {split!r}; known: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{level}:{split}:{seed}")
    seen: set[str] = set()
    i = 0
    while i < n:
        question, start, ops, answer = _make(rng, LEVELS[level])
        if question in seen or _split_of(question) != split:
            continue
        seen.add(question)
        meta: dict[str, Any] = {"split": split, "seed": seed, "start": start,
                                "ops": [[op, *args] for op, args in ops]}
        yield Problem(id=f"{level}-{split}-{seed}-{i}", question=question, answer=(str(answer),),
                      source=level, meta=meta)
        i += 1


_THOUGHTS = {"+": "Add the {item} that come in.", "-": "Subtract the {item} that go away.",
             "+*": "Add the {item} from the bags.", "-*": "Subtract the {item} given to friends.",
             "*": "Multiply the number of {item}.", "/": "Divide the {item} into equal shares."}


def _expr(var: str, op: str, args: list[int]) -> str:
    if op in ("+", "-", "*"):
        return f"{var} {op} {args[0]}"
    if op == "+*":
        return f"{var} + {args[0]} * {args[1]}"
    if op == "-*":
        return f"{var} - {args[0]} * {args[1]}"
    return f"{var} // {args[0]}"


def _solution_steps(question: str, start: int, ops: list[list[Any]], *, one_expression: bool) -> list[str]:
    """react_sft steps computing `ops` from `start` (outputs pasted in, answer last)."""
    from runtime.react import get_format

    fmt = get_format("react_sft")
    item = next((w for w in _ITEMS if f" {w}" in question), "items")
    steps: list[str] = []
    x = start
    if one_expression:
        expr = str(start)
        for op, *args in ops:
            expr = _expr(f"({expr})", op, args)
            x = _apply(x, op, tuple(args))
        code_step = fmt.parse(fmt.format_step("Compute the final amount in one expression.",
                                              code=f"print({expr})"))
        steps.append(fmt.with_observation(code_step, str(x)))
    else:
        for k, (op, *args) in enumerate(ops):
            x = _apply(x, op, tuple(args))
            prefix = f"{item} = {start}\n" if k == 0 else ""
            code = f"{prefix}{item} = {_expr(item, op, args)}\nprint({item})"
            code_step = fmt.parse(fmt.format_step(_THOUGHTS[op].format(item=item), code=code))
            steps.append(fmt.with_observation(code_step, str(x)))
    answer = fmt.parse(fmt.format_step(f"{question.split()[0]} has {x} {item}.",
                                       final_answer=str(x)))
    steps.append(answer.text)
    return steps


def synth_arith_solution(problem: Problem, *, rng: random.Random | None = None) -> list[str]:
    """Correct react_sft steps for a synth-arith problem (outputs pasted in, answer last).

    `rng` picks the layout (30 %: one expression); without it the choice is seeded by the id.
    """
    rng = rng or random.Random(problem.id)
    return _solution_steps(problem.question, int(problem.meta["start"]), problem.meta["ops"],
                           one_expression=rng.random() < 0.3)


def _miscopy(rng: random.Random, n: int) -> int:
    """`n` copied wrong the ways the mini policy's slips look (43 -> 44, 34, 4, 433, 53)."""
    digits = str(n)
    kind = rng.choice(("digit", "digit", "swap", "drop", "double", "tens"))
    if kind == "swap" and len(digits) > 1 and digits[0] != digits[1]:
        return int(digits[1] + digits[0] + digits[2:])
    if kind == "drop" and len(digits) > 1:
        i = rng.randrange(len(digits))
        return int(digits[:i] + digits[i + 1:])
    if kind == "double":
        i = rng.randrange(len(digits))
        return int(digits[:i + 1] + digits[i:])
    if kind == "tens":
        return max(1, n + rng.choice((-10, 10)))
    return max(1, n + rng.choice((-1, 1)))


def _slip(rng: random.Random, ops: list[list[Any]]) -> list[list[Any]]:
    """`ops` with one slip: a number copied wrong (most of them), two numbers copied wrong, a
    step left out, a step done twice, or doubling and tripling confused."""
    ops = [list(o) for o in ops]
    kind = rng.choices(("miscopy", "miscopy2", "drop", "repeat", "factor"), (68, 17, 7, 5, 3))[0]
    if kind == "drop" and len(ops) > 1:
        del ops[rng.randrange(len(ops))]
    elif kind == "repeat":
        i = rng.randrange(len(ops))
        ops.insert(i, list(ops[i]))
    elif kind == "factor" and any(o[0] == "*" for o in ops):
        o = rng.choice([o for o in ops if o[0] == "*"])
        o[1] = 5 - o[1]
    else:
        for _ in range(2 if kind == "miscopy2" else 1):
            o = rng.choice(ops)
            j = rng.randrange(1, len(o))
            o[j] = _miscopy(rng, o[j])
    return ops


def synth_arith_flawed_solution(problem: Problem, *, rng: random.Random,
                                one_expression: bool) -> list[str]:
    """react_sft steps with one slip (`_slip`) whose final answer is wrong; everything after the
    slip follows from it, as when the policy makes it (the pasted outputs are what the wrong code
    prints; every amount stays positive). The slips' mix copies what the mini policy's wrong
    answers hold: of 268 distinct wrong maj@5 candidates of the shipped model, 181 miscopy one
    number, 46 two or more, 20 leave a number out, 12 add one, 9 keep every number and get an
    operation wrong."""
    start, ops = int(problem.meta["start"]), problem.meta["ops"]
    for _ in range(1000):  # a slip keeps the answer right rarely (a miscopied 1 -> 1, ...)
        flawed = _slip(rng, ops)
        amounts = [start]
        for op, *args in flawed:
            amounts.append(_apply(amounts[-1], op, tuple(args)))
        # A negative amount would tell the slip apart by its sign alone, a cue the policy's own
        # slips rarely give; the value must learn to check the numbers against the question.
        if min(amounts) > 0 and str(amounts[-1]) not in problem.answer:
            return _solution_steps(problem.question, start, flawed, one_expression=one_expression)
    raise ValueError(f"no slip changes the answer of {problem.id}")


def synth_arith_sft_rows(split: str, n: int, seed: int, *, level: str = SOURCE,
                         q: float | None = 1.0) -> Iterator[Any]:
    """Warm-start SFT rows (`training.data.TrainingRow`, correct, every step's q = `q`; None
    makes them LM-only rows that carry no value target)."""
    from runtime.react import get_format
    from training.data import TrainingRow, TrainingStep

    fmt = get_format("react_sft")
    rng = random.Random(f"{SOURCE}-sft:{split}:{seed}")
    for problem in synth_arith_problems(split, n, seed, level=level):
        steps = synth_arith_solution(problem, rng=rng)
        yield TrainingRow(fmt.build_prompt(problem.question, []),
                          tuple(TrainingStep(s, q) for s in steps), True, problem.id)


def synth_arith_contrast_rows(split: str, n: int, seed: int, *, level: str = SOURCE, flawed: int = 3,
                              one_expression_share: float = 0.3) -> Iterator[Any]:
    """Value-training rows: for each of `n` problems one correct solution and `flawed` ones with a
    slip (`synth_arith_flawed_solution`), all in the same layout (one expression for
    `one_expression_share` of the problems), so that a question's paths differ by the slip alone.

    Targets from outcomes only, as a tree of these paths would give them with max backup: a step's
    q is +1 when some path through the same steps so far ends right, else -1. So the steps a
    flawed path shares with the correct one are +1, and the slip and all after it -1.
    """
    from runtime.react import get_format
    from training.data import TrainingRow, TrainingStep

    fmt = get_format("react_sft")
    rng = random.Random(f"{SOURCE}-contrast:{split}:{seed}")
    for problem in synth_arith_problems(split, n, seed, level=level):
        one_expression = rng.random() < one_expression_share
        paths = [(_solution_steps(problem.question, int(problem.meta["start"]), problem.meta["ops"],
                                  one_expression=one_expression), True)]
        paths += [(synth_arith_flawed_solution(problem, rng=rng, one_expression=one_expression), False)
                  for _ in range(flawed)]
        right_prefixes = {tuple(steps[:i + 1]) for steps, ok in paths if ok for i in range(len(steps))}
        prompt = fmt.build_prompt(problem.question, [])
        for steps, ok in paths:
            yield TrainingRow(prompt, tuple(TrainingStep(s, 1.0 if tuple(steps[:i + 1]) in right_prefixes
                                                         else -1.0) for i, s in enumerate(steps)),
                              ok, problem.id)
