"""The miniature AlphaMath, end to end on a CPU: warm start, K MCTS self-improvement rounds, and
the paper-style table (greedy, maj@5, SBS(1,5), SBS(3,5), MCTS(N=40)) after each stage.

    .venv/bin/python benchmarks/mini_alphamath.py [--out runs/mini] [--seeds 0,1] [--rounds 2]
        [--test 1000] [--mcts-test 200] [--sft-rows 24000,24000] [--train-questions 400] ...

The round defaults are the recipe whose rounds gained (README, "Rounds 1 and 2 again" and rounds
3-5): 40 simulations per tree, 3,000 LM-only anchor rows, trunk lr 2e-4 for 2 epochs, then a
10-epoch value fit on the frozen trunk.

Per training seed, in OUT/seed<S>/:
  base/                 tokenizer + random-weight Qwen2 (training/mini.py: 4 layers, d 256, ~3.4 M)
  sft_rows*.jsonl, warm*/ the warm start: SFT cycles on correct synthetic solutions
                        (synth-arith-hard), warm/ then warm-2/ ... from the previous cycle
  round<k>/trees.jsonl  MCTS with the ground truth on fresh training questions (the
                        mcts_train_round2 preset: PUCT c 1.5, n = 5 children, iterations below)
  round<k>/train_rows.jsonl, round<k>/model/
                        ≤ 4 correct + ≤ 4 incorrect paths per question with per-step Q, then
                        joint policy + value training from the previous stage's model
                        (with --anchor-rows: plus fresh correct synthetic solutions, LM loss only,
                        round<k>/anchor_rows.jsonl)
  round<k>/value_fit/   with --value-fit-epochs: the value head alone trained on the same rows
                        (trunk frozen): the round's model
  eval/<stage>/<strategy>.jsonl
                        each strategy on the same synth-arith-hard test problems
With --jobs N a stage's evaluations run N at a time, each in its own process pinned to its share
of the cores (on 2 cores, 2 such runs take 0.72× the time of one after the other:
benchmarks/bench_side_by_side.py).

OUT/table.md and OUT/table.json: accuracy, paired-bootstrap 95 % interval of the gain over greedy
(same stage, same seed, same problems), and seconds per question (the scheduler's wall time over
the problems, engine start-up excluded: problems run concurrently, so this is throughput, not
latency).

Everything resumes: a finished model or evaluation is skipped, an interrupted evaluation continues
where it stopped, training resumes from its last checkpoint. The engine is vLLM (its CPU build
here: prefix caching makes search ~10× cheaper than the transformers engine) unless --engine hf.
"""

from __future__ import annotations

from cores import pin_this_process, split_cores
from vllm_cpu_env import set_default_env

set_default_env()  # before anything imports vLLM

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, get_args  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from runtime.config import EvalConfig

STRATEGIES = {  # preset -> column name
    "greedy": "greedy", "maj5": "maj@5", "sbs_1_5": "SBS(1,5)", "sbs_3_5": "SBS(3,5)",
    "mcts_n40": "MCTS(40)", "sbs_3_5_likelihood": "SBS(3,5) by likelihood",
}
PAPER_COLUMNS = ("greedy", "maj5", "sbs_1_5", "sbs_3_5", "mcts_n40")  # the table
LEVEL = "synth-arith-hard"
# A step is one short line of thought and 1–3 lines of code (~50 tokens); the cap only stops a
# runaway sample early. Eight steps cover the six operations, the answer and one slip.
STEP_OVERRIDES = ("strategy.max_tokens=160",)
# How a round's rows are batched, in its joint training and in its value fit alike (as the warm
# start's: the question and the pasted-in outputs unlabelled, similar lengths per batch).
ROUND_BATCHES = {"batch_size": 32, "mask_observations": True, "max_len": 512, "group_by_length": True}


