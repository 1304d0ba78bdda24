"""`mini_alphamath.py --jobs 1` against `--jobs N` on the same stage: one after the other in one
process, or N at a time, each in a process pinned to its share of the cores.

    .venv/bin/python benchmarks/bench_jobs.py [--model models/mini-alphamath] [--problems 300]
        [--strategies greedy,maj5,sbs_1_5,sbs_3_5_likelihood] [--jobs 2] [--engine vllm]

Each mode evaluates the model (`--start-model MODEL --rounds 0`) with every strategy on the same
synth-arith-hard test problems into its own temporary run directory, one mode after the other;
the wall time is the whole invocation's (engine start-ups included). The ratio is --jobs N's time
over --jobs 1's; both must give every problem the same prediction, and the script says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "mini_alphamath.py"


def predictions(out: Path) -> dict[str, dict[str, str]]:
    """{results file: {problem id: prediction}} of a run directory's one stage."""
    return {path.name: {row["id"]: row["prediction"] for row in map(json.loads, path.read_text().splitlines())}
            for path in sorted((out / "seed0" / "eval" / "start").glob("*.jsonl"))}


def run(args: argparse.Namespace, jobs: int, out: Path) -> float:
    command = [sys.executable, str(SCRIPT), "--start-model", args.model, "--rounds", "0", "--seeds", "0",
               "--test", str(args.problems), "--strategies", args.strategies, "--engine", args.engine,
               "--sandbox", "bwrap", "--set", "sandbox.reuse_process=true", "--no-progress",
               "--out", str(out), "--jobs", str(jobs)]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise SystemExit(f"--jobs {jobs} failed: {lines[-1] if lines else '(no output)'}")
    return time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="models/mini-alphamath", help="model directory")
    parser.add_argument("--problems", type=int, default=300, help="synth-arith-hard test problems")
    parser.add_argument("--strategies", default="greedy,maj5,sbs_1_5,sbs_3_5_likelihood",
                        help="the stage's evaluations (mini_alphamath.py presets)")
    parser.add_argument("--jobs", type=int, default=2, help="the parallel mode's --jobs")
    parser.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    args = parser.parse_args(argv)
    if not 2 <= args.jobs <= len(os.sched_getaffinity(0)):
        parser.error(f"--jobs must be between 2 and the {len(os.sched_getaffinity(0))} cores this process may use")
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"no model directory {args.model}")

    print(f"{len(os.sched_getaffinity(0))} cores; {args.strategies} on {args.problems} problems, "
          f"{args.model}, {args.engine}", flush=True)
    print("| mode | wall | × --jobs 1 |\n|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        outs = {jobs: Path(tmp) / f"jobs{jobs}" for jobs in (1, args.jobs)}
        walls: dict[int, float] = {}
        for jobs, out in outs.items():
            walls[jobs] = run(args, jobs, out)
            print(f"| --jobs {jobs} | {walls[jobs]:.0f} s | {walls[jobs] / walls[1]:.2f} |", flush=True)
        first, parallel = predictions(outs[1]), predictions(outs[args.jobs])
        # Both hold every strategy's file, or the comparison would pass on nothing.
        same = first == parallel and len(first) == len(args.strategies.split(","))
    print("every prediction the same in both modes" if same
          else "note: the two modes' predictions differ", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
