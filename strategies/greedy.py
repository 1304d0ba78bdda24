"""Greedy ReAct: SBS(1,1) without the value head at temperature 0 (ALPHAMATH.md §4).

One sample per step until a final answer, an unparsable step, or `max_depth` steps — the
original's `sbs_greedy.yaml`. The result is a linear chain, written as a tree like any other.
"""

from __future__ import annotations

from runtime.problem import Problem
from runtime.react import SENTINEL_TOO_MANY_STEPS, get_format, is_sentinel
from runtime.config import StrategyConfig
from runtime.tree import Tree
from strategies.base import SearchResult, Solution, SolveContext, SolveStats
from strategies.expand import expand


class GreedyStrategy:
    name = "greedy"

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config

    async def solve(self, problem: Problem, ctx: SolveContext) -> SearchResult:
        fmt = get_format(self.config.prompt_format)
        tree = Tree()
        stats = SolveStats()
        node = tree.root
        while not node.terminal:
            if node.depth >= self.config.max_depth:
                # Out of steps without an answer: an invalid terminal, as the original marks it.
                node.terminal = True
                node.final_answer = SENTINEL_TOO_MANY_STEPS
                break
            children = await expand(tree, node, problem.question, fmt, ctx, stats, n=1)
            if not children:  # the prompt outgrew the context; expand() made `node` terminal
                break
            (node,) = children
        solutions = ([] if is_sentinel(node.final_answer) or node.final_answer is None
                     else [Solution(answer=node.final_answer, node_id=node.id)])
        stats.steps = node.depth
        stats.n_solutions = len(solutions)
        stats.finish()
        return SearchResult(tree=tree, prediction=solutions[0].answer if solutions else None,
                            solutions=solutions, stats=stats)
