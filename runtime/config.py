"""The one validated configuration object of a run, and how presets and overrides build it.

`EvalConfig` is frozen and validated on construction (pydantic): no I/O, no exits. The CLI builds
it from a YAML preset (`configs/NAME.yaml` or a path), then command-line flags, then `--set
dotted.key=value` overrides, in that order, and passes it down.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runtime.errors import ConfigError

if TYPE_CHECKING:
    from evals.datasets import FieldMap

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"

# The node scores offline inference can descend by (strategies.offline); one list for the
# config, the offline API and `offline --by`'s choices.
InferStrategy = Literal["q_value", "value", "visits", "puct", "likelihood"]
# Likewise the engines and sandbox backends: the config's types and the command line's choices.
EngineKind = Literal["hf", "vllm", "openai"]
SandboxBackend = Literal["auto", "bwrap", "docker"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StrategyConfig(_Section):
    """What the search does (ALPHAMATH.md §4, §6). Field names follow the original configs."""

    name: str = "greedy"
    prompt_format: Literal["react_sft", "react"] = "react_sft"
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(2000, ge=1, description="tokens per generated step")
    max_depth: int = Field(10, ge=1, description="steps before TOO_MANY_STEPS")
    n_generate_sample: int = Field(1, ge=1, description="B2: samples per expansion")
    step_beam_width: int = Field(1, ge=1, description="B1: beams kept per depth")
    need_value_func: bool = False
    seed: int = 1234
    # Search knobs used by beam search, MCTS, voting and offline inference (ALPHAMATH.md §3–4, §6).
    remove_duplicate: bool = Field(False, description="merge identical sibling texts")
    beam_score: Literal["value", "likelihood", "value+likelihood"] = Field(
        "value", description="SBS: rank candidates by the value head (the paper's), by the policy's "
        "own likelihood of the path (its weakest step's mean token log-probability; no value "
        "model needed), or by value + likelihood_weight × that likelihood")
    likelihood_weight: float = Field(1.0, ge=0.0, description="SBS value+likelihood: the "
                                     "likelihood's weight")
    c_puct: float = Field(1.25, gt=0.0, description="PUCT exploration constant")
    iterations: int = Field(40, ge=1, description="MCTS simulations per problem")
    errors_threshold: int = Field(0, ge=0, description="consecutive code errors before a node "
                                  "is terminal (0 = no limit)")
    use_ground_truth: bool = Field(False, description="terminal rewards ±1 from the reference "
                                   "answer (the original's is_sampling: training-data mode)")
    legacy_stop: bool = Field(False, description="end an MCTS search as soon as selection meets "
                              "a node whose children are all terminal, as the original did")
    prune: bool = Field(False, description="offline: drop subtrees without a valid answer leaf")
    infer_strategy: InferStrategy = "q_value"
    num_votes: int = Field(1, ge=1, description="k of maj@k / runs to vote over")
    vote_mode: Literal["samples", "runs", "top_k"] = Field(
        "samples", description="maj@k over k sampled solutions; over the top-1 answers of k runs "
        "of `vote_base`; or over one `vote_base` run's top-k solutions")
    vote_base: str = Field("greedy", description="the strategy a vote runs (for runs / top_k)")


class EngineConfig(_Section):
    kind: EngineKind = "hf"
    model: str | None = Field(None, description="model path or hub id (hf); served model name (openai)")
    value_model: str | None = Field(None, description="a separate value model for the value calls (a "
                                    "local checkpoint with value_head.safetensors); None: the policy's own head")
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_batch_size: int = Field(32, ge=1, description="rows (prompt × n) per forward batch")
    batch_wait_ms: float = Field(5.0, ge=0.0, description="how long the micro-batcher waits to fill a batch")
    # vLLM (--engine vllm): policy AsyncLLM + a pooling AsyncLLM for the value head.
    max_model_len: int = Field(4096, ge=16, description="context (capped at the model's)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    value_memory_fraction: float = Field(0.2, ge=0, lt=1, description="share of the memory for the value engine")
    enforce_eager: bool | None = Field(None, description="None: eager on CPU, CUDA graphs on GPU")
    block_size: int | None = Field(None, ge=1, description="KV-cache block in tokens, the prefix "
                                   "cache's unit; None: 32 on CPU (multiples of 32 there), vLLM's default on GPU")
    # OpenAI-compatible servers (--engine openai).
    base_urls: list[str] = Field(default_factory=list, description="server URLs; trees pinned per replica")
    timeout_s: float = Field(600.0, gt=0, description="per-request timeout")
    max_retries: int = Field(3, ge=0, description="retries on 5xx and connection errors")
    value_endpoint: str = "/classify"

    @model_validator(mode="after")
    def _value_model_needs_a_local_engine(self) -> EngineConfig:
        if self.value_model is not None and self.kind == "openai":
            # a server answers value calls with the model it serves (`serve --value-model`)
            raise ValueError("value_model is for the hf and vllm engines, not openai")
        return self


class SandboxConfig(_Section):
    backend: SandboxBackend = "auto"
    timeout_s: float = Field(15.0, gt=0, description="wall clock per code action (AlphaMath: 15 s)")
    memory_mb: int = Field(1024, ge=64)
    cpu_s: int = Field(20, ge=1)
    tmpfs_mb: int = Field(64, ge=1)
    max_concurrency: int | None = Field(None, ge=1, description="sandbox processes at once; default 2 × CPUs")
    # Pools (Docker always; bwrap with bwrap_pool or reuse_process).
    reuse_process: bool = Field(False, description="run requests in the warm server's process, state "
                                "reset in between (10-40x faster; weaker isolation between runs)")
    bwrap_pool: bool = Field(False, description="bwrap: warm servers instead of one sandbox per run")
    pool_size: int | None = Field(None, ge=1, description="warm sandboxes; default 2 × CPUs")
    max_uses: int | None = Field(None, ge=1, description="runs per sandbox before it is replaced; "
                                 "default 100, or 100,000 with reuse_process (a replacement re-imports "
                                 "sympy: ~1 CPU-s, which at 100 would cost more than the runs)")
    worker_runs: int = Field(1_000, ge=1, description="reuse_process: runs per worker process before "
                             "the sandbox forks a fresh one from its preloaded image (a fork: ~15 ms)")
    # Docker backend only.
    container_memory_mb: int = Field(1536, ge=128, description="cgroup memory (= memory+swap) per container")
    pids_limit: int = Field(128, ge=8)
    cpus: float = Field(1.0, ge=0.01, description="CPU quota per container")
    image: str = "alphamath-sandbox:1"


class RunConfig(_Section):
    dataset: str = "gsm8k"
    output: Path | None = None
    limit: int | None = Field(None, ge=1)
    shard: str | None = Field(None, description="'i/n', 0-based: problems k with k % n == i")
    concurrency: int = Field(256, ge=1, description="problems in flight at once")
    grade_timeout_s: float = Field(10.0, gt=0)
    retry_errors: bool = Field(False, description="solve again the problems whose saved row is an "
                               "error (the error rows are removed from the results file first)")
    # Field names of a user .json/.jsonl dataset (ignored for the bundled ones).
    id_field: str = "id"
    question_field: str = "question"
    answer_field: str = "answer"

    @field_validator("shard")
    @classmethod
    def _shard(cls, v: str | None) -> str | None:
        if v is not None:
            from evals.datasets import parse_shard  # evals imports runtime: import on use

            parse_shard(v)  # raises ValueError with the reason
        return v

    @property
    def shard_tuple(self) -> tuple[int, int] | None:
        from evals.datasets import parse_shard

        return None if self.shard is None else parse_shard(self.shard)

    def field_map(self) -> FieldMap:
        from evals.datasets import FieldMap

        try:
            return FieldMap(id=self.id_field, question=self.question_field, answer=self.answer_field)
        except ValueError as exc:
            raise ConfigError(f"config run.*_field: {exc}") from None


class EvalConfig(_Section):
    strategy: StrategyConfig = StrategyConfig()
    engine: EngineConfig = EngineConfig()
    sandbox: SandboxConfig = SandboxConfig()
    run: RunConfig = RunConfig()

    def results_hash(self) -> str:
        """Hash of everything that changes what a problem's result is (not where or how fast
        it runs); a resumed run must match it so one file never mixes two experiments. The
        model counts by its path *and* its weights (`model_fingerprint`): the same path may
        hold a retrained or newly shipped model. `sampling` numbers how engines derive their
        noise from a seed (2: per prompt, `runtime.engine.prompt_seed`), so files sampled the
        old way are not continued the new way."""
        from runtime.engines.model_dir import model_fingerprint  # runtime.engines imports us

        relevant = {"strategy": self.strategy.model_dump(mode="json"),
                    "model": self.engine.model, "dtype": self.engine.dtype,
                    "weights": model_fingerprint(self.engine.model), "sampling": 2}
        if self.engine.value_model is not None:  # absent otherwise: earlier files keep their hash
            relevant |= {"value_model": self.engine.value_model,
                         "value_weights": model_fingerprint(self.engine.value_model)}
        blob = json.dumps(relevant, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Read a preset by name (`configs/NAME.yaml`) or by path."""
    path = Path(name_or_path)
    if not (path.suffix in {".yaml", ".yml"} and path.exists()):
        path = CONFIGS_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown strategy preset {name_or_path!r}; "
                          f"choose one of {', '.join(preset_names())} or give a .yaml path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_value(raw: str) -> Any:
    # YAML scalars give the user ints, floats, bools and null without quoting rules of our own.
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings to a nested dict (returns a new dict)."""
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set expects section.key=value (e.g. strategy.max_tokens=256), got {item!r}")
        section, field = parts
        if section not in EvalConfig.model_fields:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}; "
                              f"sections are {', '.join(EvalConfig.model_fields)}")
        out.setdefault(section, {})[field] = parse_value(raw)
    return out


def merge(data: dict[str, Any], section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Set the non-None `values` into `data[section]` (flags given on the command line)."""
    out = dict(data)
    sec = dict(out.get(section) or {})
    sec.update({k: v for k, v in values.items() if v is not None})
    out[section] = sec
    return out


