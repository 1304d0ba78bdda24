"""Training-side tools. Never needed for inference. Today: the tiny local model builder."""

from __future__ import annotations

from training.tiny_model import build_tiny_model

__all__ = ["build_tiny_model"]
