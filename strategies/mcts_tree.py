"""The tree mechanics of MCTS (ALPHAMATH.md §3), free of any I/O: PUCT selection, backup, the
terminal limits applied to fresh children, and the ranking of solutions.

Kept apart from `strategies/mcts.py` so the search loop there reads as the paper's four phases
and these pieces can be tested (and reasoned about) on hand-built trees.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from runtime.engine import Completion, Engine, SamplingParams
from runtime.react import SENTINEL_TOO_MANY_CODE_ERRORS, SENTINEL_TOO_MANY_STEPS, is_sentinel
from runtime.tree import Node, Tree

# The original's MCTSNode.prior default, used when an engine reports no logprobs.
DEFAULT_PRIOR = 1.0


def puct(child: Node, parent_visits_sqrt: float, c_puct: float) -> float:
    """Q(child) + c_puct · P(child) · sqrt(N(parent)) / (1 + N(child)); Q = 0 when unvisited."""
    prior = DEFAULT_PRIOR if child.prior is None else child.prior
    return child.q + c_puct * prior * parent_visits_sqrt / (1 + child.visits)


def best_child(nodes: Sequence[Node], parent: Node, c_puct: float,
               rng: random.Random) -> Node | None:
    """The non-terminal child with the highest PUCT, ties broken uniformly at random by `rng`
    (drawn from only when there is a tie, so a tie-free search never touches it); None when
    every child is terminal."""
    sqrt_n = math.sqrt(parent.visits)
    best_score = -math.inf
    best: list[Node] = []
    for cid in parent.children:
        child = nodes[cid]
        if child.terminal:
            continue
        # `puct()` inlined (the search's hottest loop), the same float operations in the
        # original's order, so near-ties resolve as they did there
        visits = child.visits
        prior = DEFAULT_PRIOR if child.prior is None else child.prior
        score = (child.value_sum / visits if visits else 0) + c_puct * prior * sqrt_n / (1 + visits)
        if score > best_score:
            best_score = score
            best = [child]
        elif score == best_score:
            best.append(child)
    if not best:
        return None
    return best[0] if len(best) == 1 else rng.choice(best)


def select_leaf(tree: Tree, c_puct: float, rng: random.Random, *, legacy_stop: bool) -> Node | None:
    """Descend from the root by PUCT to a non-terminal node without children.

    A node met with only terminal children is marked terminal (it can never be entered again).
    Then, with `legacy_stop`, None is returned at once: the original's solver drops the question
    there. Otherwise selection backs off to the parent and picks among its remaining children —
    exactly what restarting from the root would pick, since no statistic changed, up to tie
    draws. None means the root itself ran out of non-terminal children: nothing is left.
    """
    nodes = tree.nodes
    node = tree.root
    while node.children and not node.terminal:
        child = best_child(nodes, node, c_puct, rng)
        if child is not None:
            node = child
            continue
        node.terminal = True
        if legacy_stop or node.parent is None:
            return None
        node = nodes[node.parent]
    return None if node.terminal else node


def backup(tree: Tree, node: Node, value: float) -> None:
    """N += 1 and W += value on `node` and every ancestor; a node's `value` keeps the first value
    ever backed up through it (the original's `update`), so it stays None until then."""
    nodes = tree.nodes
    cur: Node | None = node
    while cur is not None:
        cur.visits += 1
        cur.value_sum += value
        if cur.value is None:
            cur.value = value
        cur = None if cur.parent is None else nodes[cur.parent]


def apply_limits(child: Node, *, errors_threshold: int, max_depth: int) -> None:
    """The two terminal rules `expand()` leaves to the search (§1.3, §3), in the original's order:
    too many consecutive code errors (only when `errors_threshold` > 0), then a non-answer
    beyond `max_depth`."""
    if child.terminal:
        return
    if errors_threshold > 0 and child.consecutive_errors > errors_threshold:
        child.terminal = True
        child.final_answer = SENTINEL_TOO_MANY_CODE_ERRORS
    elif child.depth > max_depth:
        child.terminal = True
        child.final_answer = SENTINEL_TOO_MANY_STEPS


def is_valid_answer(node: Node) -> bool:
    return node.terminal and node.final_answer is not None and not is_sentinel(node.final_answer)


def ranked_solutions(tree: Tree) -> list[Node]:
    """Valid answer leaves, best Q first; equal Q keeps creation order (node id)."""
    return sorted((n for n in tree.nodes if is_valid_answer(n)), key=lambda n: (-n.q, n.id))


class UniqueTexts:
    """An `Engine` view that drops samples whose text repeats an earlier sibling's, keeping the
    first of each in sample order (`remove_duplicate`; the original went through a `set`, which
    scrambled child order)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def generate(self, prompt: str, params: SamplingParams) -> list[Completion]:
        seen: set[str] = set()
        out: list[Completion] = []
        for completion in await self._engine.generate(prompt, params):
            if completion.text not in seen:
                seen.add(completion.text)
                out.append(completion)
        return out

    async def value(self, prompts: Sequence[str]) -> list[float]:
        return await self._engine.value(prompts)

    async def aclose(self) -> None:
        """The wrapped engine belongs to the caller; closing a view closes nothing."""
