"""Step-level beam search SBS(B1, B2), guided by the value head (ALPHAMATH.md §4).

`B1 = step_beam_width` beams are kept per depth, `B2 = n_generate_sample` samples per beam:

1. Depth 0 expands the root ONCE with `B1·B2` samples (one engine request, `n = B1·B2`); after
   that each of the ≤ B1 live beams gets `B2` samples (one request per beam, all in flight
   together so the engine batches them).
2. With `remove_duplicate`, identical sibling texts are merged, first occurrence wins. The
   original merged them through a Python `set`, so which copy survived, and the child order, were
   arbitrary; ours is stable so that a seed gives one tree. Merged copies are not in the tree
   (the original never made them nodes either).
3. Every candidate of the depth is scored in ONE `ctx.values` call; the prompt is the state
   through the candidate (`fmt.value_prompt`, ending with the "\\n" after ``</step>``). The raw
   V_φ goes into `node.value`: no backup, no Q.
4. Candidates are sorted by value, descending and stable (ties, and the no-value case, keep
   generation order: beams in rank order, samples in sample order), and the top
   `current_top_num` (initially B1) are taken:
   - a valid final answer joins the final answers and takes one slot for good;
   - an invalid terminal (a §1.4 sentinel) is dropped and also takes a slot for good;
   - a non-terminal candidate already at `max_depth` is out of steps: it is marked
     `TOO_MANY_STEPS`, as greedy marks it, and dropped, taking a slot;
   - the rest are the next live beams. Dead beams are never refilled (§11).
5. The search stops when no beam is live; that happens after at most `max_depth` steps.

`solutions` are the final answers by value, descending (stable); the prediction is the first.
SBS(1,1) with `need_value_func: false` is greedy decoding and builds exactly greedy's tree.

`beam_score` (ours, not the original's) chooses what "by value" ranks on. `value` is the paper's
V_φ. `likelihood` is the policy's own likelihood of the candidate's path: each step's mean token
log-probability (the log of the node's AlphaMath prior, so nothing extra is asked of the engine),
aggregated by the *weakest* step, as process reward models aggregate step scores by `min` — one
number copied wrong makes one improbable step, and averaging would dilute it. It needs no value
model and makes no value calls. `value+likelihood` ranks by V_φ + `likelihood_weight` × that.
Why: a small model's value head may rank a question's candidates worse than its own likelihood
does (README, "What the value head cannot see"). Whatever the score, `node.value` keeps V_φ (or
None) and a solution's `value` is the score it was ranked by.

Seeds: every request carries the config's seed (as greedy's), so the tree is reproducible. An
engine that seeds per request answers the same prompt with the same samples, so without
`remove_duplicate` two identical sibling beams grow identical children (the original's global
RNG gave them different ones); with it, as the presets have it, beams never share a prompt.

Node ids: concurrent expansions attach their children in whatever order the engine answers, so
the tree is renumbered at the end into creation order of a sequential run (root, then each
depth's candidates in generation order). The tree is then the same for the same seed however
requests interleave.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from runtime.aio import gather_cancelling
from runtime.config import StrategyConfig
from runtime.errors import NoLogprobsError
from runtime.problem import Problem
from runtime.react import SENTINEL_TOO_MANY_STEPS, ReactFormat, get_format, is_sentinel
from runtime.tree import Node, Tree
from strategies.base import SearchResult, Solution, SolveContext, SolveStats
from strategies.expand import expand

__all__ = ["BeamSearchStrategy", "merge_duplicates", "renumber"]


def merge_duplicates(children: list[Node]) -> list[Node]:
    """Siblings with distinct texts, first occurrence first (the original's `set`, made stable)."""
    seen: set[str] = set()
    out: list[Node] = []
    for child in children:
        if child.text not in seen:
            seen.add(child.text)
            out.append(child)
    return out


def renumber(tree: Tree, order: list[Node]) -> None:
    """Make `order` (root first, every parent before its children) the tree's node list: ids
    become positions and nodes left out (merged duplicates) disappear, with their child links."""
    new_id = {node.id: i for i, node in enumerate(order)}
    for node in order:
        node.children = [new_id[c] for c in node.children if c in new_id]
        node.parent = None if node.parent is None else new_id[node.parent]
    for i, node in enumerate(order):
        node.id = i
    tree.nodes = order


def path_likelihood(tree: Tree, node: Node) -> float:
    """The log-prior of the path's weakest step: min over steps of the mean token log-probability."""
    logps = []
    for step in tree.path(node):
        if step.prior is None:
            raise NoLogprobsError("beam_score likelihood needs token log-probabilities, which "
                                  "this engine did not return; use --set strategy.beam_score=value")
        logps.append(math.log(step.prior) if step.prior > 0 else -math.inf)  # exp underflow
    return min(logps)


def beam_scorer(cfg: StrategyConfig, tree: Tree) -> Callable[[Node], float]:
    """The score SBS ranks candidates by, higher first (`beam_score`; see the module docstring)."""
    def value(node: Node) -> float:
        # No value (need_value_func false): every score is equal and the stable sort keeps
        # generation order.
        return node.value if node.value is not None else 0.0

    if cfg.beam_score == "value":
        return value
    if cfg.beam_score == "likelihood":
        return lambda node: path_likelihood(tree, node)
    return lambda node: value(node) + cfg.likelihood_weight * path_likelihood(tree, node)


class BeamSearchStrategy:
    """SBS(B1, B2); see the module docstring for every rule."""

    name = "sbs"

    def __init__(self, config: StrategyConfig) -> None:
        self.config = config

    async def solve(self, problem: Problem, ctx: SolveContext) -> SearchResult:
        cfg = self.config
        # The strategy's own config also decides sampling (expand reads ctx.strategy), so a
        # strategy run with a modified config (a vote's seed) samples as configured.
        if ctx.strategy != cfg:
            ctx = replace(ctx, strategy=cfg)
        fmt = get_format(cfg.prompt_format)
        tree = Tree()
        stats = SolveStats()
        beams: list[Node] = [tree.root]
        slots = cfg.step_beam_width  # the original's current_top_num
        score = beam_scorer(cfg, tree)
        finals: list[tuple[float, Node]] = []  # (score, node): scored before renumbering
        created: list[Node] = [tree.root]  # every kept node in sequential creation order

        for step in range(cfg.max_depth):
            if not beams:
                break
            # 1) expand: the root once with B1·B2 samples, later each live beam with B2
            n = cfg.n_generate_sample * (cfg.step_beam_width if step == 0 else 1)
            groups = await gather_cancelling(
                expand(tree, beam, problem.question, fmt, ctx, stats, n=n) for beam in beams)
            # 2) the candidate pool, identical siblings merged
            pool = [child for group in groups
                    for child in (merge_duplicates(group) if cfg.remove_duplicate else group)]
            created.extend(pool)
            # 3) one batched value call for the whole depth
            if cfg.need_value_func and cfg.beam_score != "likelihood":
                await self._score(pool, tree, fmt, problem.question, ctx, stats)
            # 4) keep the top `slots`; answers and invalid terminals use their slot up
            beams = []
            for cand_score, cand in sorted(((score(c), c) for c in pool), key=lambda sc: -sc[0])[:slots]:
                if cand.terminal:
                    if not is_sentinel(cand.final_answer) and cand.final_answer is not None:
                        finals.append((cand_score, cand))
                    slots -= 1
                elif cand.depth >= cfg.max_depth:
                    cand.terminal = True
                    cand.final_answer = SENTINEL_TOO_MANY_STEPS
                    slots -= 1
                else:
                    beams.append(cand)

        renumber(tree, created)
        finals.sort(key=lambda sc: -sc[0])
        solutions = [Solution(answer=str(node.final_answer), node_id=node.id,
                              value=node.value if cfg.beam_score == "value" else node_score)
                     for node_score, node in finals]
        stats.steps = finals[0][1].depth if finals else max(node.depth for node in tree.nodes)
        stats.n_solutions = len(solutions)
        stats.finish()
        return SearchResult(tree=tree, prediction=solutions[0].answer if solutions else None,
                            solutions=solutions, stats=stats)

    @staticmethod
    async def _score(pool: list[Node], tree: Tree, fmt: ReactFormat, question: str,
                     ctx: SolveContext, stats: SolveStats) -> None:
        prompts = [fmt.value_prompt(question, [n.text for n in tree.path(cand)]) for cand in pool]
        values = await ctx.values(prompts)
        stats.value_calls += 1
        for cand, value in zip(pool, values, strict=True):
            cand.value = float(value)
