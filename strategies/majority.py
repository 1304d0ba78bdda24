"""Majority vote, maj@k (ALPHAMATH.md §4 "Maj@5 variants", §9 Table 3).

Three ways to get the k = `num_votes` votes (`vote_mode`):

- ``samples`` — "Maj@5": k independent sampled solutions with no value model. Each vote is its
  own chain (one sample per step at the config temperature: greedy's loop at T > 0), all k in
  flight together, vote i sampling with seed `seed + i`. Why chains rather than one request
  with n=k at the root: the k solutions are then i.i.d. samples of the policy, vote 0 is exactly
  the single sampled solution of the same seed, and nothing is lost, since an engine with prefix
  caching prefills the shared root prompt once anyway. Per-vote seeds are what make the chains
  differ: an engine that seeds each request replays the same sample for the same seed and
  prompt. (At T=0 all k chains are the same chain; the vote is then just greedy, k times over.)
  `vote_base` is not used in this mode.
- ``runs`` — "SBS(1,5) 5 runs + Maj@5": k independent runs of `vote_base` with seeds
  `seed + i`; each run's top-1 answer is a vote.
- ``top_k`` — "SBS(5,5) 1 run + Maj@5": one run of `vote_base` (seed `seed`); its first ≤ k
  solutions (best value first) are the votes.

Counting. Answers are grouped by equivalence, not by string: a vote joins the first cluster
whose representative (its first vote) `ctx.grade((representative,), vote)` accepts — the run's
grader, so "1/2" and "0.5" are one answer. Identical strings skip the grader; without a grader
(`ctx.grade` None) only identical strings group. Equivalence need not be transitive, so
clustering is leader-based in vote order (vote order: run index, or solution rank for top_k).
Clusters rank by size; ties go to the cluster holding the highest-valued vote (a vote without a
value counts lowest), then to the cluster whose first vote came first. The prediction is the
winning cluster's first vote.

Result. `solutions` has one entry per cluster in that rank order: `answer` and `node_id` of the
cluster's first vote, and `value` = the vote share, count / num_votes (so count = share · k;
abstaining runs — no answer — count in the denominator). For ``samples``/``runs`` the k run
trees are put in ONE tree: node 0 is the shared question root and each run's nodes follow as a
contiguous block (run i's node j > 0 gets id j + Σ_{m<i} (|run m| − 1)), its depth-1 nodes
children of the shared root. Depths, parent links and root-to-node paths (so prompts, value
prompts and code histories) are exactly those of the run: offline inference and training-data
extraction read it like one search whose root was expanded k times. Stats sum over the runs;
`steps` is the winning vote's depth, `n_solutions` the number of distinct answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from runtime.config import StrategyConfig
from runtime.errors import ConfigError
from runtime.problem import Problem
from runtime.tree import Tree
from strategies.base import Grade, SearchResult, Solution, SolveContext, SolveStats, StrategyFactory
from runtime.aio import gather_cancelling
from strategies.beam import BeamSearchStrategy
from strategies.greedy import GreedyStrategy

__all__ = ["Cluster", "MajorityVoteStrategy", "Vote", "cluster_votes", "merge_trees"]

# Bases known here; any other name is looked up in the registry when the strategy is built.
_BASES: dict[str, StrategyFactory] = {"greedy": GreedyStrategy, "sbs": BeamSearchStrategy}


@dataclass(frozen=True)
class Vote:
    answer: str
    node_id: int  # in the result's (merged) tree
    value: float | None


@dataclass
class Cluster:
    """Equivalent answers; the first vote represents them."""

    answer: str
    node_id: int
    first: int  # index of the first vote
    count: int = 1
    best: float | None = None  # the highest value among its votes

    def add(self, vote: Vote) -> None:
        self.count += 1
        if vote.value is not None and (self.best is None or vote.value > self.best):
            self.best = vote.value


async def _same(representative: str, answer: str, grade: Grade | None) -> bool:
    if representative.strip() == answer.strip():
        return True
    return grade is not None and await grade((representative,), answer)


async def cluster_votes(votes: Sequence[Vote], grade: Grade | None) -> list[Cluster]:
    """Group votes by equivalence and rank the groups (see the module docstring)."""
    clusters: list[Cluster] = []
    for i, vote in enumerate(votes):
        for cluster in clusters:
            if await _same(cluster.answer, vote.answer, grade):
                cluster.add(vote)
                break
        else:
            clusters.append(Cluster(answer=vote.answer, node_id=vote.node_id, first=i, best=vote.value))
    return sorted(clusters, key=lambda c: (-c.count, -(c.best if c.best is not None else -math.inf), c.first))


def merge_trees(trees: Sequence[Tree]) -> tuple[Tree, list[int]]:
    """One tree holding every run's nodes under a shared root; returns it and each run's id
    offset (run i's node j > 0 is node j + offsets[i]; roots map to 0)."""
    merged = Tree()
    root = merged.root
    root.visits = sum(t.root.visits for t in trees)
    root.value_sum = sum(t.root.value_sum for t in trees)
    offsets: list[int] = []
    for tree in trees:
        offset = len(merged.nodes) - 1
        offsets.append(offset)

        def new_id(old: int, offset: int = offset) -> int:
            return 0 if old == 0 else old + offset

        for node in tree.nodes[1:]:
            assert node.parent is not None
            merged.nodes.append(replace(node, id=new_id(node.id), parent=new_id(node.parent),
                                        children=[new_id(c) for c in node.children]))
        root.children.extend(new_id(c) for c in tree.root.children)
    return merged, offsets


class MajorityVoteStrategy:
    """maj@k over sampled chains, over k runs of a base strategy, or over one run's top k."""

    name = "majority"

    def __init__(self, config: StrategyConfig, base_factory: StrategyFactory | None = None) -> None:
        self.config = config
        if config.vote_mode == "samples":
            self.base_factory: StrategyFactory = base_factory or GreedyStrategy
        else:
            self.base_factory = base_factory or _resolve_base(config.vote_base)

    def _run_config(self, seed: int) -> StrategyConfig:
        name = "greedy" if self.config.vote_mode == "samples" else self.config.vote_base
        return self.config.model_copy(update={"name": name, "seed": seed})

    async def _run(self, problem: Problem, ctx: SolveContext, config: StrategyConfig) -> SearchResult:
        # expand() samples with ctx.strategy, so each run's context carries its own config.
        return await self.base_factory(config).solve(problem, replace(ctx, strategy=config))

    async def solve(self, problem: Problem, ctx: SolveContext) -> SearchResult:
        cfg = self.config
        k = cfg.num_votes
        stats = SolveStats()
        # 1) the votes and the tree they live in
        if cfg.vote_mode == "top_k":
            runs = [await self._run(problem, ctx, self._run_config(cfg.seed))]
            tree = runs[0].tree
            votes = [Vote(s.answer, s.node_id, s.value) for s in runs[0].solutions[:k]]
        else:
            runs = await gather_cancelling(
                self._run(problem, ctx, self._run_config(cfg.seed + i)) for i in range(k))
            tree, offsets = merge_trees([r.tree for r in runs])
            votes = [Vote(r.solutions[0].answer, r.solutions[0].node_id + offset, r.solutions[0].value)
                     for r, offset in zip(runs, offsets) if r.solutions]
        # 2) count
        clusters = await cluster_votes(votes, ctx.grade)
        solutions = [Solution(answer=c.answer, node_id=c.node_id, value=c.count / k) for c in clusters]
        for run in runs:
            stats.add_counts(run.stats)
        stats.steps = (tree.nodes[solutions[0].node_id].depth if solutions
                       else max(node.depth for node in tree.nodes))
        stats.n_solutions = len(solutions)
        stats.finish()
        return SearchResult(tree=tree, prediction=solutions[0].answer if solutions else None,
                            solutions=solutions, stats=stats)


def _resolve_base(name: str) -> StrategyFactory:
    if name == MajorityVoteStrategy.name:
        raise ConfigError("strategy.vote_base cannot be 'majority': a vote runs a search strategy")
    if name in _BASES:
        return _BASES[name]
    import strategies  # the registry imports this module, so it is read only when needed

    factory = strategies.STRATEGIES.get(name)
    if factory is None:
        known = sorted(set(_BASES) | set(strategies.STRATEGIES) - {MajorityVoteStrategy.name})
        raise ConfigError(f"unknown strategy.vote_base {name!r}; available: {', '.join(known)}")
    return factory
