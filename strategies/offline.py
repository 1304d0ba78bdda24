"""Offline inference on saved trees: the final answer of an MCTS run (ALPHAMATH.md §3, §6).

MCTS never names an answer while it searches; the original saves the whole tree and a separate
script (`offline_inference.py`) picks one afterwards. Doing it from the results file means the
choice rule (`by`, `prune`, `beam_width`) can be changed without re-running the model. The rule:

1. Rebuild the tree reading at most `max_children` (= B1·B2) children per node, in stored order;
   a child past the cut-off is ignored together with its subtree.
2. With `prune`, mark every subtree that holds no VALID leaf (no children and a non-empty,
   non-sentinel final answer). A pruned root means no answer.
3. Descend level by level: the candidates are the non-pruned children of the current nodes,
   sorted by the score (stable: ties keep stored order), and the top `slots` of them (at first
   `beam_width`) become the current nodes. A valid leaf among them is collected and gives up its
   slot; so does a dead end (a leaf that is not a valid answer, reachable only without `prune`).
   Slots are never refilled, so a descent can end with nothing collected → no answer.
4. The collected leaf with the best score (the earliest collected on ties) is the answer.

Scores: `q_value` = Q = W/N (0 unvisited); `value` = V_φ (None sorts last, scored -inf);
`visits` = N; `puct` = Q + c_puct·P·sqrt(N(parent))/(1 + N), with Q = 0 unvisited and a
missing prior read as 1.0 (the original's default); `likelihood` = the policy's own likelihood
of the path, its weakest step's mean token log-probability (log P), which is what
`sbs_3_5_likelihood` ranks by (strategies.beam.path_likelihood): with `beam_width` = B1 it
re-chooses that run's answer from its saved tree, and it can choose from any tree whose nodes
hold priors (an MCTS run's too) without a value model. A missing prior is an error here, not
1.0: a path likelihood with a step left out would compare paths of different lengths.

Everything here is pure: no model, no event loop. `offline_results` streams the file twice
(choose, then write) so a file of large trees is never held whole in memory.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Generator, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, get_args

from evals.errors import ScoreError
from evals.grader import Grader
from evals.report import Score, read_rows, score_results
from runtime.config import InferStrategy, StrategyConfig
from runtime.errors import NoLogprobsError
from runtime.react import is_sentinel
from runtime.tree import Node, Tree
from strategies.beam import path_likelihood

__all__ = [
    "OfflineBy",
    "OfflineChoice",
    "offline_answer",
    "offline_kwargs",
    "offline_rescore",
    "offline_results",
    "offline_solutions",
]

OfflineBy = InferStrategy
_BY: tuple[str, ...] = get_args(OfflineBy)
DEFAULT_GRADE_TIMEOUT_S = 10.0  # RunConfig.grade_timeout_s's default


@dataclass(frozen=True)
class OfflineChoice:
    """A collected answer leaf: its answer, node id and score under the chosen `by`."""

    answer: str
    node_id: int
    score: float


# --- one tree ----------------------------------------------------------------------------------


def offline_answer(tree: Tree, *, by: OfflineBy = "q_value", prune: bool = True,
                   beam_width: int = 1, max_children: int = 5,
                   c_puct: float = 1.25) -> OfflineChoice | None:
    """The answer offline inference picks from `tree`, or None (root pruned, or a dead end)."""
    found = offline_solutions(tree, by=by, prune=prune, beam_width=beam_width,
                              max_children=max_children, c_puct=c_puct)
    return found[0] if found else None


def offline_solutions(tree: Tree, *, by: OfflineBy = "q_value", prune: bool = True,
                      beam_width: int = 1, max_children: int = 5,
                      c_puct: float = 1.25) -> list[OfflineChoice]:
    """Every valid leaf the descent collected, best first (ties: the earlier collected).

    Raises NoLogprobsError for `by="likelihood"` on a tree whose nodes hold no prior."""
    _check(by, beam_width, max_children)
    if not tree.nodes:
        return []
    nodes = tree.nodes
    kids = _rebuild(tree, max_children)

    # 1) pruning: a node survives if it is a valid leaf or has a surviving child
    alive: dict[int, bool] = {}
    for nid in reversed(kids):  # `kids` is in BFS order, so children come before parents here
        alive[nid] = (any(alive[k] for k in kids[nid]) if kids[nid]
                      else _valid_leaf(nodes[nid], kids))
    if prune and not alive[0]:
        return []

    def score(node: Node) -> float:
        return _score(node, by, tree, c_puct)

    # 2) greedy descent, one level per turn, with slots given up by collected leaves/dead ends
    collected: list[Node] = []
    slots = beam_width
    current = [nodes[0]]
    while current and slots > 0:
        candidates = [nodes[k] for n in current for k in kids[n.id] if not prune or alive[k]]
        candidates.sort(key=score, reverse=True)  # stable: equal scores keep stored order
        current = []
        for node in candidates[:slots]:
            if _valid_leaf(node, kids):
                collected.append(node)
                slots -= 1
            elif not kids[node.id]:
                slots -= 1  # a dead end (only without prune) uses up its slot
            else:
                current.append(node)

    # 3) the best collected leaf
    collected.sort(key=score, reverse=True)
    return [OfflineChoice(answer=n.final_answer or "", node_id=n.id, score=score(n))
            for n in collected]


def _check(by: str, beam_width: int, max_children: int) -> None:
    if by not in _BY:
        raise ValueError(f"unknown offline score {by!r}; choose one of {', '.join(_BY)}")
    if beam_width < 1 or max_children < 1:
        raise ValueError(f"beam_width and max_children must be >= 1, got {beam_width}, "
                         f"{max_children}")


def _rebuild(tree: Tree, max_children: int) -> dict[int, list[int]]:
    """Children (cut at `max_children`) of every node reachable from the root, in BFS order."""
    kids: dict[int, list[int]] = {}
    queue, seen = [0], {0}  # `seen`: a corrupt file (a root naming a parent) cannot loop us
    for nid in queue:  # the list grows while we walk it: a BFS without popping
        kids[nid] = [k for k in tree.nodes[nid].children[:max_children] if k not in seen]
        seen.update(kids[nid])
        queue.extend(kids[nid])
    return kids


def _valid_leaf(node: Node, kids: dict[int, list[int]]) -> bool:
    return not kids[node.id] and bool(node.final_answer) and not is_sentinel(node.final_answer)


def _score(node: Node, by: str, tree: Tree, c_puct: float) -> float:
    if by == "likelihood":
        return path_likelihood(tree, node)
    if by == "q_value":
        return node.q
    if by == "value":
        return -math.inf if node.value is None else node.value
    if by == "visits":
        return float(node.visits)
    parent_visits = tree.nodes[node.parent].visits if node.parent is not None else 0
    prior = 1.0 if node.prior is None else node.prior
    return node.q + c_puct * prior * math.sqrt(parent_visits) / (1 + node.visits)


# --- results rows ------------------------------------------------------------------------------


def offline_kwargs(config: StrategyConfig) -> dict[str, Any]:
    """The keyword arguments of `offline_results`/`offline_rescore` that a preset sets
    (`configs/offline.yaml`); max_children is B1·B2 as in the original."""
    return {"by": config.infer_strategy, "prune": config.prune,
            "beam_width": config.step_beam_width,
            "max_children": config.step_beam_width * config.n_generate_sample,
            "c_puct": config.c_puct}


@dataclass(frozen=True)
class _Settings:
    by: OfflineBy
    prune: bool
    beam_width: int
    max_children: int
    c_puct: float


@dataclass(frozen=True)
class _Pick:
    """What offline inference made of one row (small: the tree is not kept)."""

    rescored: bool  # False: no tree or an error row, left as it was and counted wrong
    solutions: tuple[dict[str, Any], ...] = ()
    depth: int | None = None  # of the chosen node

    @property
    def prediction(self) -> str | None:
        return self.solutions[0]["answer"] if self.solutions else None


def _pick(row: dict[str, Any], s: _Settings, where: str) -> _Pick:
    raw = row.get("tree")
    if raw is None or row.get("error") is not None:
        return _Pick(rescored=False)
    try:
        tree = Tree.from_json(raw)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        raise ScoreError(f"{where}: field 'tree': not a saved tree ({type(exc).__name__}: "
                         f"{exc})") from exc
    try:
        found = offline_solutions(tree, by=s.by, prune=s.prune, beam_width=s.beam_width,
                                  max_children=s.max_children, c_puct=s.c_puct)
    except NoLogprobsError as exc:
        raise ScoreError(f"{where}: scoring by likelihood needs each node's prior, and this tree has "
                         f"none (its run's engine returned no token log-probabilities)") from exc
    solutions = tuple({"answer": c.answer, "node_id": c.node_id,
                       "value": tree.nodes[c.node_id].value,
                       "score": c.score if math.isfinite(c.score) else None} for c in found)
    depth = tree.nodes[found[0].node_id].depth if found else None
    return _Pick(rescored=True, solutions=solutions, depth=depth)


def _grade(rows_picks: list[tuple[dict[str, Any], _Pick]], grader: Grader | None,
           timeout_s: float | None) -> list[bool]:
    """Verdicts in row order; every comparison goes to the grader in one parallel batch."""
    todo = [i for i, (_, p) in enumerate(rows_picks) if p.rescored and p.prediction is not None]
    verdicts = [False] * len(rows_picks)
    if not todo:
        return verdicts
    pairs = [(rows_picks[i][0].get("answer"), rows_picks[i][1].prediction) for i in todo]
    own = grader is None
    g = Grader() if grader is None else grader
    try:
        fresh = g.grade_many(pairs, timeout_s)
    finally:
        if own:
            g.close()
    for i, verdict in zip(todo, fresh, strict=True):
        verdicts[i] = verdict
    return verdicts


def _updated(row: dict[str, Any], pick: _Pick, verdict: bool, s: _Settings) -> dict[str, Any]:
    """The row with offline inference's prediction, verdict, solutions and stats."""
    out = dict(row)
    if not pick.rescored:
        out["correct"] = False
        return out
    out["prediction"] = pick.prediction
    out["correct"] = verdict
    out["solutions"] = [dict(sol) for sol in pick.solutions]
    stats = out.get("stats")
    if isinstance(stats, dict):
        stats = dict(stats)
        stats["n_solutions"] = len(pick.solutions)
        if pick.depth is not None:
            stats["steps"] = pick.depth
        out["stats"] = stats
    out["offline"] = {"by": s.by, "prune": s.prune, "beam_width": s.beam_width,
                      "max_children": s.max_children, "c_puct": s.c_puct}
    return out