def compose_config(preset: str, *, engine: Mapping[str, Any] | None = None,
                   sandbox: Mapping[str, Any] | None = None, run: Mapping[str, Any] | None = None,
                   overrides: Sequence[str] = ()) -> EvalConfig:
    """Preset, then the given fields (None values ignored), then `--set` overrides; validated."""
    data = load_preset(preset)
    for section, values in (("engine", engine), ("sandbox", sandbox), ("run", run)):
        if values:
            data = merge(data, section, values)
    return build_config(apply_overrides(data, overrides))


def first_validation_error(exc: ValidationError) -> str:
    """`field.path: message` of a pydantic error's first problem: one line for a user."""
    first = exc.errors()[0]
    # A validator's own ValueError reads as written, without pydantic's "Value error, " prefix.
    error = first.get("ctx", {}).get("error") if first["type"] == "value_error" else None
    return f"{'.'.join(str(p) for p in first['loc'])}: {error or first['msg']}"


def build_config(data: Mapping[str, Any]) -> EvalConfig:
    """Validate; a bad value becomes one ConfigError line naming the field."""
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        # Pydantic's own messages do not name the bad value; our validators' messages say what
        # matters (a section's validator would echo the whole section, burying the message).
        shown = "" if first["type"] == "value_error" else f" (got {first.get('input')!r})"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"config {first_validation_error(exc)}{shown}{more}") from None


def default_sandbox_concurrency() -> int:
    return 2 * (os.cpu_count() or 1)
