"""MCTS trees built with the ground truth → policy + value training rows (ALPHAMATH.md §3, §5).

    summary = export_training(Path("round1.jsonl"), Path("train.jsonl"))

Input: results files of a `mcts_train_round*` run (DESIGN.md "Results file"), one row per tree;
several files (or several rows with the same id, e.g. repeated runs with other seeds) pool their
trees per question, as the paper's "10 trees per question". Output: one JSON line per sampled
solution path::

    {"id": ..., "prompt": "<question> Q </question>\\n",
     "steps": [{"text": "<step>\\n...</step>", "q": 0.43}, ...], "correct": true}

How a question's rows are chosen:

1. Every root-to-leaf path that ends at a **terminal** node is a candidate solution. It is
   correct when that leaf's reward is +1 (the ground truth said so). Its steps carry each node's
   backed-up Q = W/N as the value target (Ṽ(s_{t+1}) = Q(s_t, a_t), eq. 7); a terminal had
   exactly one update, so the last q is ±1. Non-terminal (unexpanded) leaves carry no outcome and
   are not candidates. Invalid terminals (parse failures, too many steps or code errors, a prompt
   that outgrew the context) are negatives.
2. Solution filter (Appendix C.2, Algorithm 3): duplicates (same step texts) are dropped, keeping
   the first seen; a path whose code steps ALL raised an error (at least one code step) is
   dropped, positive or negative; negatives are otherwise kept as they are; positives are ranked
   — level 1: the final answer equals some (error-free) code output by `is_equiv`; level 2: no
   code error at all; level 3: the rest.
3. At most `max_per_class` positives — the best levels first, random (seeded) within a level —
   and at most `max_per_class` negatives, drawn at random. Rows are written positives first, in
   rank order, then negatives.

Trees in the round-1 `react` format are rewritten into the `react_sft` XML steps (the thought,
code, observation and answer re-parsed from each node's text), because what a round trains is
the XML policy of rounds ≥ 2 (§1.2, §5 "Rounds"). A step that does not parse (the raw text of
an invalid terminal) is kept as it is; it is only ever a negative.

``targets="outcome"`` takes the trees of any inference run instead (maj@k samples, SBS, MCTS
without the ground truth): each answer terminal is graded against the row's ground truth (+1 /
−1; invalid terminals −1) and a node's value target is the mean outcome of the terminals below
it — a Monte Carlo estimate of V, which for i.i.d. samples is each path's own outcome on every
step (the outcome-supervised labels of Math-Shepherd / an ORM). Sampling complete solutions is
far cheaper than growing ground-truth trees, so this is how a value head gets many labelled
finals per question; the filter and the per-class sampling are the same.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from runtime.react import NO_ACTION, ReactFewShotFormat, ReactSftFormat, is_sentinel
from runtime.tree import Node, Tree
from strategies.mcts_tree import backup
from training.errors import TrainingDataError

__all__ = [
    "ExportSummary",
    "SolutionPath",
    "TrainingRow",
    "TrainingStep",
    "export_training",
    "filter_solutions",
    "label_outcomes",
    "read_training_rows",
    "rows_for_question",
    "solution_paths",
    "solution_rank",
    "write_training_rows",
]

Equiv = Callable[[Any, str], bool]  # (reference(s), prediction) -> bool, as evals.grader.is_equiv
Targets = Literal["q", "outcome"]

_SFT = ReactSftFormat()
_REACT = ReactFewShotFormat()
_OBSERVATION = "\n\nObservation: "


@dataclass(frozen=True)
class TrainingStep:
    text: str
    # The value target; None: the step trains the language model only (anchor rows of correct
    # synthetic solutions have no search behind them, so no Q to teach the value head).
    q: float | None


@dataclass(frozen=True)
class TrainingRow:
    """One training example: a prompt, its steps with Q targets, and whether the path is right."""

    prompt: str
    steps: tuple[TrainingStep, ...]
    correct: bool
    id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt,
                "steps": [{"text": s.text, "q": s.q} for s in self.steps], "correct": self.correct}


@dataclass(frozen=True)
class SolutionPath:
    """A root-to-terminal path of one tree, already in react_sft text."""

    steps: tuple[TrainingStep, ...]
    correct: bool
    final_answer: str | None  # None or a sentinel for invalid terminals
    outputs: tuple[str, ...]  # observations of the error-free code steps
    code_steps: int
    code_errors: int

    @property
    def all_code_errors(self) -> bool:
        return self.code_steps > 0 and self.code_errors == self.code_steps


@dataclass
class ExportSummary:
    out: Path
    questions: int = 0  # distinct question ids with at least one tree
    trees: int = 0
    skipped_error_rows: int = 0  # results rows whose problem failed (`error` set)
    candidates: int = 0  # terminal paths before the filter
    duplicates: int = 0
    all_error_dropped: int = 0
    positives: int = 0  # rows written
    negatives: int = 0
    questions_without_positive: int = 0
    levels: dict[int, int] = field(default_factory=lambda: {1: 0, 2: 0, 3: 0})  # of written positives

    @property
    def rows(self) -> int:
        return self.positives + self.negatives


# ---------------------------------------------------------------------------------- one tree


def _sft_step(node: Node) -> str:
    """The node's step as react_sft text (unchanged when it already is, or does not parse)."""
    text = node.text
    if text.lstrip().startswith("<step>"):
        return text
    head, sep, observed = text.partition(_OBSERVATION)
    step = _REACT.parse(head)
    if step.error is not None or step.action == NO_ACTION:  # no XML counterpart: keep it
        return text
    if step.final_answer is not None:
        return _SFT.parse(_SFT.format_step(step.thought, final_answer=step.final_answer)).text
    assert step.code is not None
    code_step = _SFT.parse(_SFT.format_step(step.thought, code=step.code))
    observation = node.observation if node.observation is not None else observed
    return _SFT.with_observation(code_step, observation)