@dataclass(frozen=True)
class Args:
    out: Path
    seeds: tuple[int, ...]
    rounds: int
    test: int
    mcts_test: int
    sft_rows: tuple[int, ...]
    train_questions: int
    train_iterations: int
    train_temperature: float
    round_epochs: int
    anchor_rows: int
    value_fit_epochs: int
    value_fit_lr: float
    start_model: Path | None
    first_round: int
    round_lr: float
    value_head_lr: float
    intermediate: tuple[str, ...]
    beta: float
    layers: int
    hidden: int
    engine: str
    sandbox: str
    strategies: tuple[str, ...]
    overrides: tuple[str, ...]
    progress: bool
    release: Path | None
    jobs: int


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and each option's default (they are a measured recipe)."""


def parse_args(argv: Sequence[str] | None) -> Args:
    from runtime.config import SandboxBackend

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_Help)
    p.add_argument("--out", type=Path, default=Path("runs/mini"),
                   help="run directory; the same command with the same --out resumes")
    p.add_argument("--seeds", default="0,1", help="training seeds, comma-separated")
    p.add_argument("--rounds", type=int, default=2, help="self-improvement rounds K")
    p.add_argument("--test", type=int, default=1000, help="test problems for every strategy but MCTS")
    p.add_argument("--mcts-test", type=int, default=200, help="test problems for MCTS(40) (the first ones)")
    p.add_argument("--sft-rows", default="24000,24000",
                   help="synthetic solutions per warm-start SFT cycle, comma-separated (each cycle "
                        "a fresh cosine schedule from the previous one's model)")
    p.add_argument("--train-questions", type=int, default=400, help="training questions per round")
    p.add_argument("--train-iterations", type=int, default=40, help="MCTS simulations per training question")
    p.add_argument("--train-temperature", type=float, default=0.8,
                   help="sampling temperature of the training MCTS (docs/MINI.md: ~0.8 explores best)")
    p.add_argument("--round-epochs", type=int, default=2, help="epochs of each round's joint training")
    p.add_argument("--anchor-rows", type=int, default=3000,
                   help="fresh correct synthetic solutions mixed into each round's training data, "
                        "language-model loss only (no value target): they keep the policy's "
                        "step-by-step layout while it learns from its own search (0: none, the "
                        "first recipe, whose rounds lost 12 points)")
    p.add_argument("--value-fit-epochs", type=int, default=10,
                   help="after each round's joint training, train the value head alone (trunk "
                        "frozen, so the policy is unchanged) for this many epochs on the round's "
                        "rows (0: no fit)")
    p.add_argument("--value-fit-lr", type=float, default=1e-3,
                   help="learning rate of that fit (Adam moves all of a linear head's weights together: "
                        "much above 1e-3 it overshoots)")
    p.add_argument("--start-model", type=Path, metavar="DIR",
                   help="skip the warm start: rounds continue from this model (e.g. the shipped "
                        "models/mini-alphamath), evaluated first as stage 'start'; first seed only")
    p.add_argument("--first-round", type=int, default=1,
                   help="number of the first round run (with --start-model: the model's next round)")
    p.add_argument("--round-lr", type=float, default=2e-4,
                   help="trunk learning rate of the round training (with anchor rows; 5e-4 without "
                        "them wrecked the warm start's LM, the first recipe used 1e-4)")
    p.add_argument("--value-head-lr", type=float, default=5e-3, help="the value head's learning rate")
    p.add_argument("--beta", type=float, default=0.1, help="value-loss weight of the round training")
    p.add_argument("--intermediate-strategies", default=None,
                   help="presets for the warm start and every round but the last (default: --strategies)")
    p.add_argument("--layers", type=int, default=4, help="transformer layers (docs/MINI.md: 4)")
    p.add_argument("--hidden", type=int, default=256, help="d_model, a multiple of 64 (head_dim 64)")
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    p.add_argument("--sandbox", choices=get_args(SandboxBackend), default="auto")
    p.add_argument("--strategies", default=",".join(PAPER_COLUMNS),
                   help=f"presets, comma-separated, of: {', '.join(STRATEGIES)}")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra config override for every search (repeatable)")
    p.add_argument("--release", type=Path, metavar="DIR",
                   help="export the first seed's last model here as the project ships it "
                        "(float16, with a model card holding the table)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--jobs", type=int, default=1,
                   help="evaluations of a stage run at once, each in its own process pinned to its "
                        "share of the cores (2 on 2 cores: 0.72x the time of one after the other, "
                        "benchmarks/bench_side_by_side.py); seconds per question are then each "
                        "evaluation's on its share")
    a = p.parse_args(argv)
    strategies = tuple(s.strip() for s in a.strategies.split(",") if s.strip())
    intermediate = (strategies if a.intermediate_strategies is None else
                    tuple(s.strip() for s in a.intermediate_strategies.split(",") if s.strip()))
    unknown = [s for s in strategies + intermediate if s not in STRATEGIES]
    if unknown:
        p.error(f"unknown strategies {unknown}; known: {', '.join(STRATEGIES)}")
    try:
        seeds = tuple(int(s) for s in a.seeds.split(","))
        sft_rows = tuple(int(n) for n in a.sft_rows.split(","))
    except ValueError:
        p.error("--seeds and --sft-rows must be comma-separated integers")
    if not sft_rows or min(sft_rows) < 1:
        p.error("--sft-rows needs at least one positive count")
    if a.hidden < 64 or a.hidden % 64 or a.layers < 1:
        p.error("--hidden must be a positive multiple of 64 and --layers >= 1")
    if not 1 <= a.jobs <= len(os.sched_getaffinity(0)):
        p.error(f"--jobs must be between 1 and the {len(os.sched_getaffinity(0))} cores this process may use")
    if a.anchor_rows < 0 or a.value_fit_epochs < 0 or a.first_round < 1:
        p.error("--anchor-rows and --value-fit-epochs must be >= 0, --first-round >= 1")
    if a.start_model is not None and not (a.start_model / "config.json").is_file():
        p.error(f"--start-model {a.start_model}: not a model directory (no config.json)")
    return Args(out=a.out, seeds=seeds, rounds=a.rounds, test=a.test, mcts_test=min(a.mcts_test, a.test),
                sft_rows=sft_rows, train_questions=a.train_questions,
                train_iterations=a.train_iterations, train_temperature=a.train_temperature,
                round_epochs=a.round_epochs, anchor_rows=a.anchor_rows,
                value_fit_epochs=a.value_fit_epochs, value_fit_lr=a.value_fit_lr, start_model=a.start_model,
                first_round=a.first_round, round_lr=a.round_lr, value_head_lr=a.value_head_lr,
                intermediate=intermediate, beta=a.beta, layers=a.layers,
                hidden=a.hidden, engine=a.engine,
                sandbox=a.sandbox, strategies=strategies, overrides=tuple(a.overrides),
                progress=not a.no_progress, release=a.release, jobs=a.jobs)


