"""Training-side tools, never needed for inference: the tiny local model, training data from
ground-truth MCTS trees, value-head initialisation and the policy + value trainer."""

from __future__ import annotations

from training.data import ExportSummary, export_training
from training.errors import CheckpointError, TrainingDataError, TrainingError
from training.tiny_model import build_tiny_model
from training.train import TrainConfig, TrainSummary, train
from training.value_head import init_value_head_dir

__all__ = [
    "CheckpointError",
    "ExportSummary",
    "TrainConfig",
    "TrainSummary",
    "TrainingDataError",
    "TrainingError",
    "build_tiny_model",
    "export_training",
    "init_value_head_dir",
    "train",
]
