"""Two vLLM-backed `cli.py eval` runs on one small CPU: one after the other, or side by side.

    .venv/bin/python benchmarks/bench_side_by_side.py [--model models/mini-alphamath]
        [--strategy maj5] [--problems 300] [--modes alone,shared,pinned] [--timeout 1200]

Each mode runs the same eval twice, as two separate processes (what a user does who starts two
jobs), and reports the makespan (first start to last finish) and each process's wall time,
engine start-up included:

- alone: one after the other (the baseline; the makespan is the sum);
- shared: both at once, each free to use every core (what happens by default);
- pinned: both at once, each pinned to its own half of the cores (`os.sched_setaffinity` before
  exec, inherited by its sandbox workers) with `OMP_NUM_THREADS` set to that half's size.

The ratio is each mode's makespan over alone's: 1.0 means running side by side costs nothing
over running in turn (the cores are simply shared); above 1.0 the two runs slow each other more
than sharing explains. Both runs of a mode solve the same problems with the same seeds, so their
accuracies must agree with alone's; the script says when they do not. Results go to a temporary
directory and are deleted. A mode that runs past --timeout is stopped and reported as such.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cores import pinned_env, split_cores
from vllm_cpu_env import VLLM_CPU_ENV

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODES = ("alone", "shared", "pinned")
# `make run`'s environment for vLLM's CPU build.
VLLM_ENV = {**VLLM_CPU_ENV, "VLLM_LOGGING_LEVEL": "WARNING",
            "PYTHONWARNINGS": "ignore::FutureWarning"}


@dataclass
class Run:
    """One finished (or stopped) eval process."""

    wall_s: float
    correct: int | None  # None: the process failed or was stopped


def eval_command(args: argparse.Namespace, output: Path) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "eval", "--dataset",
            f"synth-arith-hard:test:{args.problems}", "--model", args.model, "--engine", "vllm",
            "--sandbox-reuse", "--strategy", args.strategy, "--set", "strategy.max_tokens=160",
            "--output", str(output), "--no-progress"]


def correct_count(output: Path) -> int | None:
    from evals.report import correct_by_id

    return sum(correct_by_id(output).values()) if output.is_file() else None


def run_pair(args: argparse.Namespace, mode: str, workdir: Path) -> tuple[float, list[Run]]:
    """Start the two evals as `mode` says; returns the makespan and both runs."""
    outputs = [workdir / mode / f"run{i}.jsonl" for i in range(2)]
    env = {**os.environ, **VLLM_ENV}
    cores: list[frozenset[int] | None] = [None, None]
    if mode == "pinned":
        try:
            cores = list(split_cores(2))
        except ValueError:
            raise SystemExit("pinned mode needs at least 2 cores") from None

    def start(i: int) -> subprocess.Popen[bytes]:
        outputs[i].parent.mkdir(parents=True, exist_ok=True)
        pin = cores[i]
        run_env = {**env, **pinned_env(pin)} if pin is not None else env
        with open(outputs[i].with_suffix(".log"), "wb") as log:  # the child keeps its own copy
            return subprocess.Popen(
                eval_command(args, outputs[i]), cwd=ROOT, env=run_env, stdout=log, stderr=log,
                preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin is not None else None)

    def finish(proc: subprocess.Popen[bytes], started: float, deadline: float) -> tuple[float, bool]:
        """The run's wall time, and whether it exited cleanly before the deadline."""
        try:
            ok = proc.wait(timeout=max(deadline - time.monotonic(), 0.0)) == 0
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            ok = False
        return time.monotonic() - started, ok

    t0 = time.monotonic()
    deadline = t0 + args.timeout
    if mode == "alone":
        ends = []
        for i in range(2):
            started = time.monotonic()
            ends.append(finish(start(i), started, deadline))
    else:
        procs = [start(i) for i in range(2)]
        ends = [finish(proc, t0, deadline) for proc in procs]
    makespan = time.monotonic() - t0
    runs = [Run(wall, correct_count(out) if ok else None) for (wall, ok), out in zip(ends, outputs)]
    for run, out in zip(runs, outputs):
        if run.correct is None and makespan < args.timeout:
            lines = out.with_suffix(".log").read_text(errors="replace").strip().splitlines()
            print(f"  {mode}: a run failed: {lines[-1] if lines else '(no output)'}", flush=True)
    return makespan, runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="models/mini-alphamath", help="model directory")
    parser.add_argument("--strategy", default="maj5", help="the preset both runs use")
    parser.add_argument("--problems", type=int, default=300,
                        help="synth-arith-hard test problems per run")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)}; alone is always run first")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="seconds a mode may take before its runs are stopped")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; allowed: {', '.join(MODES)}")
    if not (ROOT / args.model).is_dir() and not Path(args.model).is_dir():
        parser.error(f"no model directory {args.model}")
    modes = ["alone", *[m for m in modes if m != "alone"]]

    print(f"{len(os.sched_getaffinity(0))} cores; two runs of `cli.py eval --strategy "
          f"{args.strategy}` on {args.problems} problems each, {args.model}", flush=True)
    print("| mode | makespan | run 1 | run 2 | correct | × alone |\n|---|---|---|---|---|---|",
          flush=True)
    baseline: float | None = None
    reference: int | None = None
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as tmp:
        for mode in modes:
            makespan, runs = run_pair(args, mode, Path(tmp))
            stopped = makespan >= args.timeout
            if mode == "alone":
                baseline, reference = makespan, runs[0].correct
            correct = " / ".join("–" if r.correct is None else str(r.correct) for r in runs)
            ratio = "–" if baseline is None else f"{makespan / baseline:.2f}"
            print(f"| {mode} | {makespan:.0f} s{' (stopped)' if stopped else ''} | "
                  f"{runs[0].wall_s:.0f} s | {runs[1].wall_s:.0f} s | {correct} | {ratio} |",
                  flush=True)
            if not stopped and any(r.correct != reference for r in runs):
                print(f"  note: {mode}'s correct counts differ from the first alone run's "
                      f"({reference})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
