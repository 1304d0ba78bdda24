"""One self-improvement round (ALPHAMATH.md §0): MCTS trees with the ground truth on the training
questions (or any search's graded samples) → training rows → policy + value training → evaluation,
every artifact in one run directory:

    RUN/trees.jsonl       the training search's results (resumable like any `eval` output)
    RUN/train_rows.jsonl  sampled paths with per-step value targets
    RUN/model/            the trained model (+ value_head.safetensors, checkpoints)
    RUN/value_fit/        with a value fit: the value head alone refitted on RUN/model's frozen
                          trunk (the policy unchanged) — then the round's model
    RUN/eval.jsonl        the round's model on the evaluation set
    RUN/round.json        what ran, and the numbers

The recipe is the plan's: value targets from the trees' Q (`targets="q"`, the paper's) or from
the graded outcomes of any search's samples (`"outcome"`, e.g. a sampling preset), extra rows
trained alongside (e.g. LM-only anchors, rows without targets), any training field.

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
from runtime.engines.model_dir import missing_local_model
from training.data import ExportSummary, Targets, export_training
from training.errors import CheckpointError, TrainingDataError, TrainingError
from training.train import TrainConfig, TrainSummary, checked_train_config, train

# A value fit steps the head alone, whose weights Adam moves together: much above 1e-3 a linear
# head overshoots (measured on the mini AlphaMath's rounds).
VALUE_FIT_LR = 1e-3
TREES, ROWS, EVAL = "trees.jsonl", "train_rows.jsonl", "eval.jsonl"  # in the run directory


@dataclass(frozen=True)
class RoundPlan:
    model: str
    run_dir: Path
    train_dataset: str = "synth-arith:train:200"
    eval_dataset: str = "synth-arith:test:200"
    train_preset: str = "mcts_train_round2"
    eval_preset: str = "greedy"
    overrides: tuple[str, ...] = ()  # `section.key=value`, applied to both searches
    train_overrides: tuple[str, ...] = ()  # ... to the tree-building search only (after `overrides`)
    eval_overrides: tuple[str, ...] = ()  # ... to the evaluation only
    sandbox: str = "auto"
    targets: Targets = "q"
    extra_data: tuple[Path, ...] = ()  # rows trained alongside the round's own
    train_kwargs: tuple[tuple[str, Any], ...] = ()  # extra TrainConfig fields
    value_fit_epochs: int = 0  # > 0: then fit the value head alone for this many epochs
    value_fit_lr: float = VALUE_FIT_LR


@dataclass(frozen=True)
class RoundSummary:
    trees: Path
    rows: Path
    positives: int
    negatives: int
    model: Path  # the round's model: RUN/value_fit with a value fit, else RUN/model
    train_steps: int
    final_loss: float | None
    value_fit_steps: int
    value_fit_loss: float | None
    eval: Score


def _search_config(preset: str, *, model: str, dataset: str, output: Path, sandbox: str,
                   overrides: Sequence[str]) -> EvalConfig:
    return compose_config(preset, engine={"model": model}, sandbox={"backend": sandbox},
                          run={"dataset": dataset, "output": str(output)}, overrides=overrides)


def _train_configs(plan: RoundPlan, rows: Path) -> tuple[TrainConfig, TrainConfig | None]:
    """The joint training's config and the value fit's (None without one)."""
    run, fields = plan.run_dir, dict(plan.train_kwargs)
    for extra in plan.extra_data:
        if not extra.is_file():
            raise TrainingDataError(f"no training rows at {extra} (--extra-data)")
    joint = checked_train_config(**{**fields, "data": (rows, *plan.extra_data), "model": Path(plan.model),
                                    "output_dir": run / "model", "resume": True})
    if plan.value_fit_epochs < 0:
        raise TrainingError(f"round value_fit_epochs: must be >= 0 (0: no value fit), got {plan.value_fit_epochs}")
    if plan.value_fit_epochs == 0:
        return joint, None
    # The round's own rows only (extra rows carry no value target); the joint training's
    # batching and length cutoff; the head's own rate is the fit's rate.
    fit = checked_train_config(**{**fields, "data": (rows,), "model": joint.output_dir,
                                  "output_dir": run / "value_fit", "resume": True, "freeze_trunk": True,
                                  "epochs": plan.value_fit_epochs, "lr": plan.value_fit_lr,
                                  "value_head_lr": None})
    return joint, fit


@dataclass(frozen=True)
class RoundConfigs:
    """Every step's settings, checked."""

    search: EvalConfig  # the tree-building search
    joint: TrainConfig
    fit: TrainConfig | None  # the value fit, if any
    evaluation: EvalConfig  # of the round's model


def plan_round(plan: RoundPlan) -> RoundConfigs:
    """Every step's settings, built and checked without writing anything: run first, so that a
    typo in the last step's settings costs a second, not the first steps' hour."""
    run = plan.run_dir
    if missing := missing_local_model(plan.model):
        raise CheckpointError(missing)
    joint, fit = _train_configs(plan, run / ROWS)
    search = _search_config(plan.train_preset, model=plan.model, dataset=plan.train_dataset,
                            output=run / TREES, sandbox=plan.sandbox,
                            overrides=(*plan.overrides, *plan.train_overrides))
    evaluation = _search_config(plan.eval_preset, model=str((fit or joint).output_dir),
                                dataset=plan.eval_dataset, output=run / EVAL, sandbox=plan.sandbox,
                                overrides=(*plan.overrides, *plan.eval_overrides))
    return RoundConfigs(search=search, joint=joint, fit=fit, evaluation=evaluation)


def run_round(plan: RoundPlan, evaluate: Callable[[EvalConfig], None],
              train_model: Callable[[TrainConfig], TrainSummary] = train,
              on_exported: Callable[[ExportSummary], None] = lambda _: None) -> RoundSummary:
    """Run the steps. `evaluate(config)` runs one search to completion (the CLI passes its
    own, with a progress bar); it must resume from `config.run.output`. `train_model(config)` is
    `train` (the CLI's adds a progress bar and the stop-after-this-step Ctrl-C). `on_exported`
    hears what the training data holds before the training starts."""
    run = plan.run_dir
    configs = plan_round(plan)
    run.mkdir(parents=True, exist_ok=True)

    evaluate(configs.search)
    exported = export_training(run / TREES, run / ROWS, targets=plan.targets)
    on_exported(exported)
    trained = train_model(configs.joint)
    fitted = train_model(configs.fit) if configs.fit is not None else None
    evaluate(configs.evaluation)
    summary = RoundSummary(trees=run / TREES, rows=run / ROWS, positives=exported.positives,
                           negatives=exported.negatives, model=(configs.fit or configs.joint).output_dir,
                           train_steps=trained.steps,
                           final_loss=trained.final_loss,
                           value_fit_steps=fitted.steps if fitted else 0,
                           value_fit_loss=fitted.final_loss if fitted else None,
                           eval=score_results(run / EVAL))
    (run / "round.json").write_text(json.dumps(
        {"plan": asdict(plan), "summary": asdict(summary)}, indent=2, default=str))
    return summary
