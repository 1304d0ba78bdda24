"""The runtime: engines, ReAct step formats, search-tree model, config, scheduler, results.

Knows no search algorithm (those live in `strategies/`).
"""

from __future__ import annotations

from runtime.config import EngineConfig, EvalConfig, RunConfig, SandboxConfig, StrategyConfig
from runtime.engine import Completion, Engine, SamplingParams
from runtime.errors import (
    AlphaMathError,
    ConfigError,
    EngineError,
    EngineUnavailableError,
    NoLogprobsError,
    NoValueHeadError,
    ResultsError,
)
from runtime.problem import Problem
from runtime.tree import Node, Tree

__all__ = [
    "AlphaMathError",
    "Completion",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineUnavailableError",
    "EvalConfig",
    "NoLogprobsError",
    "NoValueHeadError",
    "Problem",
    "ResultsError",
    "RunConfig",
    "SamplingParams",
    "SandboxConfig",
    "StrategyConfig",
    "Node",
    "Tree",
]