# ---- steps --------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def eval_config(args: Args, preset: str, model: Path, dataset: str, output: Path,
                overrides: Sequence[str] = ()) -> EvalConfig:
    from runtime.config import compose_config

    engine = {"model": str(model), "kind": args.engine}
    if args.engine == "vllm":
        engine["max_model_len"] = 1024
    return compose_config(preset, engine=engine, sandbox={"backend": args.sandbox},
                          run={"dataset": dataset, "output": str(output), "concurrency": 256},
                          overrides=[*STEP_OVERRIDES, *overrides, *args.overrides])


def search(args: Args, preset: str, model: Path, dataset: str, output: Path,
           overrides: Sequence[str] = ()) -> float:
    """One evaluation run to completion (resumes); returns the seconds the scheduler ran (engine
    and sandbox start-up excluded: on this CPU vLLM takes ~15 s to start two engines)."""
    from rich.console import Console

    from runtime.evaluate import evaluate, plan_run
    from runtime.progress import RunProgress
    from strategies import make_strategy

    config = eval_config(args, preset, model, dataset, output, overrides)
    plan = plan_run(config)
    if plan.already_done >= plan.total:
        return 0.0
    progress = RunProgress(total=plan.total, done=plan.already_done, correct=plan.already_correct,
                           enabled=args.progress, console=Console(stderr=True, emoji=False))
    with progress:
        summary = asyncio.run(evaluate(config, make_strategy(config.strategy), on_row=progress.update,
                                       plan=plan))
    return summary.wall_s


