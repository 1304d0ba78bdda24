"""alphamath command line: parse, build objects from one validated config, call the packages.

    alphamath eval   --dataset gsm8k --strategy greedy --model PATH --output runs/x/results.jsonl
    alphamath score  runs/x/results.jsonl [--regrade] [--against runs/y/results.jsonl]
    alphamath solve  "What is 2+3?" --model PATH
    alphamath tiny-model OUT_DIR      (the local smoke-test model; no download)

A user mistake (bad flag, path, preset or value) prints one line and exits 2; Ctrl-C stops
cleanly with every finished problem saved, exit 130. In training the first Ctrl-C finishes the
current step and checkpoints it (`--resume` continues), a second stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, get_args

from runtime.config import (EngineKind, EvalConfig, InferStrategy, SandboxBackend, compose_config,
                            preset_names)
from runtime.errors import AlphaMathError, ConfigError, describe_user_error, user_errors

if TYPE_CHECKING:
    from rich.console import Console

    from training.data import ExportSummary
    from training.train import TrainConfig, TrainSummary

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the full usage is one `--help` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_engine_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=get_args(EngineKind),
                   help="inference engine: hf = transformers in this process (default); vllm = "
                        "vLLM AsyncLLM in this process; openai = OpenAI-compatible servers given by "
                        "--set engine.base_urls=[URL,...]")


def _add_sandbox_reuse_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sandbox-reuse", action="store_true", default=None,
                   help="reuse each warm sandbox process across code runs (state reset in between): "
                        "10-40x faster, weaker isolation between runs (= --set sandbox.reuse_process=true)")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", default="greedy", metavar="PRESET",
                   help=f"a preset in configs/ ({', '.join(preset_names())}) or a path to a .yaml "
                        "file (default: greedy)")
    p.add_argument("--model", help="local model directory or hub id, e.g. "
                                   "MARIO-Math-Reasoning/AlphaMath-7B")
    _add_engine_flag(p)
    p.add_argument("--value-model", metavar="DIR",
                   help="a separate value model for value-guided strategies (a checkpoint with "
                        "value_head.safetensors and the policy's tokenizer); default: the policy's own head")
    p.add_argument("--device", help="torch device for the hf engine, e.g. cpu, cuda (default: cpu)")
    p.add_argument("--sandbox", choices=get_args(SandboxBackend),
                   help="where code actions run (default: auto)")
    _add_sandbox_reuse_flag(p)
    p.add_argument("--sandbox-pool", type=int, metavar="N",
                   help="warm sandboxes in the pool (docker; bwrap with reuse); default 2 x CPUs")
    p.add_argument("--sandbox-max-uses", type=int, metavar="N",
                   help="runs per warm sandbox before it is replaced (default 100; 100,000 with "
                        "--sandbox-reuse)")
    p.add_argument("--sandbox-worker-runs", type=int, metavar="N",
                   help="with --sandbox-reuse: runs per worker process before the sandbox forks a "
                        "fresh one from its preloaded image (default 1,000)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config field, e.g. --set strategy.max_tokens=256 (repeatable)")
    p.add_argument("--log-file", type=Path, help="JSON log file (default: next to the results)")
    p.add_argument("-v", "--verbose", action="store_true", help="show info-level logs on the console")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="alphamath",
        description="Solve math problems by searching over an LLM's ReAct steps (AlphaMath).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    ev = sub.add_parser("eval", help="run a strategy over a dataset; resumable",
                        description="Run a strategy over a dataset and append one JSON line per "
                                    "problem to --output. Re-running the same command resumes.")
    ev.add_argument("--dataset", default=None,
                    help="gsm8k | math | math500 | PATH to a .json/.jsonl file (default: gsm8k)")
    ev.add_argument("--output", type=Path, help="results JSONL (default: runs/DATASET-STRATEGY/results.jsonl)")
    ev.add_argument("--limit", type=int, help="only the first N problems")
    ev.add_argument("--shard", metavar="i/n", help="only problems k with k %% n == i (0-based)")
    ev.add_argument("--concurrency", type=int, help="problems in flight at once (default: 256)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--retry-errors", action="store_true",
                    help="when resuming, solve again the problems whose saved row is an error (a "
                         "crashed server, a sandbox failure); their rows are removed first")
    _add_run_flags(ev)

    sc = sub.add_parser("score", help="accuracy, mean latency, steps, #solutions of a results file")
    sc.add_argument("results", type=Path, help="a results JSONL written by eval")
    sc.add_argument("--regrade", action="store_true", help="re-grade predictions instead of trusting `correct`")
    sc.add_argument("--against", type=Path, metavar="BASELINE.jsonl",
                    help="also print the accuracy gain over BASELINE on the problems both hold, "
                         "with a paired-bootstrap 95%% interval")

    of = sub.add_parser("offline", help="choose answers again from saved trees, without a model",
                        description="Offline inference (ALPHAMATH.md §3): prune subtrees without a "
                                    "valid answer, descend by a node score, re-grade, print the score.")
    of.add_argument("results", type=Path, help="results JSONL of an MCTS run (its trees)")
    of.add_argument("--by", choices=get_args(InferStrategy),
                    help="node score to descend by (default: the preset's, q_value); likelihood: "
                         "the path's weakest step's log-prior, what sbs_3_5_likelihood ranks by "
                         "(with --beam-width 3 it re-chooses that run's answers)")
    of.add_argument("--no-prune", action="store_true", help="keep subtrees without a valid answer")
    of.add_argument("--beam-width", type=int, help="children kept per depth (default: 1)")
    of.add_argument("--preset", default="offline", help="preset with the offline settings")
    of.add_argument("--output", type=Path, help="write the re-scored rows here (may be RESULTS itself)")

    so = sub.add_parser("solve", help="solve one question and print the step-by-step trace")
    so.add_argument("question", help="the question text, quoted")
    so.add_argument("--answer", help="a reference answer to grade against")
    _add_run_flags(so)

    sb = sub.add_parser("sandbox", help="build the Docker sandbox image, or remove leftover containers")
    sb_sub = sb.add_subparsers(dest="sandbox_command", required=True, metavar="ACTION")
    sbb = sb_sub.add_parser("build", help="build alphamath-sandbox:<version> locally (idempotent)")
    sbb.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    sbc = sb_sub.add_parser("clean", help="remove sandbox containers left by crashed runs")
    sbc.add_argument("--all", action="store_true", help="also remove containers of live runs")

    sv = sub.add_parser("serve", help="serve an engine over the OpenAI-compatible /v1/completions API",
                        description="Expose our engine (and its value head at /classify) over HTTP, "
                                    "so `--engine openai` clients can share it.")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    sv.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    _add_run_flags(sv)

    ex = sub.add_parser("export-training", help="turn search trees into training rows",
                        description="Sample <= K correct and <= K incorrect root-to-leaf paths per "
                                    "question (each step's Q, or its mean outcome with --targets "
                                    "outcome, as its value target), apply the "
                                    "paper's solution filter, write JSONL training rows.")
    ex.add_argument("results", type=Path, nargs="+",
                    help="results of an mcts_train_round* run (or of any run with --targets outcome)")
    ex.add_argument("--targets", choices=("q", "outcome"), default="q",
                    help="q: each step's backed-up Q of a ground-truth MCTS tree (default); "
                         "outcome: grade the answers of any run's trees (e.g. maj5 samples) against "
                         "the ground truth, each step's target the mean outcome below it")
    ex.add_argument("--out", type=Path, required=True, help="training rows (JSONL)")
    ex.add_argument("--max-per-class", type=int, default=4, help="paths per question and class (default 4)")
    ex.add_argument("--seed", type=int, default=0, help="seed of the path sampling (default 0)")

    vh = sub.add_parser("value-head", help="attach a freshly initialised value head to a model")
    vh_sub = vh.add_subparsers(dest="value_head_command", required=True, metavar="ACTION")
    vhi = vh_sub.add_parser("init", help="weights ~ N(0, initializer_range), bias 0; writes value_head.safetensors")
    vhi.add_argument("model", help="local model directory or hub id")
    vhi.add_argument("out", type=Path, help="output model directory (may be MODEL itself)")
    vhi.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")

    tr = sub.add_parser("train", help="policy + value training: CE on correct paths + beta * value MSE",
                        description="Train a model on export-training rows (resumable with --resume). "
                        "Data parallel on several devices: `torchrun --nproc_per_node N cli.py train ...` "
                        "(or `accelerate launch --multi_gpu --num_processes N cli.py train ...`); the "
                        "global batch stays --batch-size x --grad-accum rows per step.")
    tr.add_argument("--data", type=Path, nargs="+", required=True, help="training rows (JSONL)")
    tr.add_argument("--model", type=Path, required=True, help="model directory to start from")
    tr.add_argument("--output-dir", type=Path, required=True,
                    help="checkpoints and the final model (+ value_head.safetensors)")
    tr.add_argument("--beta", type=float, help="value-loss weight (default 0.1; paper text 0.01, its table 0.1)")
    tr.add_argument("--lr", type=float, help="learning rate (default 4e-5, the paper's)")
    tr.add_argument("--epochs", type=int, help="passes over the data (default 1)")
    tr.add_argument("--batch-size", type=int, help="rows per micro-batch, over all processes (default 8)")
    tr.add_argument("--grad-accum", type=int, help="micro-batches per optimiser step (default 1)")
    tr.add_argument("--value-head-lr", type=float, help="the value head's own learning rate (default: --lr)")
    tr.add_argument("--value-dropout", type=float, help="dropout on the value head's input (default 0.1)")
    tr.add_argument("--max-len", type=int, help="cutoff length in tokens (default 1024)")
    tr.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    tr.add_argument("--save-every", type=int, help="checkpoint every N steps (default: at the end)")
    tr.add_argument("--seed", type=int, help="seed of initialisation, dropout and batch order (default 0)")
    tr.add_argument("--device", help="auto | cpu | cuda (default auto; under a launcher one GPU per process)")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--set", dest="train_overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="any other field of training.train.TrainConfig, e.g. group_by_length=true, "
                         "mask_observations=true, freeze_trunk=true, dtype=bfloat16 (repeatable)")

    rd = sub.add_parser("round", help="one self-improvement round: MCTS with ground truth → "
                                      "training rows → train → evaluate, in one run directory")
    rd.add_argument("--model", required=True, help="the model to improve (a local directory)")
    rd.add_argument("--run-dir", type=Path, required=True, help="where every artifact goes")
    rd.add_argument("--dataset", default="synth-arith:train:200",
                    help="training questions, with answers (default: %(default)s)")
    rd.add_argument("--eval-dataset", default="synth-arith:test:200",
                    help="what the trained model is scored on (default: %(default)s)")
    rd.add_argument("--train-preset", default="mcts_train_round2",
                    help="the tree-building search, with the ground truth (default: %(default)s)")
    rd.add_argument("--eval-preset", default="greedy",
                    help="the search the trained model is scored with (default: %(default)s)")
    rd.add_argument("--sandbox", choices=get_args(SandboxBackend), default="auto",
                    help="where code actions run (default: %(default)s)")
    _add_engine_flag(rd)
    _add_sandbox_reuse_flag(rd)
    rd.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a field of both searches (repeatable)")
    rd.add_argument("--set-train", dest="train_search_overrides", action="append", default=[],
                    metavar="SECTION.KEY=VALUE",
                    help="override a field of the tree-building search only, e.g. "
                         "strategy.temperature=0.8 (repeatable)")
    rd.add_argument("--set-eval", dest="eval_search_overrides", action="append", default=[],
                    metavar="SECTION.KEY=VALUE", help="override a field of the evaluation only (repeatable)")
    rd.add_argument("--targets", choices=("q", "outcome"), default="q",
                    help="value targets of the training rows: q, each step's Q in the ground-truth "
                         "trees (default); outcome, the graded answers of any preset's samples "
                         "(e.g. --train-preset maj5), each step's the mean outcome below it")
    rd.add_argument("--extra-data", type=Path, nargs="+", default=[], metavar="ROWS",
                    help="more training rows (JSONL) trained alongside the round's own, e.g. "
                         "correct solutions without value targets that keep the policy's layout")
    rd.add_argument("--max-steps", type=int, help="training steps at most, each training (default: all)")
    rd.add_argument("--epochs", type=int, help="passes over the training rows (default: 1)")
    rd.add_argument("--batch-size", type=int, help="training batch size (default: 8)")
    rd.add_argument("--lr", type=float, help="training learning rate (default: 4e-5, the paper's)")
    rd.add_argument("--beta", type=float, help="value-loss weight (default 0.1; 0: the policy alone)")
    rd.add_argument("--train-set", dest="train_overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="any other field of training.train.TrainConfig, as train --set (repeatable)")
    rd.add_argument("--value-fit-epochs", type=int, default=0,
                    help="then refit the value head alone on the frozen trunk (the policy unchanged) "
                         "for this many epochs over the round's rows; the result is the round's "
                         "model (default: 0, no fit)")
    rd.add_argument("--value-fit-lr", type=float,
                    help="the value fit's learning rate (default 1e-3; a linear head overshoots above)")
    rd.add_argument("--no-progress", action="store_true", help="no progress bars")
    rd.add_argument("--log-file", type=Path, help="JSON log file (default: in --run-dir)")
    rd.add_argument("-v", "--verbose", action="store_true", help="show info-level logs on the console")

    tm = sub.add_parser("tiny-model", help="build the tiny local model used by the smoke run and tests")
    tm.add_argument("out", type=Path, help="directory to write the model to")
    tm.add_argument("--force", action="store_true", help="rebuild even if it exists")
    return parser


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    from runtime.engines.model_dir import missing_local_model

    run = ({"dataset": args.dataset, "output": args.output, "limit": args.limit, "shard": args.shard,
            "concurrency": args.concurrency, "retry_errors": args.retry_errors or None}
           if args.command == "eval" else None)
    config = compose_config(args.strategy, engine={"model": args.model, "kind": args.engine,
                                                   "device": args.device, "value_model": args.value_model},
                            sandbox={"backend": args.sandbox, "reuse_process": args.sandbox_reuse,
                                     "pool_size": args.sandbox_pool, "max_uses": args.sandbox_max_uses,
                                     "worker_runs": args.sandbox_worker_runs},
                            run=run, overrides=args.overrides)
    if config.engine.model is None:
        raise ConfigError("no model given: pass --model PATH_OR_HUB_ID "
                          "(`alphamath tiny-model DIR` builds a local smoke-test model)")
    if config.engine.kind != "openai":  # an openai model is a served name, not a path
        # Checked here, before a log file or run directory is made for a model that is not there.
        for name in (config.engine.model, config.engine.value_model):
            if name is not None and (missing := missing_local_model(name)):
                raise ConfigError(missing)
    if args.command == "eval" and config.run.output is None:
        stem = Path(config.run.dataset).stem if config.run.dataset.endswith(("json", "jsonl")) else config.run.dataset
        run = config.run.model_copy(update={"output": Path("runs") / f"{stem}-{Path(args.strategy).stem}" / "results.jsonl"})
        config = config.model_copy(update={"run": run})
    return config


def _setup_logging(args: argparse.Namespace, default_dir: Path) -> Path:
    from runtime.logs import configure_logging

    log_file = args.log_file or default_dir / f"log-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    configure_logging(log_file, console_level="INFO" if args.verbose else "WARNING")
    # transformers' own tqdm bars ("Loading weights") would tear through our progress bar.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return log_file


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from evals.report import render_score, score_results
    from runtime.evaluate import evaluate, plan_run
    from runtime.progress import RunProgress
    from strategies import make_strategy

    config = config_from_args(args)
    assert config.run.output is not None
    strategy = make_strategy(config.strategy)
    log_file = _setup_logging(args, config.run.output.parent)
    plan = plan_run(config)
    console = Console(stderr=True, emoji=False)
    existing = plan.existing
    if existing.dropped_errors:
        errors = f"; {existing.dropped_errors} error rows removed, to be solved again"
    elif existing.errors:
        errors = f", {existing.errors} of them errors (--retry-errors solves them again)"
    else:
        errors = ""
    console.print(f"[bold]alphamath eval[/] {escape(config.run.dataset)} · {strategy.name} · "
                  f"model {escape(str(config.engine.model))} → {escape(str(plan.output))} "
                  f"({plan.already_done} of {plan.total} already done{errors}) · log {escape(str(log_file))}")
    progress = RunProgress(total=plan.total, done=plan.already_done, correct=plan.already_correct,
                           enabled=not args.no_progress, console=console)
    try:
        with progress:
            summary = asyncio.run(evaluate(config, strategy, on_row=progress.update, plan=plan))
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: {progress.done} of {plan.total} problems are saved "
                      f"in {plan.output}; run the same command again to resume")
        return EXIT_INTERRUPTED
    # The run's own time per problem (what the paper's "time per question" means for a batch
    # run); the score table's latency column is one problem's start-to-answer time, which grows
    # with --concurrency because in-flight problems share the engine.
    per_problem = f" ({summary.wall_s / summary.finished:.2f} s per problem)" if summary.finished else ""
    console.print(f"finished {summary.finished} problems this run ({summary.errors} errors) "
                  f"in {summary.wall_s:.1f} s{per_problem}: {summary.describe()}")
    Console(emoji=False).print(render_score(score_results(plan.output)))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evals.report import render_score, score_results

    for path in (args.results, args.against):
        if path is not None and not path.exists():
            raise AlphaMathError(f"no such results file: {path}")
    console = Console(emoji=False)
    console.print(render_score(score_results(args.results, regrade=args.regrade)))
    if args.against is not None:
        from evals.report import compare_results

        console.print(compare_results(args.results, args.against), soft_wrap=True, markup=False)
    return 0


def cmd_offline(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evals.report import render_score
    from strategies.offline import offline_kwargs, offline_results

    if not args.results.exists():
        raise AlphaMathError(f"no such results file: {args.results}")
    overrides = [f"strategy.infer_strategy={args.by}"] if args.by else []
    if args.no_prune:
        overrides.append("strategy.prune=false")
    if args.beam_width:
        overrides.append(f"strategy.step_beam_width={args.beam_width}")
    config = compose_config(args.preset, overrides=overrides)
    score = offline_results(args.results, **offline_kwargs(config.strategy), output=args.output)
    Console(emoji=False).print(render_score(score))
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    from rich.console import Console

    from runtime.trace import solve_one

    config = config_from_args(args)
    _setup_logging(args, Path("runs") / "solve")
    return asyncio.run(solve_one(config, args.question, args.answer, Console(emoji=False)))


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox import build_image, clean_containers

    if args.sandbox_command == "build":
        try:
            built = build_image(force=args.force)
        except RuntimeError as exc:
            raise AlphaMathError(str(exc)) from None
        print("sandbox image built" if built else "sandbox image already present")
    else:
        print(f"removed {clean_containers(include_live=args.all)} sandbox containers")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from runtime.engines import open_engine
    from runtime.engines.server import run_server

    config = config_from_args(args)
    _setup_logging(args, Path("runs") / "serve")
    name = Path(config.engine.model or "alphamath").name
    run_server(lambda: open_engine(config.engine, seed=config.strategy.seed), args.host, args.port,
               model_name=name, ready=lambda s: print(f"serving {name} on {s.url}", flush=True))
    return 0


def cmd_export_training(args: argparse.Namespace) -> int:
    from training.data import export_training

    summary = export_training(args.results, args.out, max_per_class=args.max_per_class, seed=args.seed,
                              targets=args.targets)
    print(f"{summary.positives} correct + {summary.negatives} incorrect paths from "
          f"{summary.questions} questions ({summary.duplicates} duplicates, "
          f"{summary.all_error_dropped} all-error paths dropped) → {summary.out}")
    return 0


def cmd_value_head(args: argparse.Namespace) -> int:
    from training.value_head import init_value_head_dir

    print(f"value head initialised: {init_value_head_dir(args.model, args.out, seed=args.seed)}")
    return 0


class _StopAfterStep:
    """While training: the first Ctrl-C (or kill) asks for a stop after the current optimizer
    step, which is then checkpointed; a second one interrupts at once. Called, it says whether a
    stop was asked for (`train`'s `should_stop`)."""

    def __init__(self, console: Console | None) -> None:
        self._console = console  # None: ask quietly (a process other than the main one)
        self._asked = False
        self._previous: object = None

    def __call__(self) -> bool:
        return self._asked

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self._asked:
            raise KeyboardInterrupt
        self._asked = True
        if self._console is not None:
            self._console.print("[yellow]stopping after this training step[/] (Ctrl-C again to stop at once)")

    def __enter__(self) -> _StopAfterStep:
        self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]


