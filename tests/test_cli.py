"""The command line as a user meets it: one-line errors, and a real end-to-end run that is killed
with SIGKILL mid-way and resumed (tiny model, real hf engine, real bubblewrap sandbox)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(ROOT / "cli.py")]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any(fragment in line for line in lines), proc.stderr
    assert len(lines) == 1, proc.stderr


@pytest.mark.parametrize("args, fragment", [
    (["eval", "--limit", "abc"], "invalid int value"),
    (["eval", "--strategy", "no-such-preset", "--model", "m"], "unknown strategy preset"),
    (["eval", "--model", "m", "--set", "strategy.max_tokens=-3"], "strategy.max_tokens"),
    (["eval", "--model", "m", "--set", "oops"], "section.key=value"),
    (["eval", "--model", "m", "--dataset", "/no/such/file.jsonl"], "/no/such/file.jsonl"),
    (["eval", "--model", "m", "--shard", "5/2"], "shard"),
    (["eval", "--model", "m", "--sandbox", "nope"], "invalid choice"),
    (["eval", "--model", "m", "--engine", "openai", "--value-model", "v", "--limit", "1", "--sandbox", "bwrap",
      "--set", "engine.base_urls=[http://127.0.0.1:9]"], "value_model is for the hf and vllm engines"),
    (["score", "/no/such/results.jsonl"], "no such results file"),
    (["train", "--data", "d.jsonl", "--model", "m", "--output-dir", "o", "--device", "gpu"], "train device"),
    (["train", "--data", "d.jsonl", "--model", "m", "--output-dir", "o", "--set", "no_such=1"], "train no_such"),
    (["round", "--model", "m", "--train-set", "value_positions=x"], "train value_positions"),
    (["round", "--model", "m", "--train-set", "data=x.jsonl"], "round --train-set data: the round's rows, and --extra-data"),
    (["round", "--model", "m", "--value-fit-epochs", "-1"], "value_fit_epochs"),
    (["round", "--model", "/no/such/model"], "cannot load model /no/such/model: no such directory"),
    (["round", "--model", "m", "--eval-preset", "no-such-preset"], "no-such-preset"),
    (["train", "--data", "d.jsonl", "--model", "m", "--output-dir", "o", "--set", "freeze_trunk"], "FIELD=VALUE"),
    (["train", "--data", "d.jsonl", "--model", "m", "--output-dir", "o", "--set", "output_dir=x"], "--output-dir"),
])
def test_user_mistakes_are_one_clear_line(args: list[str], fragment: str, tmp_path: Path) -> None:
    if args[0] == "eval" and "--output" not in args:
        args = [*args, "--output", str(tmp_path / "r.jsonl")]
    if args[0] == "round":
        args = [*args, "--run-dir", str(tmp_path / "run")]
    _assert_one_line_error(run_cli(*args), fragment)
    assert not (tmp_path / "run").exists()  # a round's mistake leaves no run directory behind


def test_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_cli("eval", "--limit", "1", "--output", str(tmp_path / "r.jsonl"), "--no-progress")
    _assert_one_line_error(proc, "--model")


@pytest.mark.parametrize("flag", ["--model", "--value-model"])
def test_a_model_directory_that_is_not_there_stops_before_anything_is_written(
        flag: str, tmp_path: Path) -> None:
    args = ["--model", str(ROOT / "models" / "mini-alphamath")] if flag == "--value-model" else []
    out = tmp_path / "run" / "r.jsonl"
    proc = run_cli("eval", "--limit", "1", "--output", str(out), *args, flag, str(tmp_path / "nowhere"))
    _assert_one_line_error(proc, f"cannot load model {tmp_path / 'nowhere'}: no such directory")
    assert not out.parent.exists()  # no run directory, no log file for a run that cannot start


def test_an_output_below_a_file_is_one_line_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    proc = run_cli("eval", "--limit", "1", "--model", "m", "--output", str(tmp_path / "notes.txt" / "r.jsonl"))
    _assert_one_line_error(proc, f"{tmp_path / 'notes.txt'}: file exists")
    assert "Errno" not in proc.stderr


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="LOUD SKIP: bubblewrap is not installed "
                    "(run `make setup`); eval needs the real sandbox")
def test_value_strategy_on_a_model_without_value_head_stops_with_no_rows(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    """Every problem would fail the same way: one clear line, and no error rows that a re-run
    (once a value head is attached) would skip as done. `--value-model` lends it one."""
    model = tmp_path / "no-head"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("value_head.*"))
    out = tmp_path / "r.jsonl"
    proc = run_cli("eval", "--dataset", "gsm8k", "--limit", "6", "--model", str(model),
                   "--strategy", "sbs_3_5", "--sandbox", "bwrap", "--no-progress",
                   "--set", "strategy.max_tokens=32", "--output", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "problem_failed" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "has no value head" in last and "value-head init" in last, proc.stderr
    assert not out.exists() or not _rows(out)
    # A separate value model serves the value calls of the same policy.
    out = tmp_path / "with-critic.jsonl"
    proc = run_cli("eval", "--dataset", "gsm8k", "--limit", "2", "--model", str(model),
                   "--value-model", str(tiny_model_dir), "--strategy", "sbs_3_5", "--sandbox", "bwrap",
                   "--no-progress", "--set", "strategy.max_tokens=32", "--set", "strategy.max_depth=3",
                   "--set", "strategy.n_generate_sample=2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert len(rows) == 2 and all(r["error"] is None for r in rows)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="LOUD SKIP: bubblewrap is not installed "
                    "(run `make setup`); eval needs the real sandbox")
def test_likelihood_ranked_beam_search_needs_no_value_head(tiny_model_dir: Path, tmp_path: Path) -> None:
    """sbs_3_5_likelihood ranks by the priors the real engine's log-probabilities give, so a
    model without a value head serves it (the same model stops sbs_3_5, test above)."""
    model = tmp_path / "no-head"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("value_head.*"))
    out = tmp_path / "r.jsonl"
    proc = run_cli("eval", "--dataset", "gsm8k", "--limit", "2", "--model", str(model),
                   "--strategy", "sbs_3_5_likelihood", "--sandbox", "bwrap", "--no-progress",
                   "--set", "strategy.max_tokens=32", "--set", "strategy.max_depth=3",
                   "--set", "strategy.n_generate_sample=2", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    nodes = [n for r in rows for n in r["tree"]["nodes"] if n["parent"] is not None]
    assert len(nodes) >= 2 * 3 * 2  # depth 1 alone: B1·B2 samples per problem
    assert all(0.0 < n["prior"] <= 1.0 and n["value"] is None for n in nodes)
    assert all(s["value"] <= 0.0 for r in rows for s in r["solutions"])  # log-probabilities
    # Offline inference by the same score, B1 = 3 and no pruning (the search could not look
    # ahead either), re-chooses every answer of the run from its saved trees.
    again = tmp_path / "again.jsonl"
    off = run_cli("offline", str(out), "--by", "likelihood", "--beam-width", "3", "--no-prune",
                  "--output", str(again))
    assert off.returncode == 0, off.stderr
    assert ({r["id"]: r["prediction"] for r in _rows(again)}
            == {r["id"]: r["prediction"] for r in rows})


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="LOUD SKIP: bubblewrap is not installed "
                    "(run `make setup`); eval needs the real sandbox")
def test_retry_errors_solves_error_rows_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    args = ["eval", "--dataset", "gsm8k", "--limit", "3", "--model", str(tiny_model_dir),
            "--sandbox", "bwrap", "--no-progress", "--set", "strategy.max_tokens=32",
            "--output", str(out)]
    assert run_cli(*args).returncode == 0
    rows = _rows(out)
    # As a crashed server would have left it: problem 1's row is an error.
    rows[1] = {**rows[1], "prediction": None, "correct": False, "tree": None,
               "error": "EngineError: server down"}
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 of 3 already done, 1 of them errors (--retry-errors" in " ".join(resumed.stderr.split())
    assert _rows(out) == rows

    retried = run_cli(*args, "--retry-errors")
    assert retried.returncode == 0, retried.stderr
    assert "1 error rows removed" in " ".join(retried.stderr.split()), retried.stderr
    after = _rows(out)
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in rows)
    assert all(r["error"] is None for r in after)
    assert after[:2] == [rows[0], rows[2]]  # the good rows untouched; the retried one appended


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    from runtime.results import exclusive_results

    out = tmp_path / "r.jsonl"
    with exclusive_results(out):  # as a first run, still going, holds it
        proc = run_cli("eval", "--dataset", "gsm8k", "--limit", "2", "--model", "m", "--output", str(out))
    _assert_one_line_error(proc, "another run is writing")
    assert not out.exists()


def test_help_explains_the_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("eval", "score", "solve"):
        assert command in proc.stdout
    proc = run_cli("eval", "--help")
    assert "--shard" in proc.stdout and "resumes" in proc.stdout


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="LOUD SKIP: bubblewrap is not installed "
                    "(run `make setup`); the end-to-end test needs the real sandbox")
def test_eval_killed_mid_run_resumes_with_nothing_lost(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    n = 16
    args = [*CLI, "eval", "--dataset", "gsm8k", "--limit", str(n), "--model", str(tiny_model_dir),
            "--sandbox", "bwrap", "--concurrency", "2", "--no-progress", "--output", str(out),
            "--set", "strategy.max_tokens=96", "--set", "engine.batch_wait_ms=20"]
    stderr_path = tmp_path / "killed-run.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_bytes().splitlines()) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"run ended before it could be killed: {stderr_path.read_text()}")
            time.sleep(0.05)
        else:
            pytest.fail("no results within 240 s")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a kill may leave a torn last line
    killed_rows = [json.loads(line) for line in complete.splitlines()]
    assert 3 <= len(killed_rows) < n, "the kill must land mid-run"
    # Simulate a write torn by the kill as well, whatever the timing gave us.
    with out.open("ab") as fh:
        fh.write(b'{"id": "gsm8k-torn", "quest')

    resumed = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    rows = _rows(out)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(f"gsm8k-{i}" for i in range(n)), "every problem exactly once"
    assert len(set(ids)) == n
    # The rows written before the kill are still there, byte for byte, first in the file.
    assert rows[: len(killed_rows)] == killed_rows
    # The real sandbox ran the tiny model's code actions and fed observations back.
    observed = [node for r in rows if r["tree"] for node in r["tree"]["nodes"] if node["code"]]
    assert observed, "no code action ran"
    assert all(node["observation"] is not None for node in observed)
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]]

    score = run_cli("score", str(out))
    assert score.returncode == 0, score.stderr
    assert "accuracy" in score.stdout.lower()

    # Offline inference on the saved (greedy, linear) trees picks the same answers again.
    rescored = tmp_path / "offline.jsonl"
    offline = run_cli("offline", str(out), "--output", str(rescored))
    assert offline.returncode == 0, offline.stderr
    again = {r["id"]: r["prediction"] for r in _rows(rescored)}
    assert again == {r["id"]: r["prediction"] for r in rows}


def _stop_once(args: list[str], ready: Callable[[], bool], stop: signal.Signals, stderr_path: Path) -> str:
    """Start `args`, send `stop` once `ready()`, expect exit 130; the process's stderr."""
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not ready():
            assert proc.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "not ready within 240 s"
            time.sleep(0.05)
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return stderr_path.read_text()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="LOUD SKIP: bubblewrap is not installed "
                    "(run `make setup`); the end-to-end test needs the real sandbox")
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_stops_cleanly_with_every_finished_row_saved(tiny_model_dir: Path, tmp_path: Path,
                                                            stop: signal.Signals) -> None:
    # A user file with its own field names, read through --set run.*_field.
    data = tmp_path / "mine.jsonl"
    with data.open("w") as fh:
        for i in range(200):
            fh.write(json.dumps({"qid": f"q{i}", "problem": f"Ann has {i} pens and buys 3 more. "
                                 "How many pens does she have?", "gold": i + 3}) + "\n")
    out = tmp_path / "results.jsonl"
    args = [*CLI, "eval", "--dataset", str(data), "--model", str(tiny_model_dir), "--sandbox", "bwrap",
            "--concurrency", "2", "--no-progress", "--output", str(out),
            "--set", "run.id_field=qid", "--set", "run.question_field=problem",
            "--set", "run.answer_field=gold", "--set", "strategy.max_tokens=96"]
    err = _stop_once(args, lambda: out.exists() and len(out.read_bytes().splitlines()) >= 3, stop,
                     tmp_path / "stderr")
    assert "interrupted" in err and "Traceback" not in err
    data_bytes = out.read_bytes()
    assert data_bytes.endswith(b"\n"), "a clean stop leaves no torn line"
    rows = _rows(out)
    assert 3 <= len(rows) < 200
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["id"].startswith("q") and r["error"] is None for r in rows)
    assert all(r["answer"] == str(int(r["id"][1:]) + 3) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_in_training_checkpoints_the_step_and_resume_continues(tiny_model_dir: Path, tmp_path: Path,
                                                                       stop: signal.Signals) -> None:
    from tests.training.test_train import make_rows
    from training.data import write_training_rows

    rows = write_training_rows(make_rows(400), tmp_path / "rows.jsonl")
    out = tmp_path / "out"
    args = ["train", "--data", str(rows), "--model", str(tiny_model_dir), "--output-dir", str(out),
            "--batch-size", "1", "--save-every", "5"]  # 400 steps; the first checkpoint says it runs
    err = _stop_once([*CLI, *args], (out / "checkpoint-5").is_dir, stop, tmp_path / "stderr")
    assert "Traceback" not in err and "stopping after this training step" in err, err
    said = re.search(r"interrupted at step (\d+): checkpoint saved in (\S+);", err)
    assert said, err
    step, saved = int(said[1]), Path(said[2])
    assert saved == out / f"checkpoint-{step}" and 5 <= step < 400
    assert (saved / "trainer_state.pt").is_file() and (saved / "value_head.safetensors").is_file()
    assert not (out / "train_summary.json").exists()

    resumed = run_cli(*args, "--resume", "--max-steps", str(step + 1), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"trained {step + 1} steps on 400 rows" in resumed.stdout
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(saved) and [d["step"] for d in summary["losses"]] == [step + 1]


def test_score_against_a_baseline_prints_the_paired_gain(tmp_path: Path) -> None:
    def write(name: str, correct: list[bool]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps({"id": f"p{i}", "question": "q", "answer": "1", "prediction": "1",
                                            "correct": c, "error": None, "stats": {}}) + "\n"
                                for i, c in enumerate(correct)))
        return path

    base = write("greedy.jsonl", [i % 2 == 0 for i in range(200)])
    better = write("sbs.jsonl", [i % 2 == 0 or i % 5 == 1 for i in range(200)])  # fixes 20 of 100
    proc = run_cli("score", str(better), "--against", str(base))
    assert proc.returncode == 0, proc.stderr
    assert "+10.0 points on 200 shared problems" in proc.stdout and ": better" in proc.stdout
    same = run_cli("score", str(base), "--against", str(base))
    assert "+0.0 points" in same.stdout and "no clear difference" in same.stdout
    disjoint = write("other.jsonl", [])
    disjoint.write_text(json.dumps({"id": "zzz", "answer": "1", "correct": True, "error": None}) + "\n")
    _assert_one_line_error(run_cli("score", str(base), "--against", str(disjoint)), "share no problem id")
    _assert_one_line_error(run_cli("score", str(base), "--against", str(tmp_path / "nope.jsonl")),
                           "no such results file")
