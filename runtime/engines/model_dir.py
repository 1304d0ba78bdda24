"""Telling a local model directory that is not there from a hub id, before any loader runs.

transformers answers a missing `/data/ckpt` with "Repo id must be in the form 'repo_name' or
'namespace/repo_name'", which sends the user looking at the hub; every loader of ours checks this
first and says "no such directory" instead, in the one wording `missing_local_model` gives.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["is_missing_local_model", "missing_local_model"]


def is_missing_local_model(name: str | os.PathLike[str]) -> bool:
    """True when `name` is meant as a local path (absolute, `./`, `../`, `~`, or an existing
    path) but is no directory. Hub ids (`org/name`) are left to the loader."""
    text = os.fspath(name)
    path = Path(text).expanduser()
    meant_local = text.startswith(("/", ".", "~")) or path.exists()
    return meant_local and not path.is_dir()


def missing_local_model(name: str | os.PathLike[str]) -> str | None:
    """The one-line message for a local model path that is no directory, else None; each
    loader raises it as its own error type (EngineError, CheckpointError)."""
    if is_missing_local_model(name):
        return f"cannot load model {os.fspath(name)}: no such directory"
    return None
