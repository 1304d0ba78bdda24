"""Errors of the training package.

    AlphaMathError (runtime.errors)   base of every error we raise on purpose
    └── TrainingError                 training tools cannot go on; one line, the CLI prints it
        ├── TrainingDataError         a results file cannot become training data (no ground
        │                             truth, no trees, malformed rows) or a training-data file is
        │                             empty/malformed; recoverable by choosing other input
        └── CheckpointError           a model / checkpoint directory cannot be read or resumed

None of them is raised half-way through writing an output file: inputs are validated first.
"""

from __future__ import annotations

from runtime.errors import AlphaMathError

__all__ = ["CheckpointError", "TrainingDataError", "TrainingError"]


class TrainingError(AlphaMathError):
    """Base class of the training package's errors."""


class TrainingDataError(TrainingError):
    pass


class CheckpointError(TrainingError):
    pass
