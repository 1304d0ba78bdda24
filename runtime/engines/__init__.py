"""Engines by name. Heavy libraries (torch, transformers, vllm) are imported only when the engine
that needs them is opened, so `cli.py score` and friends start fast."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runtime.config import EngineConfig
from runtime.engine import Engine
from runtime.errors import ConfigError

ENGINE_KINDS = ("hf", "vllm", "openai")


@asynccontextmanager
async def open_engine(config: EngineConfig, *, seed: int = 0) -> AsyncIterator[Engine]:
    if config.model is None:
        raise ConfigError("no model given: pass --model PATH_OR_HUB_ID")
    if config.kind == "hf":
        from runtime.engines.hf import HFEngine

        loaded = HFEngine.load(config.model, device=config.device, dtype=config.dtype,
                               max_batch_size=config.max_batch_size,
                               batch_wait_ms=config.batch_wait_ms, seed=seed,
                               value_model=config.value_model)
        engine: Engine = await loaded if inspect.isawaitable(loaded) else loaded
    elif config.kind == "vllm":
        from runtime.engines.vllm import VLLMEngine

        engine = await VLLMEngine.load(
            config.model, max_model_len=config.max_model_len,
            gpu_memory_utilization=config.gpu_memory_utilization,
            value_memory_fraction=config.value_memory_fraction, seed=seed,
            enforce_eager=config.enforce_eager, dtype=config.dtype, block_size=config.block_size,
            value_model=config.value_model)
    elif config.kind == "openai":
        from runtime.engines.openai import OpenAIEngine

        if not config.base_urls:
            raise ConfigError("--engine openai needs server URLs: --set engine.base_urls=[http://host:8000]")
        engine = OpenAIEngine(config.base_urls, config.model, timeout_s=config.timeout_s,
                              max_retries=config.max_retries, value_endpoint=config.value_endpoint)
    else:  # pragma: no cover - pydantic restricts `kind` to ENGINE_KINDS
        raise ConfigError(f"unknown engine {config.kind!r}; available: {', '.join(ENGINE_KINDS)}")
    try:
        yield engine
    finally:
        await engine.aclose()