def trained(out: Path) -> bool:
    """Whether a training into `out` finished (train() writes its summary last)."""
    return (out / "train_summary.json").is_file()


def train_model(data: Path | Sequence[Path], model: Path, out: Path, seed: int, **fields: object) -> Path:
    """Train (or resume) into `out`; a finished run is skipped."""
    from training.train import TrainConfig, train

    if trained(out):
        return out
    last = [0.0]
    window: list[dict[str, float]] = []  # the steps since the last line

    def on_step(step: int, total: int, losses: dict[str, float]) -> None:
        # The mean since the last line, not the last step's loss: length-grouped batches of only
        # incorrect paths have no LM term and a near-zero value error (saturated tanh at q = -1).
        window.append(losses)
        if time.monotonic() - last[0] > 30 or step == total:
            last[0] = time.monotonic()
            lm, value = (sum(w[key] for w in window) / len(window) for key in ("lm", "value"))
            log(f"  train {out.name}: step {step}/{total}  lm {lm:.3f}  value {value:.3f} "
                f"(mean of {len(window)} steps)")
            window.clear()

    train(TrainConfig(data=data, model=model, output_dir=out, seed=seed, resume=True,
                      save_every=100, **fields), on_step=on_step)  # type: ignore[arg-type]
    return out


def warm_start(args: Args, seed: int, root: Path) -> Path:
    """Base model, then one SFT cycle per entry of --sft-rows, each on fresh solutions and from
    the previous cycle's model (a cosine restart): warm/, warm-2/, ..."""
    from training.mini import SFT_TRAINING, MiniSpec, build_base_model, write_sft_rows

    base = root / "base"
    if not (base / "mini_spec.json").is_file():
        # head_dim 64 (vLLM's CPU attention needs >= 32); the MLP ~2.75 × d_model, as Qwen2.
        spec = MiniSpec(layers=args.layers, hidden=args.hidden, heads=args.hidden // 64,
                        intermediate=args.hidden * 11 // 4)
        build_base_model(base, seed=seed, spec=spec)
    model = base
    for cycle, n in enumerate(args.sft_rows, start=1):
        suffix = "" if cycle == 1 else f"-{cycle}"
        out = root / f"warm{suffix}"
        if not trained(out):
            rows = root / f"sft_rows{suffix}.jsonl"
            if not rows.is_file():  # each cycle its own problems: seeds seed, seed + 100, ...
                write_sft_rows(rows, n=n, seed=seed + 100 * (cycle - 1))
            log(f"seed {seed}: warm start cycle {cycle} — SFT on {n} synthetic solutions")
            train_model(rows, model, out, seed, **SFT_TRAINING)
        model = out
    return model


def self_improve(args: Args, seed: int, root: Path, k: int, model: Path) -> Path:
    """Round k: ground-truth MCTS trees on fresh training questions → rows → joint training
    (round<k>/model), then with --value-fit-epochs the value head alone on the same rows
    (round<k>/value_fit: the round's model)."""
    run = root / f"round{k}"
    out = run / "model"
    if not trained(out):
        _joint_round(args, seed, run, k, model, out)
    if not args.value_fit_epochs:
        return out
    if not trained(run / "value_fit"):  # a resumed run says nothing
        log(f"seed {seed}: round {k} — fitting the value head ({args.value_fit_epochs} epochs, trunk frozen)")
    return train_model(run / "train_rows.jsonl", out, run / "value_fit", seed, freeze_trunk=True,
                       epochs=args.value_fit_epochs, lr=args.value_fit_lr, **ROUND_BATCHES)


def _joint_round(args: Args, seed: int, run: Path, k: int, model: Path, out: Path) -> None:
    from training.data import export_training

    dataset = f"{LEVEL}:train:{args.train_questions}:{1000 + 10 * seed + k}"
    log(f"seed {seed}: round {k} — MCTS with the ground truth on {dataset}")
    seconds = search(args, "mcts_train_round2", model, dataset, run / "trees.jsonl",
                     overrides=(f"strategy.iterations={args.train_iterations}",
                                f"strategy.temperature={args.train_temperature}",
                                f"strategy.seed={seed * 100 + k}"))
    exported = export_training(run / "trees.jsonl", run / "train_rows.jsonl")
    log(f"  trees {seconds:.0f} s; {exported.positives} correct + {exported.negatives} incorrect paths")
    data = [run / "train_rows.jsonl"]
    if args.anchor_rows:
        from training.mini import write_sft_rows

        anchor = run / "anchor_rows.jsonl"
        if not anchor.is_file():  # problems of a seed no warm-start cycle used
            write_sft_rows(anchor, n=args.anchor_rows, seed=seed + 5000 + k, q=None)
        data.append(anchor)
    train_model(data, model, out, seed, lr=args.round_lr, epochs=args.round_epochs, beta=args.beta,
                value_head_lr=args.value_head_lr, **ROUND_BATCHES)


@dataclass(frozen=True)
class Evaluation:
    """One strategy on a stage's test problems."""

    preset: str
    problems: int
    output: Path


# Scheduler seconds per question on 2 cores (the README's tables), only to start the longest
# evaluations first when several run at once.
SECONDS_PER_QUESTION = {"greedy": 0.03, "maj5": 0.12, "sbs_1_5": 0.35, "sbs_3_5": 1.0,
                        "sbs_3_5_likelihood": 0.3, "mcts_n40": 3.3}


def evaluate_stage(args: Args, seed: int, root: Path, stage: str, model: Path,
                   strategies: Sequence[str]) -> dict[str, dict]:
    """Each of --strategies on the test problems (resuming), plus whatever other strategy an
    earlier invocation left results of for this stage; returns {preset: {"correct": {id: bool},
    "wall_s"}}."""
    from evals.report import correct_by_id

    cells: dict[str, dict] = {}
    timing_file = root / "eval" / stage / "wall.json"
    walls = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    tasks = [Evaluation(preset, args.mcts_test if preset.startswith("mcts") else args.test,
                        root / "eval" / stage / f"{preset}.jsonl") for preset in strategies]
    for task, seconds in run_evaluations(args, seed, stage, model, tasks):
        if seconds:
            walls[task.preset] = walls.get(task.preset, 0.0) + seconds
            timing_file.write_text(json.dumps(walls))
    for preset in STRATEGIES:
        output = root / "eval" / stage / f"{preset}.jsonl"
        if output.is_file():
            cells[preset] = {"correct": correct_by_id(output), "wall_s": walls.get(preset)}
    return cells


def evaluate_one(args: Args, seed: int, model: Path, task: Evaluation) -> float:
    return search(args, task.preset, model, *_test_run(seed, task))


def _test_run(seed: int, task: Evaluation) -> tuple[str, Path, tuple[str, ...]]:
    """An evaluation's dataset, results file and overrides."""
    return f"{LEVEL}:test:{task.problems}:0", task.output, (f"strategy.seed={seed}",)


def _finished(args: Args, seed: int, model: Path, task: Evaluation) -> bool:
    """Whether the results file holds every problem (without starting an engine); a results file
    of another configuration is the same one-line error here as in the evaluation."""
    from runtime.evaluate import plan_run

    plan = plan_run(eval_config(args, task.preset, model, *_test_run(seed, task)))
    return plan.already_done >= plan.total


def run_evaluations(args: Args, seed: int, stage: str, model: Path,
                    tasks: Sequence[Evaluation]) -> Iterator[tuple[Evaluation, float]]:
    """Each evaluation and its scheduler seconds as it finishes: in this process one after the
    other, or with --jobs N, N at a time, each in a fresh process pinned to its own share of the
    cores."""
    if args.jobs == 1:
        for task in tasks:
            log(f"seed {seed}: {stage} · {STRATEGIES[task.preset]} on {task.problems} test problems")
            yield task, evaluate_one(args, seed, model, task)
        return
    pending = []
    for task in tasks:  # a finished one needs no process
        if _finished(args, seed, model, task):
            yield task, 0.0
        else:
            pending.append(task)
    # Longest first, so that no long evaluation starts when the others are done.
    pending.sort(key=lambda t: SECONDS_PER_QUESTION[t.preset] * t.problems, reverse=True)
    shares = split_cores(args.jobs)
    quiet = replace(args, progress=False)  # progress bars of several processes would garble the console
    running: dict[Future[float], tuple[Evaluation, frozenset[int]]] = {}
    # spawn, not fork: this process holds torch's thread pools. One process per evaluation, so
    # each starts with its share's thread count and frees its engine's memory when it ends.
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_evaluation_worker, max_tasks_per_child=1) as pool:
        try:
            while pending or running:
                busy = {cores for _, cores in running.values()}
                for cores in [c for c in shares if c not in busy][:len(pending)]:
                    task = pending.pop(0)
                    log(f"seed {seed}: {stage} · {STRATEGIES[task.preset]} on {task.problems} test "
                        f"problems (cores {','.join(map(str, sorted(cores)))})")
                    future = pool.submit(_pinned_evaluation, quiet, seed, model, task, cores)
                    running[future] = (task, cores)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task, _ = running.pop(future)
                    yield task, future.result()
        except BaseException:
            # Ctrl-C, a `kill` or a failed evaluation: stop the others as an interrupted eval
            # stops (their finished rows stay for the next run). The workers ignore the
            # terminal's SIGINT so that each gets exactly this one request.
            for child in multiprocessing.active_children():
                child.terminate()
            raise


