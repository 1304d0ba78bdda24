"""Shared fixtures. Keep each one small; heavy builds are session-scoped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 policy+value model (training/tiny_model.py), built once per session.

    Set ALPHAMATH_TINY_MODEL_DIR to keep it between sessions (it is rebuilt only when missing,
    incomplete or from an older recipe)."""
    from training.tiny_model import build_tiny_model

    cached = os.environ.get("ALPHAMATH_TINY_MODEL_DIR")
    return build_tiny_model(Path(cached) if cached else tmp_path_factory.mktemp("tiny_model") / "model")
