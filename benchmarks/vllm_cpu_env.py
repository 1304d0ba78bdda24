"""The environment every benchmark that runs vLLM's CPU build needs (the Makefile's VLLM_ENV)."""

from __future__ import annotations

import os

# A 2 GiB KV cache, the engine in the calling process, no model hub (models are local).
VLLM_CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def set_default_env(**extra: str) -> None:
    """Set VLLM_CPU_ENV and `extra` in this process where the user has not; call before vLLM is
    imported (it reads them at import)."""
    for key, value in {**VLLM_CPU_ENV, **extra}.items():
        os.environ.setdefault(key, value)