def _evaluation_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwinds: vLLM and sandboxes shut down


def _pinned_evaluation(args: Args, seed: int, model: Path, task: Evaluation, cores: frozenset[int]) -> float:
    pin_this_process(cores)  # before torch and vLLM are imported: they size their threads once
    import torch

    torch.set_num_threads(len(cores))
    return evaluate_one(args, seed, model, task)


# ---- the table ----------------------------------------------------------------------------------


def table(results: dict[int, dict[str, dict[str, dict]]], strategies: Sequence[str]) -> tuple[str, list[dict]]:
    from evals.stats import paired_bootstrap

    lines = ["| seed | stage | " + " | ".join(STRATEGIES[s] for s in strategies) + " |",
             "|---|---|" + "---|" * len(strategies)]
    records = []
    for seed, stages in results.items():
        for stage, cells in stages.items():
            greedy = cells.get("greedy", {}).get("correct", {})
            row = []
            for column in strategies:
                cell = cells.get(column)
                if not cell or not cell["correct"]:
                    row.append("–")
                    continue
                ids = sorted(cell["correct"])
                acc = sum(cell["correct"].values()) / len(ids)
                text = f"{100 * acc:.1f}"
                record = {"seed": seed, "stage": stage, "strategy": STRATEGIES[column], "n": len(ids),
                          "accuracy": acc, "wall_s_per_question": None}
                if column != "greedy" and greedy and all(i in greedy for i in ids):
                    ci = paired_bootstrap([greedy[i] for i in ids], [cell["correct"][i] for i in ids],
                                          seed=seed)
                    text += f" ({100 * ci.diff:+.1f} [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}])"
                    record.update(gain=ci.diff, gain_low=ci.low, gain_high=ci.high)
                if cell.get("wall_s"):
                    per_q = cell["wall_s"] / len(ids)
                    text += f" · {per_q:.2f} s"
                    record["wall_s_per_question"] = per_q
                row.append(text)
                records.append(record)
            lines.append(f"| {seed} | {stage} | " + " | ".join(row) + " |")
    return "\n".join(lines), records


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from runtime.logs import configure_logging

    args = parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    args.out.mkdir(parents=True, exist_ok=True)
    # Every run's structured events go to a file; the console keeps progress and warnings.
    configure_logging(args.out / "log.jsonl", console_level="WARNING")
    t0 = time.perf_counter()
    results: dict[int, dict[str, dict[str, dict]]] = {}
    final_models: dict[int, Path] = {}
    # A start model is one trained model, so it continues under one seed.
    for seed in args.seeds[:1] if args.start_model is not None else args.seeds:
        root = args.out / f"seed{seed}"
        root.mkdir(parents=True, exist_ok=True)
        if args.start_model is not None:
            model, first_stage = args.start_model, ("start", "start")
        else:
            model, first_stage = warm_start(args, seed, root), ("warm start", "warm")
        last = args.strategies
        results[seed] = {first_stage[0]: evaluate_stage(args, seed, root, first_stage[1], model,
                                                        args.intermediate if args.rounds else last)}
        final_round = args.first_round + args.rounds - 1
        for k in range(args.first_round, final_round + 1):
            model = self_improve(args, seed, root, k, model)
            results[seed][f"round {k}"] = evaluate_stage(args, seed, root, f"round{k}", model,
                                                         last if k == final_round else args.intermediate)
        final_models[seed] = model
        shown = [p for p in STRATEGIES if any(p in cells for st in results.values() for cells in st.values())]
        text, records = table(results, shown)
        if args.jobs > 1:
            text += (f"\n\nSeconds per question with --jobs {args.jobs}: each evaluation pinned to "
                     f"1/{args.jobs} of the {len(os.sched_getaffinity(0))} cores.")
        (args.out / "table.md").write_text(text + "\n")
        (args.out / "table.json").write_text(json.dumps(records, indent=1) + "\n")
        print(text, flush=True)
    minutes = (time.perf_counter() - t0) / 60
    if args.release is not None:
        release(args, final_models[args.seeds[0]], text, argv)
    log(f"done in {minutes:.1f} min (this invocation); table in {args.out / 'table.md'}")
    return 0


