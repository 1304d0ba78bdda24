"""benchmarks/mini_alphamath.py end to end at toy scale: warm start, one round, the table, and a
second run that finds everything done (resume)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.skips import NEEDS_BWRAP

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "mini_alphamath.py"
TOY = ["--seeds", "0", "--rounds", "1", "--layers", "1", "--hidden", "64", "--sft-rows", "48,16",
       "--test", "3", "--mcts-test", "2", "--train-questions", "2", "--train-iterations", "2",
       "--strategies", "greedy,sbs_1_5,mcts_n40", "--engine", "hf", "--sandbox", "bwrap",
       "--set", "strategy.max_tokens=48", "--set", "strategy.iterations=3", "--no-progress",
       # No anchor rows or value fit unless a test asks (`_run` puts its flags after these, and
       # argparse keeps the last).
       "--anchor-rows", "0", "--value-fit-epochs", "0"]

pytestmark = [pytest.mark.slow, NEEDS_BWRAP]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--release", str(out / "release"),
                           *TOY, *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_toy_run_writes_every_artifact_and_the_table(tmp_path: Path) -> None:
    out = tmp_path / "mini"
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed = out / "seed0"
    for path in ("base/mini_spec.json", "warm/train_summary.json", "warm-2/train_summary.json",
                 "sft_rows-2.jsonl", "round1/trees.jsonl",
                 "round1/train_rows.jsonl", "round1/model/value_head.safetensors",
                 "eval/warm/greedy.jsonl", "eval/round1/sbs_1_5.jsonl", "eval/round1/mcts_n40.jsonl"):
        assert (seed / path).is_file(), path
    assert len((seed / "eval/warm/greedy.jsonl").read_text().splitlines()) == 3
    assert len((seed / "eval/warm/mcts_n40.jsonl").read_text().splitlines()) == 2
    table = (out / "table.md").read_text()
    assert "| seed | stage | greedy | SBS(1,5) | MCTS(40) |" in table
    assert "| 0 | warm start |" in table and "| 0 | round 1 |" in table
    records = json.loads((out / "table.json").read_text())
    assert {(r["stage"], r["strategy"]) for r in records} == {
        (stage, s) for stage in ("warm start", "round 1") for s in ("greedy", "SBS(1,5)", "MCTS(40)")}
    sbs = next(r for r in records if r["strategy"] == "SBS(1,5)")
    assert sbs["n"] == 3 and sbs["gain_low"] <= sbs["gain"] <= sbs["gain_high"]
    mcts = next(r for r in records if r["strategy"] == "MCTS(40)")
    assert mcts["n"] == 2  # paired with greedy on the first two problems only
    card = (out / "release" / "README.md").read_text()
    assert table in card and "round1" in card and "--rounds 1" in card
    assert (out / "release" / "value_head.safetensors").is_file()

    # Everything is done: a second run trains and searches nothing and prints the same table.
    started = time.monotonic()
    again = _run(out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "table.md").read_text() == table
    assert "train" not in again.stdout and time.monotonic() - started < 120

    # --jobs 2: the last stage's evaluations again, side by side in processes pinned to their own
    # cores, give the same answers as one after the other in this process.
    def answers(stage: Path) -> dict[str, dict[str, tuple[str, bool]]]:
        return {path.name: {row["id"]: (row["prediction"], row["correct"]) for row in
                            map(json.loads, path.read_text().splitlines())}
                for path in sorted(stage.glob("*.jsonl"))}

    jobs = min(2, len(os.sched_getaffinity(0)))
    before = answers(seed / "eval/round1")
    for path in (seed / "eval/round1").glob("*.jsonl"):
        path.unlink()
    parallel = _run(out, "--jobs", str(jobs))
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    assert answers(seed / "eval/round1") == before and len(before) == 3
    if jobs == 2:
        pinned = [line for line in parallel.stdout.splitlines() if "round1 ·" in line]
        assert len(pinned) == 3 and "MCTS(40)" in pinned[0], parallel.stdout  # the longest first
        assert len({line.rsplit("(cores ", 1)[-1] for line in pinned}) == 2
    table = (out / "table.md").read_text()  # new timings, which the released card below holds
    assert (f"Seconds per question with --jobs {jobs}" in table) == (jobs > 1)

    # The same --out under another configuration: one line that names the results file, exit 2.
    changed = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *TOY,
                              "--set", "strategy.max_tokens=40"], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert changed.returncode == 2, changed.stderr[-3000:]
    assert "different configuration" in changed.stderr and "greedy.jsonl" in changed.stderr
    assert "Traceback" not in changed.stderr

    # Continuing from the released model: no warm start, stage "start", round 2 with LM-only
    # anchor rows mixed into its training data, then the value head fitted alone (the round's
    # model: the policy's weights are the joint training's), and a card that keeps the earlier one.
    cont = tmp_path / "cont"
    proc = _run(cont, "--start-model", str(out / "release"), "--first-round", "2",
                "--anchor-rows", "4", "--value-fit-epochs", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    seed = cont / "seed0"
    assert not (seed / "base").exists() and not (seed / "warm").exists()
    for path in ("eval/start/greedy.jsonl", "round2/trees.jsonl", "round2/model/train_summary.json",
                 "eval/round2/sbs_1_5.jsonl"):
        assert (seed / path).is_file(), path
    anchors = [json.loads(line) for line in (seed / "round2/anchor_rows.jsonl").read_text().splitlines()]
    assert len(anchors) == 4 and all(s["q"] is None for row in anchors for s in row["steps"])
    summary = json.loads((seed / "round2/model/train_summary.json").read_text())
    assert summary["rows"] == len((seed / "round2/train_rows.jsonl").read_text().splitlines()) + 4
    from safetensors.torch import load_file

    joint, fitted = (load_file(seed / "round2" / d / "model.safetensors") for d in ("model", "value_fit"))
    assert all(torch.equal(joint[k], fitted[k]) for k in joint)
    heads = [load_file(seed / "round2" / d / "value_head.safetensors")["v_head.summary.weight"]
             for d in ("model", "value_fit")]
    assert not torch.equal(*heads)
    cont_table = (cont / "table.md").read_text()
    assert "| 0 | start |" in cont_table and "| 0 | round 2 |" in cont_table
    card = (cont / "release" / "README.md").read_text()
    assert "continuing from" in card and cont_table in card and table in card
    assert "This is the model of seed 0, round2." in card