def _check_ground_truth(tree: Tree, where: str) -> None:
    for node in tree.nodes:
        if node.terminal and node.reward is None and node.final_answer is not None \
                and not is_sentinel(node.final_answer):
            raise TrainingDataError(
                f"{where}: the tree's answer leaves carry no reward, so it was not built with the "
                "ground truth; export-training needs results of a mcts_train_round* preset "
                "(use_ground_truth: true), or --targets outcome to grade its answers here")


def label_outcomes(tree: Tree, reference: Any, equiv: Equiv) -> None:
    """Grade `tree`'s terminals against `reference` and back their outcomes up (in place).

    Each terminal's reward becomes +1 (its answer is equivalent to the reference) or −1 (wrong,
    or an invalid terminal); every node's visits / value_sum become the count / sum of the
    outcomes of the terminals below it, so `node.q` is their mean. Whatever statistics the
    search left (an inference tree's visit counts and values) are replaced: they are not targets.
    """
    for node in tree.nodes:
        node.visits, node.value_sum = 0, 0.0
    grades: dict[str, bool] = {}  # samples repeat their answers: grade each one once
    for leaf in tree.nodes:
        if not leaf.terminal or leaf.parent is None:
            continue
        answer = leaf.final_answer
        if answer is None or is_sentinel(answer):
            right = False
        elif answer in grades:
            right = grades[answer]
        else:
            right = grades[answer] = bool(equiv(reference, answer))
        leaf.reward = 1.0 if right else -1.0
        backup(tree, leaf, leaf.reward)  # MCTS's own backup: N and W along the path


def solution_paths(tree: Tree) -> list[SolutionPath]:
    """Every root-to-terminal path of `tree`, in node order."""
    out: list[SolutionPath] = []
    for leaf in tree.nodes:
        if not leaf.terminal or leaf.parent is None:
            continue
        nodes = tree.path(leaf)
        code_nodes = [n for n in nodes if n.code is not None]
        out.append(SolutionPath(
            steps=tuple(TrainingStep(_sft_step(n), n.q) for n in nodes),
            correct=leaf.reward is not None and leaf.reward > 0,
            final_answer=leaf.final_answer,
            outputs=tuple(n.observation for n in code_nodes
                          if not n.code_error and n.observation is not None),
            code_steps=len(code_nodes),
            code_errors=sum(n.code_error for n in code_nodes),
        ))
    return out


