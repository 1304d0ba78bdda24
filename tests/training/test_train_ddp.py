"""Data-parallel training: `torchrun` around `cli.py train`, two CPU processes (gloo), against the
one-process run of the same configuration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.ports import free_port
from training.data import write_training_rows
from training.train import TrainConfig, _shard, train

from .test_train import make_rows

REPO = Path(__file__).resolve().parents[2]


def test_shard_splits_every_micro_batch_and_never_leaves_a_process_idle() -> None:
    idx = [7, 3, 9, 1, 4]
    parts = [_shard(idx, r, 2) for r in range(2)]
    assert parts == [([7, 9, 4], 1.0), ([3, 1], 1.0)]
    assert _shard(idx, 0, 1) == (idx, 1.0)
    # one row, two processes: the second runs the same row at weight 0 (DDP needs its backward)
    assert _shard([5], 1, 2) == ([5], 0.0)


@pytest.mark.timeout(600)
def test_two_processes_follow_the_one_process_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    # 13 rows, micro-batches of 4: the last holds one row, so one process runs at weight 0;
    # two micro-batches per step exercise DDP's no_sync accumulation.
    data = write_training_rows(make_rows(13, seed=3), tmp_path / "rows.jsonl")
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    fields = dict(lr=1e-3, beta=1.0, batch_size=4, grad_accum=2, epochs=2, seed=1, save_every=2,
                  value_head_lr=5e-3, value_dropout=0.0, device="cpu")
    one = train(TrainConfig(data=data, model=model, output_dir=tmp_path / "one", **fields))
    assert one.processes == 1 and one.steps == 4

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in fields.items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(REPO / "cli.py"), "train", "--data", str(data), "--model", str(model),
         "--output-dir", str(tmp_path / "two"), *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = [line for line in proc.stdout.splitlines() if line.startswith("trained")]
    assert len(trained) == 1 and "on 2 processes" in trained[0], proc.stdout  # printed once

    two = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert two["processes"] == 2 and two["steps"] == 4
    # the same global loss at every step: global token counts, not a mean of per-process means
    for a, b in zip(one.losses, two["losses"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["value"] == pytest.approx(a["value"], rel=1e-4)
    for name in ("model.safetensors", "value_head.safetensors"):
        w1, w2 = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
        assert w1.keys() == w2.keys()
        for key in w1:
            torch.testing.assert_close(w2[key], w1[key], atol=2e-5, rtol=1e-4)
    # one checkpoint directory per save, written by the main process, with both RNG streams
    state = torch.load(tmp_path / "two" / "checkpoint-2" / "trainer_state.pt", weights_only=False)
    assert state["processes"] == 2 and len(state["torch_rng_per_process"]) == 2
    assert sorted(p.name for p in (tmp_path / "two").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


_STOP_ON_ONE_PROCESS = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from training.train import TrainConfig, train

rank, asked = int(os.environ["RANK"]), []

def should_stop() -> bool:  # Ctrl-C reached only process 1, during step 2
    asked.append(1)
    return rank == 1 and len(asked) >= 2

s = train(TrainConfig(data=Path(sys.argv[2]), model=Path(sys.argv[3]), output_dir=Path(sys.argv[4]),
                      batch_size=4, epochs=2, device="cpu"), should_stop=should_stop)
# A file per process: the processes share one stdout, where two prints can interleave.
Path(sys.argv[5], f"rank{rank}.json").write_text(json.dumps({"steps": s.steps, "interrupted": s.interrupted}))
"""


@pytest.mark.timeout(600)
def test_a_stop_asked_of_one_process_stops_every_process_at_the_same_step(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    # Were the processes not to agree, process 1 would leave the loop and process 0 would wait in
    # the next step's gradient all-reduce until the subprocess timeout.
    data = write_training_rows(make_rows(16, seed=3), tmp_path / "rows.jsonl")
    script = tmp_path / "stop.py"
    script.write_text(_STOP_ON_ONE_PROCESS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         str(script), str(REPO), str(data), str(tiny_model_dir), str(tmp_path / "out"), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert said == [{"steps": 2, "interrupted": True}] * 2
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-2"]
