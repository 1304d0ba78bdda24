"""MCTS over ReAct steps with PUCT, a value head and optional ground-truth rewards
(ALPHAMATH.md §3; the paper's eq. 4–6; the original's `agents/mcts.py` driven by its solver).

One tree per problem and `iterations` simulations. A simulation is:

1. **Selection.** From the root, while a node has children and is not terminal, enter the
   non-terminal child maximising ``Q + c_puct · P · sqrt(N(parent)) / (1 + N)`` (Q = 0 when
   unvisited; a missing prior counts as 1.0, the original's default). Exact ties are broken
   uniformly at random by a per-problem RNG seeded from ``(config.seed, problem.id)``, so a
   problem's tree does not depend on which other problems share the event loop.
   A node whose children are all terminal is marked terminal, so selection never enters it
   again. What happens next is the one place we deliberately differ by default:

   * ``legacy_stop: true`` — the search of this problem ends there, as in the original, whose
     batched solver never revisits a question once selection returns nothing (§3 [RUN]: 21 of
     40 iterations, 75 expandable nodes left).
   * ``legacy_stop: false`` (default) — selection backs off to the parent and chooses among its
     remaining non-terminal children, backing off further while whole subtrees are exhausted;
     the simulation still expands a leaf and counts once. The search ends early only when the
     root has no non-terminal child left: nothing is left to expand.

2. **Expansion** of the selected leaf with `n_generate_sample` samples in ONE engine request
   (`strategies.expand`; with `remove_duplicate`, identical sibling texts are dropped, first
   kept). A child is terminal on a final answer, a parse failure (NO_VALID_CHILD), more than
   `errors_threshold` consecutive code errors when that is > 0 (TOO_MANY_CODE_ERRORS; 0 means no
   limit — the original would have stopped at the first error with its default 0, but every
   MCTS config set 3), or a non-answer at depth > `max_depth` (TOO_MANY_STEPS).
3. **Evaluation.** V(leaf) comes from the value head (``ctx.values([value_prompt])``). The
   original read it from the generation call itself; here it is a separate request issued
   concurrently with the generation, so it costs no extra latency. MCTS always needs it, so
   `need_value_func` is not read here (the original, too, got V(leaf) regardless of it).
4. **Backup**, in the original's order (``create_child`` → ``update_recursive`` → solver value
   pass). Every backup adds N += 1, W += v from its node up to and including the root:

   a. each terminal child, in sample order, as it is created: sentinels −1 always; with
      `use_ground_truth` a valid answer gets +1 if ``ctx.grade(problem.answer, answer)`` else −1
      (both recorded in `node.reward`);
   b. then V(leaf) from the leaf — in the SAME simulation as (a), so a leaf that produced
      terminal children already carries their rewards when its own value arrives;
   c. then, without ground truth, the valid-answer children are value-scored in one batched
      request and each value is backed up from its child (`reward` stays None).

   `node.value` is the first value ever backed up through a node (the original's ``update``):
   V(leaf) for most expanded nodes, but a child's reward when (a) reached it first. A node that
   no backup reached keeps None.

Invariants (tested): every simulation backs up exactly once from its leaf and once from every
terminal child it created, so ``N(root) = simulations + #nodes created terminal``, and for each
node ``N = [expanded or created terminal] + Σ N(children)``.

Result: `solutions` are the valid answer leaves ranked by Q, best first (ties by creation
order), each with its Q as `value`; `prediction` is the best of them. This is not the offline
rule (greedy descent by Q through non-pruned children, §3 "Final answer at inference") — that
lives in offline inference, which reads the saved tree. `stats.steps` is the depth of the chosen
solution (0 when there is none) and `stats.engine_calls` equals the simulations run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random

from runtime.config import StrategyConfig
from runtime.errors import ConfigError
from runtime.problem import Problem
from runtime.react import ReactFormat, get_format, is_sentinel
from runtime.tree import Node, Tree
from strategies.base import TOO_LONG_VALUE, SearchResult, Solution, SolveContext, SolveStats
from strategies.expand import expand
from strategies.mcts_tree import UniqueTexts, apply_limits, backup, ranked_solutions, select_leaf

NEGATIVE_REWARD = -1.0
POSITIVE_REWARD = 1.0


class MCTSStrategy:
    name = "mcts"

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config

    async def solve(self, problem: Problem, ctx: SolveContext) -> SearchResult:
        cfg = self.config
        if cfg.use_ground_truth and ctx.grade is None:
            raise ConfigError("MCTS with use_ground_truth needs an answer checker (ctx.grade)")
        if cfg.remove_duplicate:
            ctx = dataclasses.replace(ctx, engine=UniqueTexts(ctx.engine))
        search = _Search(problem, ctx, cfg, get_format(cfg.prompt_format))
        rng = random.Random(f"{cfg.seed}:{problem.id}")  # str seeds hash stably (sha512)
        for _ in range(cfg.iterations):
            leaf = select_leaf(search.tree, cfg.c_puct, rng, legacy_stop=cfg.legacy_stop)
            if leaf is None:
                break
            await search.simulate(leaf)
        return search.result()


def _discard(future: asyncio.Future[list[float]]) -> None:
    """Abandon the concurrent value request of a failed simulation without leaving an
    unretrieved exception behind."""
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.cancel()


class _Search:
    """One problem's tree and the I/O of its simulations."""

    def __init__(self, problem: Problem, ctx: SolveContext, cfg: StrategyConfig,
                 fmt: ReactFormat) -> None:
        self.problem = problem
        self.ctx = ctx
        self.cfg = cfg
        self.fmt = fmt
        self.tree = Tree()
        self.stats = SolveStats()

    def _value_prompt(self, node: Node) -> str:
        return self.fmt.value_prompt(self.problem.question, [n.text for n in self.tree.path(node)])

    async def _values(self, nodes: list[Node]) -> list[float]:
        self.stats.value_calls += 1
        return await self.ctx.values([self._value_prompt(n) for n in nodes])

    async def simulate(self, leaf: Node) -> None:
        cfg, tree = self.cfg, self.tree
        # 1) expand (one generate request) while V(leaf) is computed alongside
        leaf_value = asyncio.ensure_future(self._values([leaf]))
        try:
            children = await expand(tree, leaf, self.problem.question, self.fmt, self.ctx,
                                     self.stats, n=cfg.n_generate_sample)
            if not children:  # the prompt outgrew the context: expand() made the leaf a dead end
                _discard(leaf_value)
                backup(tree, leaf, TOO_LONG_VALUE)
                return
            # 2) terminal rules, then rewards of terminal children, backed up in sample order
            for child in children:
                apply_limits(child, errors_threshold=cfg.errors_threshold, max_depth=cfg.max_depth)
            terminals = [c for c in children if c.terminal]
            graded = await self._rewards(terminals)
        except BaseException:
            _discard(leaf_value)
            raise
        queued: list[Node] = []
        for child, reward in zip(terminals, graded):
            if reward is None:
                queued.append(child)
                continue
            child.reward = reward
            backup(tree, child, reward)
        # 3) V(leaf), from the leaf
        (value,) = await leaf_value
        backup(tree, leaf, value)
        # 4) inference: valid answers are scored by the value head, one batched request
        if queued:
            for child, v in zip(queued, await self._values(queued)):
                backup(tree, child, v)

    async def _rewards(self, terminals: list[Node]) -> list[float | None]:
        """±1 per terminal child (sentinels always −1); None where the value head decides."""
        out: list[float | None] = []
        to_grade: list[int] = []
        for i, node in enumerate(terminals):
            if is_sentinel(node.final_answer):
                out.append(NEGATIVE_REWARD)
                continue
            out.append(None)
            if self.cfg.use_ground_truth:
                to_grade.append(i)
        if to_grade:
            assert self.ctx.grade is not None  # checked in solve()
            grade = self.ctx.grade
            answer = self.problem.answer
            verdicts = await asyncio.gather(
                *(grade(answer, terminals[i].final_answer or "") for i in to_grade))
            for i, correct in zip(to_grade, verdicts):
                out[i] = POSITIVE_REWARD if correct else NEGATIVE_REWARD
        return out

    def result(self) -> SearchResult:
        ranked = ranked_solutions(self.tree)
        solutions = [Solution(answer=n.final_answer or "", node_id=n.id, value=n.q) for n in ranked]
        stats = self.stats
        stats.steps = ranked[0].depth if ranked else 0
        stats.n_solutions = len(solutions)
        stats.finish()
        return SearchResult(tree=self.tree, prediction=solutions[0].answer if solutions else None,
                            solutions=solutions, stats=stats)
