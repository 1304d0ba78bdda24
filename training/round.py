"""One self-improvement round (ALPHAMATH.md §0): MCTS trees with the ground truth on the training
questions → training rows → policy + value training → evaluation, every artifact in one run
directory:

    RUN/trees.jsonl       ground-truth MCTS results (resumable like any `eval` output)
    RUN/train_rows.jsonl  sampled paths with per-step Q targets
    RUN/model/            the trained model (+ value_head.safetensors, checkpoints)
    RUN/eval.jsonl        the trained model on the evaluation set
    RUN/round.json        what ran, and the numbers

Every step can be re-run: the two evaluations resume, export is cheap, training resumes from
its last checkpoint. Orchestration only; each step is the same code as its own CLI command.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals.report import Score, score_results
from runtime.config import EvalConfig, compose_config
from training.data import export_training
from training.train import TrainConfig, TrainSummary, train


@dataclass(frozen=True)
class RoundPlan:
    model: str
    run_dir: Path
    train_dataset: str = "synth-arith:train:200"
    eval_dataset: str = "synth-arith:test:200"
    train_preset: str = "mcts_train_round2"
    eval_preset: str = "greedy"
    overrides: tuple[str, ...] = ()  # `section.key=value`, applied to both searches
    sandbox: str = "auto"
    train_kwargs: tuple[tuple[str, Any], ...] = ()  # extra TrainConfig fields


@dataclass(frozen=True)
class RoundSummary:
    trees: Path
    rows: Path
    positives: int
    negatives: int
    model: Path
    train_steps: int
    final_loss: float | None
    eval: Score


def _search_config(preset: str, *, model: str, dataset: str, output: Path, sandbox: str,
                   overrides: Sequence[str]) -> EvalConfig:
    return compose_config(preset, engine={"model": model}, sandbox={"backend": sandbox},
                          run={"dataset": dataset, "output": str(output)}, overrides=overrides)


def run_round(plan: RoundPlan, evaluate: Callable[[EvalConfig], None],
              train_model: Callable[[TrainConfig], TrainSummary] = train) -> RoundSummary:
    """Run the four steps. `evaluate(config)` runs one search to completion (the CLI passes its
    own, with a progress bar); it must resume from `config.run.output`. `train_model(config)` is
    `train` (the CLI's adds a progress bar and the stop-after-this-step Ctrl-C)."""
    run = plan.run_dir
    run.mkdir(parents=True, exist_ok=True)
    trees, rows, model_dir, evals = run / "trees.jsonl", run / "train_rows.jsonl", run / "model", run / "eval.jsonl"

    evaluate(_search_config(plan.train_preset, model=plan.model, dataset=plan.train_dataset,
                            output=trees, sandbox=plan.sandbox, overrides=plan.overrides))
    exported = export_training(trees, rows)
    trained = train_model(TrainConfig(data=rows, model=Path(plan.model), output_dir=model_dir,
                                      resume=True, **dict(plan.train_kwargs)))
    evaluate(_search_config(plan.eval_preset, model=str(model_dir), dataset=plan.eval_dataset,
                            output=evals, sandbox=plan.sandbox, overrides=plan.overrides))
    summary = RoundSummary(trees=trees, rows=rows, positives=exported.positives,
                           negatives=exported.negatives, model=model_dir, train_steps=trained.steps,
                           final_loss=trained.final_loss, eval=score_results(evals))
    (run / "round.json").write_text(json.dumps(
        {"plan": asdict(plan), "summary": asdict(summary)}, indent=2, default=str))
    return summary