def offline_rescore(rows: Iterable[dict[str, Any]], *, by: OfflineBy = "q_value",
                    prune: bool = True, beam_width: int = 1, max_children: int = 5,
                    c_puct: float = 1.25, grader: Grader | None = None,
                    timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S) -> list[dict[str, Any]]:
    """Rows with `prediction`/`correct` recomputed by offline inference on their trees.

    Rows without a tree, and error rows, come back unchanged but with `correct` False.
    `grader` grades every prediction in one parallel batch (default: a temporary Grader).
    Raises ScoreError for a tree that cannot be read."""
    s = _settings(by, prune, beam_width, max_children, c_puct)
    rows_picks = [(row, _pick(row, s, f"row {row.get('id')!r}")) for row in rows]
    verdicts = _grade(rows_picks, grader, timeout_s)
    return [_updated(row, pick, v, s) for (row, pick), v in zip(rows_picks, verdicts, strict=True)]


def offline_results(path: Path, *, by: OfflineBy = "q_value", prune: bool = True,
                    beam_width: int = 1, max_children: int = 5, c_puct: float = 1.25,
                    output: Path | None = None, grader: Grader | None = None,
                    timeout_s: float | None = DEFAULT_GRADE_TIMEOUT_S) -> Score:
    """Re-choose every answer of the results file `path` offline, grade, and score it.

    With `output`, the rescored rows are written there (atomically; it may be `path` itself).
    A torn last line is skipped and counted, as `score_results` does. The Score names `path`,
    has `regraded` set and counts in `flipped` the rows whose verdict changed."""
    path = Path(path)
    s = _settings(by, prune, beam_width, max_children, c_puct)

    # 1) choose: one pass keeping only the small picks
    rows_picks: list[tuple[dict[str, Any], _Pick]] = []
    stored: list[bool] = []
    torn = 0
    for item in read_rows(path):
        if item is None:
            torn += 1
            continue
        line, row = item
        pick = _pick(row, s, f"{path}:{line}")
        stored.append(row.get("correct") is True and row.get("error") is None)
        rows_picks.append(({"answer": row.get("answer")}, pick))

    # 2) grade all at once
    verdicts = _grade(rows_picks, grader, timeout_s)
    flipped = sum(1 for old, new in zip(stored, verdicts, strict=True) if old != new)

    # 3) write the rescored rows (the trees only when they are kept), then score that file
    with TemporaryDirectory(prefix="offline-") as tmp:
        dest = Path(tmp) / "rescored.jsonl" if output is None else Path(output)
        _write_rescored(path, dest, [p for _, p in rows_picks], verdicts, s,
                        keep_tree=output is not None)
        score = score_results(dest)
    return replace(score, file=str(path), torn_lines=torn, regraded=True, flipped=flipped)


def _write_rescored(path: Path, dest: Path, picks: list[_Pick], verdicts: list[bool],
                    s: _Settings, *, keep_tree: bool) -> None:
    """Second pass over `path`: write the updated rows to `dest` atomically (via `.part`)."""
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        with part.open("w", encoding="utf-8") as fh, closing(_good_rows(path)) as rows:
            for pick, verdict in zip(picks, verdicts, strict=True):
                row = next(rows, None)
                if row is None:
                    raise ScoreError(f"{path}: changed while being rescored")
                new = _updated(row, pick, verdict, s)
                if not keep_tree:
                    new.pop("tree", None)
                fh.write(json.dumps(new, ensure_ascii=False) + "\n")
            if next(rows, None) is not None:
                raise ScoreError(f"{path}: changed while being rescored")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _good_rows(path: Path) -> Generator[dict[str, Any], None, None]:
    for item in read_rows(path):
        if item is not None:
            yield item[1]


def _settings(by: OfflineBy, prune: bool, beam_width: int, max_children: int,
              c_puct: float) -> _Settings:
    _check(by, beam_width, max_children)
    return _Settings(by=by, prune=prune, beam_width=beam_width, max_children=max_children,
                     c_puct=c_puct)
