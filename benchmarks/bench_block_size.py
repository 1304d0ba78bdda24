"""vLLM's KV-cache block size on CPU: search at vLLM's CPU default (128 tokens) against ours (32).

    .venv/bin/python benchmarks/bench_block_size.py [--model models/mini-alphamath] [--problems 60]
        [--strategies greedy,sbs_3_5] [--blocks 128,32]

The prefix cache reuses whole blocks only. A search's next requests share all but the last step
or two (~40–100 tokens) with requests already served, so with 128-token blocks a ~140-token value
request finds at most one block cached and the policy re-prefills most of its path; at 32 nearly
all of it is reused (`runtime/engines/vllm.py`, "How it runs"). Each configuration runs the same
synth-arith-hard test problems through `runtime.evaluate.evaluate` with a freshly started pair of
engines, in this one process, and reports the scheduler's wall time (engine start-up excluded),
accuracy, how many answers agree with the first block size's, and the policy engine's
prefix-cache hit rate; the ratio is each strategy's wall time at the first block size over the
others'. A short run before them, discarded, takes the process's one-off warm-up. Results go to
a temporary directory and are deleted.
"""

from __future__ import annotations

from vllm_cpu_env import set_default_env

set_default_env(VLLM_LOGGING_LEVEL="WARNING")  # before anything imports vLLM

import argparse  # noqa: E402
import asyncio  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_one(model: str, preset: str, block: int, problems: int, output: Path) -> dict[str, Any]:
    from evals.report import read_rows
    from runtime.config import compose_config
    from runtime.evaluate import evaluate
    from strategies import make_strategy

    config = compose_config(
        preset, engine={"model": model, "kind": "vllm", "max_model_len": 1024, "block_size": block},
        sandbox={"reuse_process": True},
        run={"dataset": f"synth-arith-hard:test:{problems}", "output": str(output)},
        overrides=["strategy.max_tokens=160"])
    summary = asyncio.run(evaluate(config, make_strategy(config.strategy)))
    rate = summary.engine.prefix_cache_hit_rate if summary.engine is not None else None
    predictions = {row["id"]: row.get("prediction") for item in read_rows(output) if item is not None
                   for _, row in [item]}
    return {"wall_s": summary.wall_s, "correct": summary.correct, "finished": summary.finished,
            "hit_rate": rate, "predictions": predictions}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/mini-alphamath")
    parser.add_argument("--problems", type=int, default=60)
    parser.add_argument("--strategies", default="greedy,sbs_3_5", help="presets, comma-separated")
    parser.add_argument("--blocks", default="128,32", help="block sizes (multiples of 32 on CPU); "
                        "the ratio is the first over each other")
    args = parser.parse_args(argv)
    presets = [p for p in args.strategies.split(",") if p]
    blocks = [int(b) for b in args.blocks.split(",") if b]

    rows: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_block_size-") as tmp:
        # The first run in a process pays one-off costs (kernel and allocator warm-up, the
        # sandbox's first interpreters) that would be charged to whichever configuration came
        # first: a short discarded run takes them.
        print("warm-up (discarded) …", flush=True)
        run_one(args.model, presets[0], blocks[0], min(4, args.problems), Path(tmp) / "warmup.jsonl")
        for preset in presets:
            for block in blocks:
                print(f"{preset} at block {block} on {args.problems} problems …", flush=True)
                rows[preset, block] = run_one(args.model, preset, block, args.problems,
                                              Path(tmp) / f"{preset}-{block}.jsonl")

    print(f"\n{'strategy':<22}{'block':>6}{'wall s':>9}{'s/problem':>11}{'correct':>10}"
          f"{'prefix hits':>13}{'same answer':>13}{'speed-up':>10}")
    for preset in presets:
        first = rows[preset, blocks[0]]
        for block in blocks:
            r = rows[preset, block]
            rate = "-" if r["hit_rate"] is None else f"{r['hit_rate']:.0%}"
            done = f"{int(r['correct'])}/{int(r['finished'])}"
            per = r["wall_s"] / max(int(r["finished"]), 1)
            # The block size changes what is recomputed, not what is computed: the answers
            # should agree with the first block size's, problem by problem.
            same = sum(first["predictions"].get(i) == p for i, p in r["predictions"].items())
            agree = f"{same}/{len(r['predictions'])}"
            print(f"{preset:<22}{block:>6}{r['wall_s']:>9.1f}{per:>11.2f}{done:>10}{rate:>13}"
                  f"{agree:>13}{first['wall_s'] / r['wall_s']:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
