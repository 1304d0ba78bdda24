"""Search strategies, chosen by name through `STRATEGIES` (one module per strategy)."""

from __future__ import annotations

from runtime.config import StrategyConfig
from runtime.errors import ConfigError
from strategies.base import SearchResult, Solution, SolveContext, SolveStats, Strategy, StrategyFactory
from strategies.beam import BeamSearchStrategy
from strategies.greedy import GreedyStrategy
from strategies.majority import MajorityVoteStrategy
from strategies.mcts import MCTSStrategy
from strategies.offline import (
    OfflineChoice,
    offline_answer,
    offline_kwargs,
    offline_rescore,
    offline_results,
    offline_solutions,
)

STRATEGIES: dict[str, StrategyFactory] = {
    "greedy": GreedyStrategy,
    "sbs": BeamSearchStrategy,
    "majority": MajorityVoteStrategy,
    "mcts": MCTSStrategy,
}


def make_strategy(config: StrategyConfig) -> Strategy:
    try:
        factory = STRATEGIES[config.name]
    except KeyError:
        raise ConfigError(f"unknown strategy {config.name!r}; available: {', '.join(sorted(STRATEGIES))}") from None
    return factory(config)


__all__ = ["STRATEGIES", "BeamSearchStrategy", "GreedyStrategy", "MCTSStrategy", "MajorityVoteStrategy", "OfflineChoice", "SearchResult", "Solution", "SolveContext",
           "SolveStats", "Strategy", "StrategyFactory", "make_strategy", "offline_answer",
           "offline_kwargs", "offline_rescore", "offline_results", "offline_solutions"]
