"""Datasets, answer extraction, grading and scoring of results files.

Depends on `runtime.problem` and `runtime.errors` only; never on engines.
"""

from __future__ import annotations

from evals.datasets import BUILTIN_DATASETS, FieldMap, count_dataset, load_dataset, parse_shard
from evals.errors import DatasetError, ScoreError
from evals.extract import extract_answer
from evals.grader import Grader, close_default_grader, default_grader, is_equiv
from evals.report import Score, render_score, score_results

__all__ = [
    "BUILTIN_DATASETS",
    "DatasetError",
    "FieldMap",
    "Grader",
    "Score",
    "ScoreError",
    "close_default_grader",
    "count_dataset",
    "default_grader",
    "extract_answer",
    "is_equiv",
    "load_dataset",
    "parse_shard",
    "render_score",
    "score_results",
]