# ------------------------------------------------------------------------- the solution filter


def solution_rank(path: SolutionPath, equiv: Equiv) -> int:
    """Algorithm 3's level of a positive: 1 best (answer = some code output), 2 (no code error),
    3 (the rest)."""
    answer = path.final_answer
    if answer is not None and not is_sentinel(answer) and any(equiv(o, answer) for o in path.outputs):
        return 1
    return 2 if path.code_errors == 0 else 3


def filter_solutions(
    paths: Iterable[SolutionPath], equiv: Equiv, summary: ExportSummary | None = None
) -> tuple[list[tuple[int, SolutionPath]], list[SolutionPath]]:
    """Dedupe and drop all-error paths; return (positives with their level, negatives)."""
    seen: set[tuple[str, ...]] = set()
    positives: list[tuple[int, SolutionPath]] = []
    negatives: list[SolutionPath] = []
    for path in paths:
        key = tuple(s.text for s in path.steps)
        if key in seen:
            if summary is not None:
                summary.duplicates += 1
            continue
        seen.add(key)
        if path.all_code_errors:
            if summary is not None:
                summary.all_error_dropped += 1
            continue
        if path.correct:
            positives.append((solution_rank(path, equiv), path))
        else:
            negatives.append(path)
    return positives, negatives


def rows_for_question(
    qid: str, question: str, paths: Sequence[SolutionPath], *, rng: random.Random,
    max_per_class: int = 4, equiv: Equiv, summary: ExportSummary | None = None,
) -> list[TrainingRow]:
    """Filter, then sample ≤ max_per_class positives (best levels first) and negatives."""
    positives, negatives = filter_solutions(paths, equiv, summary)
    rng.shuffle(positives)
    positives.sort(key=lambda lp: lp[0])  # stable: random within a level
    chosen_pos = positives[:max_per_class]
    chosen_neg = rng.sample(negatives, min(max_per_class, len(negatives)))
    prompt = _SFT.build_prompt(question, [])
    rows = [TrainingRow(prompt, p.steps, True, qid) for _, p in chosen_pos]
    rows += [TrainingRow(prompt, p.steps, False, qid) for p in chosen_neg]
    if summary is not None:
        summary.positives += len(chosen_pos)
        summary.negatives += len(chosen_neg)
        summary.questions_without_positive += not chosen_pos
        for level, _ in chosen_pos:
            summary.levels[level] += 1
    return rows


# ---------------------------------------------------------------------------------- the files


def _iter_results(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) per results line; a torn last line (a killed run) is skipped."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise TrainingDataError(f"cannot read results file {path}: {exc.strerror or exc}") from exc
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(raw)
            except ValueError:
                if not raw.endswith(b"\n") and not fh.read(1):
                    return  # torn last line
                raise TrainingDataError(f"{where}: not a JSON results row") from None
            if not isinstance(row, dict) or "id" not in row:
                raise TrainingDataError(f"{where}: not a results row (no 'id')")
            yield where, row


def _has_answer(row: dict[str, Any]) -> bool:
    answer = row.get("answer")
    if isinstance(answer, list):
        return any(isinstance(a, str) and a.strip() for a in answer)
    return isinstance(answer, (str, int, float)) and str(answer).strip() != ""


