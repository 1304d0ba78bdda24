"""`run_round`'s orchestration with its two steps stubbed: which training configs a plan makes
and in which order they run (the steps themselves are tested end to end in
tests/test_cli_pipeline.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.config import EvalConfig
from runtime.errors import ConfigError
from runtime.tree import Tree
from training.errors import TrainingError
from training.round import VALUE_FIT_LR, RoundPlan, plan_round, run_round
from training.train import TrainConfig, TrainSummary

from .test_data import answer, code, result_row


def _ground_truth_result() -> dict:
    tree = Tree()
    step = code(tree, tree.root, "add", "5", value=0.5)
    answer(tree, step, "done", "5", 1.0)
    answer(tree, step, "done", "7", -1.0)
    return result_row(tree)


def test_a_plan_without_a_value_fit_trains_once_on_its_rows_and_the_extra_rows(tmp_path: Path) -> None:
    extra = tmp_path / "anchors.jsonl"
    extra.write_text("")
    plan = RoundPlan(model="m", run_dir=tmp_path / "run", extra_data=(extra,),
                     train_kwargs=(("beta", 0.0), ("epochs", 2)))
    configs = plan_round(plan)
    joint = configs.joint
    assert configs.fit is None
    assert joint.data == (tmp_path / "run" / "train_rows.jsonl", extra)
    assert (joint.beta, joint.epochs, joint.resume, joint.freeze_trunk) == (0.0, 2, True, False)
    assert joint.output_dir == tmp_path / "run" / "model"


def test_a_value_fit_refits_the_head_on_the_trained_trunk_with_its_own_rate(tmp_path: Path) -> None:
    (tmp_path / "anchors.jsonl").write_text("")
    plan = RoundPlan(model="m", run_dir=tmp_path / "run", extra_data=(tmp_path / "anchors.jsonl",),
                     train_kwargs=(("batch_size", 32), ("value_head_lr", 5e-3), ("lr", 2e-4)),
                     value_fit_epochs=3)
    configs = plan_round(plan)
    joint, fit = configs.joint, configs.fit
    assert fit is not None and configs.evaluation.engine.model == str(fit.output_dir)
    assert fit.model == joint.output_dir and fit.output_dir == tmp_path / "run" / "value_fit"
    assert fit.data == (tmp_path / "run" / "train_rows.jsonl",)  # the extra rows carry no value targets
    assert fit.freeze_trunk and fit.epochs == 3 and fit.lr == VALUE_FIT_LR and fit.value_head_lr is None
    assert fit.batch_size == joint.batch_size == 32  # the joint training's batching


@pytest.mark.parametrize("mistake, error, match", [
    ({"train_kwargs": (("value_positions", "nowhere"),)}, TrainingError, "train value_positions"),
    ({"value_fit_epochs": -1}, TrainingError, "value_fit_epochs"),
    ({"eval_preset": "no-such-preset"}, ConfigError, "no-such-preset"),
    ({"extra_data": (Path("/no/such/rows.jsonl"),)}, TrainingError, "/no/such/rows.jsonl"),
])
def test_a_bad_setting_of_any_step_fails_before_any_search_runs(
        mistake: dict, error: type[Exception], match: str, tmp_path: Path) -> None:
    def evaluate(config: EvalConfig) -> None:
        raise AssertionError("searched before every step's settings were checked")

    with pytest.raises(error, match=match):
        run_round(RoundPlan(model="m", run_dir=tmp_path / "run", **mistake), evaluate)
    assert not (tmp_path / "run").exists()


def test_the_round_evaluates_the_value_fit_and_reports_both_trainings(tmp_path: Path) -> None:
    """Stubbed search and training: the trees are one ground-truth MCTS result the exporter
    accepts, the evaluation a results file the scorer reads."""
    trained: list[TrainConfig] = []
    searched: list[EvalConfig] = []

    def evaluate(config: EvalConfig) -> None:
        searched.append(config)
        out = Path(config.run.output)
        if out.name == "trees.jsonl":
            out.write_text(json.dumps(_ground_truth_result()) + "\n")
        else:
            out.write_text(json.dumps({**_ground_truth_result(), "tree": None}) + "\n")

    def train_model(config: TrainConfig) -> TrainSummary:
        trained.append(config)
        return TrainSummary(output_dir=config.output_dir, steps=len(trained) * 10,
                            losses=[{"loss": 0.5}])

    plan = RoundPlan(model="m", run_dir=tmp_path / "run", value_fit_epochs=1,
                     overrides=("strategy.max_tokens=64",), train_overrides=("strategy.temperature=0.8",),
                     eval_overrides=("strategy.max_depth=5",))
    heard: list[int] = []
    summary = run_round(plan, evaluate, train_model, on_exported=lambda rows: heard.append(len(trained)))
    assert heard == [0]  # told before any training
    trees, final = searched
    assert trees.strategy.max_tokens == final.strategy.max_tokens == 64
    assert trees.strategy.temperature == 0.8 and final.strategy.temperature == 0.0  # greedy's own
    assert final.strategy.max_depth == 5 != trees.strategy.max_depth
    assert [c.freeze_trunk for c in trained] == [False, True]
    assert searched[-1].engine.model == str(tmp_path / "run" / "value_fit") == str(summary.model)
    assert (summary.train_steps, summary.value_fit_steps, summary.positives) == (10, 20, 1)
    assert summary.eval.total == 1 and summary.eval.correct == 1
    assert json.loads((tmp_path / "run" / "round.json").read_text())["summary"]["value_fit_steps"] == 20