def _train_with_progress(config: TrainConfig, *, progress: bool) -> TrainSummary:
    """`train` with a progress bar and the stop-after-this-step Ctrl-C."""
    from rich.console import Console

    from runtime.progress import TrainProgress
    from training.train import train

    console = Console(stderr=True, emoji=False)
    # Under torchrun / accelerate launch every process runs this; one bar and one message (rank
    # 0's) are enough.
    main = os.environ.get("RANK", "0") == "0"
    with (_StopAfterStep(console if main else None) as stop,
          TrainProgress(enabled=progress and main, console=console) as bar):
        return train(config, on_step=bar.update, should_stop=stop)


def _train_fields(items: Sequence[str], given: dict[str, Any], flag: str,
                 reserved: dict[str, str]) -> dict[str, Any]:
    """TrainConfig fields from `FIELD=VALUE` items, then the command's own flags that were given
    (they win). `reserved`: fields the command sets itself → what to use instead."""
    from runtime.config import parse_value

    fields: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or "." in key:
            raise ConfigError(f"{flag} expects FIELD=VALUE (e.g. group_by_length=true), got {item!r}")
        if key in reserved:
            raise ConfigError(f"{flag} {key}: {reserved[key]}")
        fields[key] = parse_value(raw)
    return {**fields, **{k: v for k, v in given.items() if v is not None}}


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import checked_train_config

    given = {"beta": args.beta, "lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size,
             "max_len": args.max_len, "max_steps": args.max_steps, "save_every": args.save_every,
             "seed": args.seed, "device": args.device, "grad_accum": args.grad_accum,
             "value_head_lr": args.value_head_lr, "value_dropout": args.value_dropout}
    reserved = {k: f"use --{k.replace('_', '-')} instead" for k in ("data", "model", "output_dir", "resume")}
    config = checked_train_config(data=args.data, model=args.model, output_dir=args.output_dir,
                                  resume=args.resume,
                                  **_train_fields(args.train_overrides, given, "train --set", reserved))
    summary = _train_with_progress(config, progress=not args.no_progress)
    if summary.interrupted:
        if summary.main_process:
            print(f"interrupted at step {summary.steps}: checkpoint saved in {summary.checkpoints[-1]}; "
                  "add --resume to the same command to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary.main_process:  # one line per run, not one per process
        on = f" on {summary.processes} processes" if summary.processes > 1 else ""
        print(f"trained {summary.steps} steps on {summary.rows} rows{on} in {summary.seconds:.0f} s; "
              f"final loss {summary.final_loss:.4f} → {summary.output_dir}")
    return 0


def cmd_round(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from evals.report import render_score
    from runtime.config import EvalConfig
    from runtime.evaluate import evaluate, plan_run
    from runtime.progress import RunProgress
    from strategies import make_strategy
    from training.round import RoundPlan, plan_round, run_round

    console = Console(stderr=True, emoji=False)

    def run_search(config: EvalConfig) -> None:
        plan = plan_run(config)
        console.print(f"[bold]{config.strategy.name}[/] on {escape(config.run.dataset)} → "
                      f"{escape(str(plan.output))}")
        progress = RunProgress(total=plan.total, done=plan.already_done, correct=plan.already_correct,
                               enabled=not args.no_progress, console=console)
        with progress:
            asyncio.run(evaluate(config, make_strategy(config.strategy), on_row=progress.update,
                                  plan=plan))

    given = {"max_steps": args.max_steps, "epochs": args.epochs, "batch_size": args.batch_size,
             "lr": args.lr, "beta": args.beta}
    fields = _train_fields(args.train_overrides, given, "round --train-set", {
        "data": "the round's rows, and --extra-data", "model": "use --model instead",
        "output_dir": "in --run-dir", "resume": "a round always resumes"})
    # The two flags are shorthands for overrides of both searches; an explicit --set wins.
    flagged = ([f"engine.kind={args.engine}"] if args.engine else []) + \
        (["sandbox.reuse_process=true"] if args.sandbox_reuse else [])
    plan = RoundPlan(model=args.model, run_dir=args.run_dir, train_dataset=args.dataset,
                     eval_dataset=args.eval_dataset, train_preset=args.train_preset,
                     eval_preset=args.eval_preset, overrides=(*flagged, *args.overrides),
                     train_overrides=tuple(args.train_search_overrides),
                     eval_overrides=tuple(args.eval_search_overrides), sandbox=args.sandbox,
                     targets=args.targets, extra_data=tuple(args.extra_data),
                     train_kwargs=tuple(fields.items()), value_fit_epochs=args.value_fit_epochs,
                     **({"value_fit_lr": args.value_fit_lr} if args.value_fit_lr is not None else {}))
    plan_round(plan)  # every step's settings checked before the run directory is made
    _setup_logging(args, args.run_dir)

    def run_training(config: TrainConfig) -> TrainSummary:
        trained = _train_with_progress(config, progress=not args.no_progress)
        if trained.interrupted:  # checkpointed: the same command resumes it
            raise KeyboardInterrupt
        return trained

    def exported(rows: ExportSummary) -> None:
        console.print(f"training data: {rows.positives} correct + {rows.negatives} incorrect paths of "
                      f"{rows.questions} questions → {escape(str(rows.out))}")

    try:
        summary = run_round(plan, run_search, run_training, exported)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/]: re-run the same command to continue in {args.run_dir}")
        return EXIT_INTERRUPTED

    def loss(value: float | None) -> str:
        return "–" if value is None else f"{value:.4f}"

    fit = (f"; value head refitted in {summary.value_fit_steps} steps (final loss "
           f"{loss(summary.value_fit_loss)})" if summary.value_fit_steps else "")
    console.print(f"trained {summary.train_steps} steps (final loss {loss(summary.final_loss)}){fit} "
                  f"→ {summary.model}")
    Console(emoji=False).print(render_score(summary.eval))
    return 0


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from training.tiny_model import build_tiny_model

    t0 = time.monotonic()
    path = build_tiny_model(args.out, force=args.force)
    print(f"tiny model ready at {path} ({time.monotonic() - t0:.1f} s)")
    return 0


COMMANDS = {"eval": cmd_eval, "score": cmd_score, "offline": cmd_offline, "solve": cmd_solve,
            "sandbox": cmd_sandbox, "serve": cmd_serve, "export-training": cmd_export_training,
            "value-head": cmd_value_head, "train": cmd_train, "round": cmd_round,
            "tiny-model": cmd_tiny_model}


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # Re-deliver as SIGINT rather than raising KeyboardInterrupt here: inside `asyncio.run` that
    # exception would land in whichever task happened to be running (its exception then never
    # retrieved, a traceback at exit), while asyncio's own SIGINT handler cancels the main task
    # cleanly. Outside an event loop SIGINT's handler raises KeyboardInterrupt as before.
    signal.raise_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> int:
    # A shell starts background jobs with SIGINT ignored, and asyncio only turns Ctrl-C into a
    # clean cancellation when Python's own handler is installed: make Ctrl-C/`kill -INT` mean
    # "stop and keep what finished" however we were started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # `kill` (SIGTERM) too: its default would end us without unwinding, and vLLM's engine-core
    # child processes (GiBs of KV cache each) would outlive us as orphans.
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except user_errors() as exc:
        print(f"alphamath {args.command}: error: {describe_user_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
