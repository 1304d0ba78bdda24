"""Local model directories: telling one that is not there from a hub id, and fingerprinting one.

transformers answers a missing `/data/ckpt` with "Repo id must be in the form 'repo_name' or
'namespace/repo_name'", which sends the user looking at the hub; every loader of ours checks this
first and says "no such directory" instead, in the one wording `missing_local_model` gives.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["is_missing_local_model", "missing_local_model", "model_fingerprint"]

# Weights are read at this many evenly spaced offsets, this many bytes each: a training step
# changes essentially every byte, so a few samples tell two checkpoints apart, and a 15 GB model
# costs ~1 MB of reads per file instead of a full hash.
_SAMPLES, _CHUNK = 16, 64 * 1024


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


def model_fingerprint(name: str | os.PathLike[str] | None) -> str | None:
    """A short identity of the weights in local model directory `name` (its config, and each
    weights file's name, size and sampled bytes); None for anything else (a hub id, a server's
    model name). Results hash it so that retraining into the same directory, or a new model
    shipped at the same path, is not resumed into an earlier model's results file."""
    if name is None:
        return None
    path = Path(os.fspath(name)).expanduser()
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weights in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        size = weights.stat().st_size
        digest.update(f"\x00{weights.name}\x00{size}\x00".encode())
        with weights.open("rb") as f:
            for k in range(_SAMPLES):
                f.seek(size * k // _SAMPLES)
                digest.update(f.read(_CHUNK))
    return digest.hexdigest()[:16]