def export_training(
    results: Path | Sequence[Path], out: Path, *, max_per_class: int = 4, seed: int = 0,
    equiv: Equiv | None = None, targets: Targets = "q",
) -> ExportSummary:
    """Turn search results into training rows at `out` (JSONL, overwritten).

    `targets="q"`: ground-truth MCTS trees, each step's backed-up Q as its target; "outcome":
    the trees of any run, graded here against each row's answer (`label_outcomes`).

    Raises TrainingDataError — before writing anything — when a row has no ground-truth answer
    or no tree, a tree's answers carry no rewards (an inference run) under "q", or no row results.
    """
    if max_per_class < 1:
        raise TrainingDataError(f"max_per_class must be >= 1, got {max_per_class}")
    if targets not in ("q", "outcome"):
        raise TrainingDataError(f"targets must be 'q' or 'outcome', got {targets!r}")
    if equiv is None:
        from evals.grader import is_equiv as equiv
    paths = [results] if isinstance(results, (str, Path)) else list(results)
    summary = ExportSummary(out=Path(out))
    # 1) read every tree, pooling the paths of each question (trees are not kept in memory)
    pooled: dict[str, tuple[str, list[SolutionPath]]] = {}
    for path in paths:
        for where, row in _iter_results(Path(path)):
            if row.get("error") is not None:
                summary.skipped_error_rows += 1
                continue
            if not _has_answer(row):
                raise TrainingDataError(
                    f"{where}: row {row['id']!r} has no ground-truth 'answer'; export-training "
                    "needs results of a mcts_train_round* preset on a dataset with answers")
            tree_json = row.get("tree")
            if not isinstance(tree_json, dict) or not isinstance(tree_json.get("nodes"), list):
                raise TrainingDataError(f"{where}: row {row['id']!r} has no search tree")
            try:
                tree = Tree.from_json(tree_json)
            except (TypeError, KeyError, IndexError, ValueError) as exc:
                raise TrainingDataError(f"{where}: row {row['id']!r}: malformed tree ({exc})") from exc
            if targets == "outcome":
                label_outcomes(tree, row["answer"], equiv)
            else:
                _check_ground_truth(tree, where)
            summary.trees += 1
            qid = str(row["id"])
            question = str(row.get("question", ""))
            found = solution_paths(tree)
            summary.candidates += len(found)
            pooled.setdefault(qid, (question, []))[1].extend(found)
    summary.questions = len(pooled)
    # 2) filter and sample per question (one rng, questions in first-seen order: reproducible)
    rng = random.Random(seed)
    rows: list[TrainingRow] = []
    for qid, (question, found) in pooled.items():
        rows += rows_for_question(qid, question, found, rng=rng, max_per_class=max_per_class,
                                  equiv=equiv, summary=summary)
    if not rows:
        names = ", ".join(str(p) for p in paths)
        raise TrainingDataError(
            f"no training rows from {names}: {summary.trees} trees, {summary.candidates} terminal "
            f"paths, {summary.skipped_error_rows} failed rows")
    write_training_rows(rows, out)
    return summary


def write_training_rows(rows: Iterable[TrainingRow], out: Path) -> Path:
    """Write rows as JSONL (atomically: a temporary sibling renamed into place)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out


def read_training_rows(paths: Path | Sequence[Path]) -> list[TrainingRow]:
    """Load training rows from one or more JSONL files; TrainingDataError on a bad or empty set."""
    files = [paths] if isinstance(paths, (str, Path)) else list(paths)
    rows: list[TrainingRow] = []
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise TrainingDataError(f"cannot read training data {path}: {exc.strerror or exc}") from exc
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                steps = tuple(TrainingStep(str(s["text"]), None if s["q"] is None else float(s["q"]))
                              for s in raw["steps"])
                row = TrainingRow(str(raw["prompt"]), steps, bool(raw["correct"]), str(raw.get("id", "")))
            except (ValueError, KeyError, TypeError) as exc:
                raise TrainingDataError(
                    f"{path}:{lineno}: not a training row {{prompt, steps: [{{text, q}}], correct}} "
                    f"({type(exc).__name__}: {exc})") from None
            if not steps:
                raise TrainingDataError(f"{path}:{lineno}: training row has no steps")
            rows.append(row)
    if not rows:
        raise TrainingDataError(f"empty training set: no rows in {', '.join(str(f) for f in files)}")
    return rows