def release(args: Args, model: Path, table_text: str, argv: Sequence[str] | None) -> None:
    from safetensors import safe_open

    from training.mini import export_release

    command = " ".join(["benchmarks/mini_alphamath.py", *(argv if argv is not None else sys.argv[1:])])
    seed = args.seeds[0]
    with safe_open(str(model / "model.safetensors"), framework="pt") as weights:  # tied: no lm_head
        parameters = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
    stage = model.parent.name if model.name in ("model", "value_fit") else model.name
    rounds = (f"round {args.first_round}" if args.rounds == 1
              else f"rounds {args.first_round}–{args.first_round + args.rounds - 1}")
    if args.start_model is None:
        origin = (f"from scratch on a 2-core CPU by `{command}`:\na warm start on correct synthetic "
                  "solutions (`synth-arith-hard`: 3–6 arithmetic operations in\nword problems, "
                  "AlphaMath's XML ReAct format with python code steps), then "
                  f"{rounds} of\nMCTS self-improvement with only final-answer supervision")
    else:
        origin = (f"on a 2-core CPU: {rounds} of MCTS self-improvement with only final-answer\n"
                  f"supervision, continuing from `{args.start_model}` (its card is kept below), by\n"
                  f"`{command}`")
    earlier = ""
    if args.start_model is not None and (args.start_model / "README.md").is_file():
        earlier = ("\n## The model it continued from\n\n"
                   + (args.start_model / "README.md").read_text().split("\n", 1)[1].strip() + "\n")
    card = f"""# mini-alphamath

A {parameters / 1e6:.1f} M-parameter Qwen2 policy with an AlphaMath value head, trained
{origin}. This is the model of seed {seed}, {stage}. It knows nothing but
this task.

Accuracy (%) on synth-arith-hard test problems; in brackets the gain over greedy of the same
model with its paired-bootstrap 95 % interval; then seconds per question on that CPU:

{table_text}
{earlier}"""
    out = export_release(model, args.release, card=card)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    log(f"released {model} → {out} ({size:.1f} MB)")


if __name__ == "__main__":
    from runtime.errors import describe_user_error, user_errors

    # `kill` unwinds like Ctrl-C, so vLLM's engine-core processes are shut down, not orphaned;
    # and Ctrl-C works even where a shell started us in the background with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        raise SystemExit(main())
    except user_errors() as exc:
        # A user mistake (e.g. a results file of another configuration after moving --out): one
        # line, as the CLI gives, not a traceback.
        print(f"mini_alphamath: error: {describe_user_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue", file=sys.stderr)
        raise SystemExit(130) from None
