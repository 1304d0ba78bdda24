"""Joint policy + value training on exported rows (ALPHAMATH.md §5, eq. 8).

    summary = train(TrainConfig(data=[Path("train.jsonl")], model="ckpt", output_dir=Path("out")))

Loss per batch: ``CE + beta · MSE``.

* **CE**: next-token cross-entropy, mean over labelled tokens, on CORRECT paths only (a row whose
  final Q is −1 has every LM label masked, so negatives train the value head alone). Labelled
  tokens are all step tokens; the prompt (the question) is never labelled. This is what the
  original (LLaMA-Factory) does: it also trains on the pasted-in `<output>` text.
  `mask_observations=True` additionally masks the interpreter output inside ``<output>…</output>``
  (the tags stay labelled), as docs/MINI.md's small-model recipe did. When no token of the batch
  is labelled the CE is a zero-valued sum (the original's `reduction='sum'`), never NaN.
* **MSE**: ``tanh(head(dropout(h)))`` at each step's LAST token — each step is tokenized as
  ``step.strip() + "\\n"`` (segments are tokenized separately, as LLaMA-Factory does), so that
  is the ``"\\n"`` after ``</step>`` where the value is read at inference (§1.2) — against the
  step's Q; every other position is unlabelled, and so is a step whose q is None (LM-only
  anchor rows). ``value_positions="every_token"`` instead labels every token of a step with its
  Q (dense targets; README, "What the value head cannot see"). Masked: the sum of squared
  errors over labelled positions / (#labelled + 1e-3), over correct and incorrect paths alike. Dropout is trl's
  `summary_dropout_prob` 0.1, active in training only.
* **beta** (the original's `weight_alpha`) defaults to 0.1. The paper's TEXT (§C.3) says 0.01
  (0.0005 for Llama3) while its Table 6 says 0.1, and the maintainers said "0.1 × MSE" (#3, #8).

`freeze_trunk=True` trains the value head alone (the trunk runs without gradients, the loss is
the MSE alone): the policy is left exactly as it was.

Optimiser as the paper: AdamW, weight decay 0, warmup 3 % then cosine decay (lr 4e-5, 10 epochs
and batch 1024 there; defaults here are small-scale). The schedule depends on `epochs` only, so
`max_steps` (a cut-off) and resuming never change it.

Checkpoints: every `save_every` optimizer steps, ``output_dir/checkpoint-STEP/`` (written to a
temporary sibling, then renamed) holds the model, tokenizer, `value_head.safetensors`,
`"value_model": true` and `trainer_state.pt` (optimizer, scheduler, step, RNG). `resume=True`
continues from the newest one: same data order, same schedule, same RNG, so a resumed run
follows the uninterrupted one. The final model + head go to `output_dir` itself. A caller's
`should_stop()` (the CLI's first Ctrl-C) is asked after every optimizer step: when it says yes,
that step is checkpointed and training returns `interrupted`, so a stop loses no finished step.

Several devices: data parallel through `accelerate` (DDP), launched by `torchrun` or
`accelerate launch`; a single process is the plain single-device run:

    torchrun --nproc_per_node 4 cli.py train --data rows.jsonl --model M --output-dir OUT
    accelerate launch --multi_gpu --num_processes 4 cli.py train ...   # same thing

Every process builds the same epoch order and takes its slice (`_shard`) of each micro-batch, so
an optimizer step sees the same `batch_size × grad_accum` rows whatever the process count. Each
process scales its token sums by the GLOBAL counts of labelled tokens (known to all: every
process holds the whole encoded set) and by the process count, which DDP's gradient average
divides out again: the gradient is that of the one-process loss, not a mean of per-process
means (which would weigh a process's few labelled tokens like another's many). Only the main
process writes checkpoints and the final model; each process's RNG (value-head dropout) goes
into the trainer state, so resuming with the same count continues every stream.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runtime.config import first_validation_error
from runtime.engines.model_dir import missing_local_model
from runtime.engines.value_head import init_value_head, load_value_head, save_value_head
from training.data import TrainingRow, read_training_rows
from training.errors import CheckpointError, TrainingDataError, TrainingError
from training.value_head import DEFAULT_INITIALIZER_RANGE, mark_value_model, text_config_of

__all__ = ["Batch", "Encoded", "TrainConfig", "TrainSummary", "batch_loss", "checked_train_config", "collate",
           "encode_row", "train"]

IGNORE = -100
STATE_FILE = "trainer_state.pt"
_CKPT = re.compile(r"checkpoint-(\d+)")


class TrainConfig(BaseModel):
    """Everything `train` needs; validated on construction, no I/O."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: tuple[Path, ...] = Field(min_length=1)  # training-row JSONL files (export-training)
    model: Path  # a model directory (with or without a value head)
    output_dir: Path
    beta: float = Field(0.1, ge=0)  # paper text 0.01, paper Table 6 0.1
    lr: float = Field(4e-5, gt=0)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    max_len: int = Field(1024, ge=8)  # the paper's cutoff length; longer rows are truncated
    seed: int = 0
    save_every: int = Field(0, ge=0)  # optimizer steps between checkpoints; 0: only the end
    resume: bool = False
    max_steps: int | None = Field(None, ge=1)  # stop early (the schedule still spans `epochs`)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    # The value head's own learning rate (None: `lr`). A fresh head (weights ~ N(0, 0.02)) needs
    # far larger steps than the trunk, whose LM a high rate would wreck on a small data set.
    value_head_lr: float | None = Field(None, gt=0)
    value_dropout: float = Field(0.1, ge=0, lt=1)
    # Train the value head alone: the trunk (and so the policy) stays exactly as it is and the
    # loss is the value MSE alone. A fresh linear head needs many more steps than the few a
    # trunk can take on a small data set without drifting; this fits it after a joint round.
    freeze_trunk: bool = False
    mask_observations: bool = False
    # Where a step's Q is a value target: at its last token only (the original; where the value
    # is read at inference), or at every token of the step (a dense, token-level value: each
    # prefix's state learns the expected outcome, so a wrong number is penalised where it is
    # written instead of only where a summary of it reaches the step's end).
    value_positions: Literal["step_end", "every_token"] = "step_end"
    # Batch rows of similar length (within windows of 50 batches of the shuffled order): on a
    # CPU padding is paid in full, and random batches pad ~40 % of synthetic solutions' tokens.
    group_by_length: bool = False
    # "auto": cuda if available, else cpu. Under a launcher each process gets its own GPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "bfloat16"] = "float32"

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, (str, Path)) else value


def checked_train_config(**fields: Any) -> TrainConfig:
    """A TrainConfig from fields a user gave: an invalid one is one line naming the field
    (TrainingError), not pydantic's multi-line report."""
    try:
        return TrainConfig(**fields)
    except ValidationError as exc:
        raise TrainingError(f"train {first_validation_error(exc)}") from None


@dataclass
class TrainSummary:
    output_dir: Path
    steps: int = 0  # optimizer steps done in total (including before a resume)
    processes: int = 1  # data-parallel processes (torchrun / accelerate launch)
    main_process: bool = True  # the one that writes (and should print)
    rows: int = 0
    resumed_from: Path | None = None
    checkpoints: list[Path] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)  # per optimizer step of this run
    fresh_value_head: bool = False  # the model had none; one was initialised
    seconds: float = 0.0
    interrupted: bool = False  # stopped early on request: the last checkpoint resumes it

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1]["loss"] if self.losses else None


# ------------------------------------------------------------------------------- tokenization


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    lm_labels: list[int]  # IGNORE where no LM loss
    value_labels: list[float]  # meaningful where value_mask
    value_mask: list[bool]


def _observation_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in re.finditer(r"<output>\n?(.*?)\n?</output>", text, re.DOTALL):
        spans.append((m.start(1), m.end(1)))
    return spans


def encode_row(tokenizer: Any, row: TrainingRow, max_len: int, *,
               mask_observations: bool = False, dense_value: bool = False) -> Encoded:
    """Token ids and labels of one row (see the module docstring), truncated to `max_len`."""
    ids: list[int] = list(tokenizer(row.prompt)["input_ids"])  # special tokens as serving adds
    lm = [IGNORE] * len(ids)
    vl = [0.0] * len(ids)
    vm = [False] * len(ids)
    for step in row.steps:
        text = step.text.strip() + "\n"
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=mask_observations)
        step_ids = list(enc["input_ids"])
        if not step_ids:
            continue
        labels = list(step_ids) if row.correct else [IGNORE] * len(step_ids)
        if mask_observations and row.correct:
            spans = _observation_spans(text)
            for i, (start, end) in enumerate(enc["offset_mapping"]):
                if any(s <= start and end <= e and end > start for s, e in spans):
                    labels[i] = IGNORE
        ids += step_ids
        lm += labels
        q, labelled = (0.0 if step.q is None else float(step.q)), step.q is not None
        before = len(step_ids) - 1  # positions before the step's last token
        vl += [q if dense_value else 0.0] * before + [q]
        vm += [labelled and dense_value] * before + [labelled]
    return Encoded(ids[:max_len], lm[:max_len], vl[:max_len], vm[:max_len])


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lm_labels: torch.Tensor
    value_labels: torch.Tensor
    value_mask: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.lm_labels,
                                              self.value_labels, self.value_mask)))


def collate(rows: Sequence[Encoded], pad_id: int) -> Batch:
    """Right-padded tensors (padding is unlabelled and masked out of attention)."""
    width = max(len(r.input_ids) for r in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    lm = torch.full((n, width), IGNORE, dtype=torch.long)
    vl = torch.zeros((n, width), dtype=torch.float32)
    vm = torch.zeros((n, width), dtype=torch.bool)
    for i, r in enumerate(rows):
        k = len(r.input_ids)
        ids[i, :k] = torch.tensor(r.input_ids)
        mask[i, :k] = 1
        lm[i, :k] = torch.tensor(r.lm_labels)
        vl[i, :k] = torch.tensor(r.value_labels)
        vm[i, :k] = torch.tensor(r.value_mask)
    return Batch(ids, mask, lm, vl, vm)


def _loss_sums(model: Any, head: torch.nn.Linear, batch: Batch, dropout: float,
               frozen: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(CE summed over labelled tokens, squared value error summed over labelled positions)."""
    with torch.no_grad() if frozen else contextlib.nullcontext():
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    output_hidden_states=True)
    logits = out.logits[:, :-1].float()
    labels = batch.lm_labels[:, 1:]
    ce_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                             ignore_index=IGNORE, reduction="sum")
    h = out.hidden_states[-1].float()
    if dropout and head.training:
        h = F.dropout(h, p=dropout, training=True)
    v = torch.tanh(head(h).squeeze(-1))
    return ce_sum, (((v - batch.value_labels) ** 2) * batch.value_mask.float()).sum()


def _counts(row: Encoded) -> tuple[int, int]:
    """(LM-labelled tokens, value-labelled positions) of a row, as `_loss_sums` counts them
    (the LM label of token 0 is never used: it has no previous token to predict it)."""
    return sum(1 for x in row.lm_labels[1:] if x != IGNORE), sum(row.value_mask)


def _combine(ce_sum: torch.Tensor, mse_sum: torch.Tensor, n_lm: int, n_value: int, beta: float,
             frozen: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ce = ce_sum / max(n_lm, 1)
    mse = mse_sum / (n_value + 1e-3)
    return (mse if frozen else ce + beta * mse), ce, mse


def batch_loss(model: Any, head: torch.nn.Linear, batch: Batch, beta: float,
               dropout: float = 0.0, *, frozen: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, ce, mse) of one batch; `dropout` applies to the head's input when training.
    `frozen`: the trunk runs without gradients and the total is the MSE alone."""
    ce_sum, mse_sum = _loss_sums(model, head, batch, dropout, frozen)
    n_lm = int((batch.lm_labels[:, 1:] != IGNORE).sum())
    return _combine(ce_sum, mse_sum, n_lm, int(batch.value_mask.sum()), beta, frozen)


class _PolicyValue(torch.nn.Module):
    """Trunk and value head as ONE module, so that DDP averages the gradients of both."""

    def __init__(self, model: Any, head: torch.nn.Linear, dropout: float, frozen: bool) -> None:
        super().__init__()
        self.model, self.head, self.dropout, self.frozen = model, head, dropout, frozen

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return _loss_sums(self.model, self.head, batch, self.dropout, self.frozen)


def _shard(idx: Sequence[int], rank: int, world: int) -> tuple[list[int], float]:
    """This process's rows of a micro-batch, and the weight of its loss. Every process must run
    a forward and backward (DDP's all-reduce waits for all): one left without a row (a last
    micro-batch smaller than the process count) takes a row at weight 0."""
    mine = list(idx[rank::world])
    return (mine, 1.0) if mine else ([idx[0]], 0.0)


# ---------------------------------------------------------------------------- checkpoints


def _latest_checkpoint(output_dir: Path) -> Path | None:
    found = []
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            m = _CKPT.fullmatch(p.name)
            if m and (p / STATE_FILE).is_file():
                found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def _save(dest: Path, model: Any, tokenizer: Any, head: torch.nn.Linear,
          state: dict[str, Any] | None) -> Path:
    """Write a loadable model dir (+ trainer state) atomically: temporary sibling, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    save_value_head(head, tmp)
    mark_value_model(tmp)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    if dest.exists():
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        else:  # the final output_dir: move our files in, keep its checkpoints
            for item in tmp.iterdir():
                target = dest / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                item.replace(target)
            tmp.rmdir()
            return dest
    tmp.rename(dest)
    return dest


def _schedule(total: int, warmup_ratio: float):  # -> Callable[[int], float]
    warmup = max(1, math.ceil(total * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


# ---------------------------------------------------------------------------------- training


def _epoch_order(encoded: Sequence[Encoded], config: TrainConfig, epoch: int) -> list[int]:
    """Row indices of `epoch`: a permutation seeded by (seed, epoch); with `group_by_length`,
    each window of 50 batches is sorted by length, then its batches are shuffled again, so
    batches hold similar lengths but come in random order."""
    rng = random.Random(config.seed * 1_000_003 + epoch)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    if not config.group_by_length:
        return order
    size = config.batch_size
    grouped: list[int] = []
    for start in range(0, len(order), 50 * size):
        window = sorted(order[start:start + 50 * size], key=lambda i: len(encoded[i].input_ids))
        batches = [window[k:k + size] for k in range(0, len(window), size)]
        rng.shuffle(batches)
        grouped += [i for batch in batches for i in batch]
    return grouped


def _accelerator(device: str) -> Any:
    """The process group `torchrun`/`accelerate launch` set up (or a single process): device
    "cpu" keeps every process on the CPU (gloo), "auto"/"cuda" one GPU per process."""
    from accelerate import Accelerator

    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train device cuda: no CUDA device is visible")
    return Accelerator(cpu=device == "cpu")


def _stop_requested(should_stop: Callable[[], bool] | None, accelerator: Any) -> bool:
    """`should_stop()`, agreed by every process: each would otherwise leave the loop at its own
    step and the others would wait forever in the next collective."""
    if should_stop is None:
        return False
    wanted = torch.tensor([1.0 if should_stop() else 0.0])
    if accelerator.num_processes > 1:
        wanted = accelerator.reduce(wanted.to(accelerator.device), "sum").cpu()
    return bool(wanted.item() > 0)


def train(config: TrainConfig, *,
          on_step: Callable[[int, int, dict[str, float]], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainSummary:
    """Train `config.model` on `config.data`; returns what was done. See the module docstring.

    `on_step(step, last_step, losses)` is called after every optimizer step (a progress bar).
    `should_stop()` is asked after every step before the last; True checkpoints that step (with
    the trainer state, whatever `save_every`) and returns a summary marked `interrupted`.

    Raises TrainingDataError on an empty or malformed training set, CheckpointError when the
    model cannot be loaded or the output directory holds checkpoints and `resume` is off.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    rows = read_training_rows(list(config.data))
    out_dir = config.output_dir
    summary = TrainSummary(output_dir=out_dir, rows=len(rows))
    latest = _latest_checkpoint(out_dir)
    if latest is not None and not config.resume:
        raise CheckpointError(f"{out_dir} already holds {latest.name}; pass resume to continue "
                              "or choose another output directory")
    source = latest if (config.resume and latest is not None) else config.model
    summary.resumed_from = latest if source is latest else None

    # 1) model, tokenizer, value head
    accelerator = _accelerator(config.device)
    rank, world = accelerator.process_index, accelerator.num_processes
    summary.processes, summary.main_process = world, accelerator.is_main_process
    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    if missing := missing_local_model(source):
        raise CheckpointError(missing)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except Exception as exc:  # foreign errors: one line naming the model
        raise CheckpointError(f"cannot load model {source}: {exc}".splitlines()[0]) from exc
    text_cfg = text_config_of(model.config)
    hidden = int(text_cfg.hidden_size)
    try:
        head = load_value_head(source, hidden)
    except Exception as exc:
        raise CheckpointError(str(exc)) from exc
    if head is None:
        init_range = float(getattr(text_cfg, "initializer_range", None) or DEFAULT_INITIALIZER_RANGE)
        head = init_value_head(hidden, init_range, config.seed)  # same seed: same head everywhere
        summary.fresh_value_head = True
    head.requires_grad_(True)
    model.requires_grad_(not config.freeze_trunk)
    # DDP (when launched with several processes) moves to this process's device and, at every
    # backward, averages the gradients of trunk and head across processes.
    net = accelerator.prepare_model(_PolicyValue(model, head, config.value_dropout, config.freeze_trunk))
    device = accelerator.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
        tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)

    # 2) data: encoded once; epoch e visits rows in a permutation seeded by (seed, e)
    encoded = [encode_row(tokenizer, r, config.max_len, mask_observations=config.mask_observations,
                          dense_value=config.value_positions == "every_token")
               for r in rows]
    if not any(any(e.value_mask) or (any(x != IGNORE for x in e.lm_labels) and not config.freeze_trunk)
               for e in encoded):
        raise TrainingDataError("empty training set: no row has a labelled token within max_len"
                                + (" (a value target: the trunk is frozen)" if config.freeze_trunk else ""))
    counts = [_counts(e) for e in encoded]  # once: summed per micro-batch below
    micro_per_epoch = math.ceil(len(encoded) / config.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    stop_at = min(total_steps, config.max_steps or total_steps)

    # 3) optimiser, schedule, state
    trunk = [p for p in model.parameters() if p.requires_grad]
    params = trunk + list(head.parameters())
    opt = torch.optim.AdamW([{"params": trunk},
                             {"params": list(head.parameters()), "lr": config.value_head_lr or config.lr}],
                            lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total_steps, config.warmup_ratio))
    step = 0
    torch.manual_seed(config.seed + rank)  # dropout: one stream per process
    if summary.resumed_from is not None:
        try:
            state = torch.load(summary.resumed_from / STATE_FILE, map_location="cpu", weights_only=False)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step = int(state["step"])
            streams = state.get("torch_rng_per_process") or [state["torch_rng"]]
            if rank < len(streams):  # a process the saving run did not have keeps its seed
                torch.set_rng_state(streams[rank])
        except Exception as exc:
            raise CheckpointError(f"cannot resume from {summary.resumed_from}: {exc}".splitlines()[0]) from exc
        if state.get("total_steps") != total_steps:
            raise CheckpointError(
                f"cannot resume from {summary.resumed_from}: it was trained for "
                f"{state.get('total_steps')} steps, this configuration makes {total_steps}")

    def save(dest: Path, with_state: bool) -> Path:
        """Every process calls this: the RNG streams are gathered, the main process writes."""
        state = None
        if with_state:
            from accelerate.utils import gather_object

            streams = gather_object([torch.get_rng_state()]) if world > 1 else [torch.get_rng_state()]
            state = {"step": step, "total_steps": total_steps, "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "torch_rng": streams[0],
                     "torch_rng_per_process": streams, "processes": world,
                     "config": config.model_dump(mode="json")}
        if accelerator.is_main_process:
            _save(dest, model, tokenizer, head, state)
        accelerator.wait_for_everyone()  # nobody reads or resumes a half-written directory
        return dest

    # 4) the loop: one optimizer step = grad_accum micro-batches, each split across processes
    net.train(not config.freeze_trunk)  # a frozen trunk gives the head what inference will
    head.train()
    order_epoch, order = -1, list[int]()
    while step < stop_at:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        if epoch != order_epoch:  # the same permutation for every step of the epoch: build it once
            order_epoch, order = epoch, _epoch_order(encoded, config, epoch)
        first = in_epoch * config.grad_accum
        micro = range(first, min(first + config.grad_accum, micro_per_epoch))
        opt.zero_grad(set_to_none=True)
        sums = torch.zeros(3, dtype=torch.float64)  # loss, ce, mse of the step (all processes)
        for j, m in enumerate(micro):
            idx = order[m * config.batch_size:(m + 1) * config.batch_size]
            n_lm = sum(counts[i][0] for i in idx)  # of the whole micro-batch, not this shard
            n_value = sum(counts[i][1] for i in idx)
            mine, weight = _shard(idx, rank, world)
            batch = collate([encoded[i] for i in mine], pad_id).to(device)
            last = j == len(micro) - 1
            with contextlib.nullcontext() if last or world == 1 else accelerator.no_sync(net):
                ce_sum, mse_sum = net(batch)
                loss, ce, mse = _combine(weight * ce_sum, weight * mse_sum, n_lm, n_value,
                                         config.beta, config.freeze_trunk)
                # x world: DDP divides the summed gradients by it again
                accelerator.backward(loss * (world / len(micro)))
            sums += torch.tensor([loss.item(), ce.item(), mse.item()], dtype=torch.float64) / len(micro)
        if world > 1:  # each process holds its share of the global sums
            sums = accelerator.reduce(sums.to(device), "sum").cpu()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        sched.step()
        step += 1
        tot, ce_step, mse_step = (float(x) for x in sums)
        summary.losses.append({"step": step, "loss": tot, "lm": ce_step, "value": mse_step,
                               "lr": sched.get_last_lr()[0]})
        if on_step is not None and accelerator.is_main_process:
            on_step(step, stop_at, summary.losses[-1])
        if step < stop_at and _stop_requested(should_stop, accelerator):
            summary.checkpoints.append(save(out_dir / f"checkpoint-{step}", True))
            summary.steps, summary.interrupted = step, True
            summary.seconds = time.perf_counter() - t0
            return summary
        if config.save_every and step % config.save_every == 0 and step < stop_at:
            summary.checkpoints.append(save(out_dir / f"checkpoint-{step}", True))

    # 5) the end: a last checkpoint (resumable) and the final model in output_dir
    net.eval()
    head.eval()
    if config.save_every:
        summary.checkpoints.append(save(out_dir / f"checkpoint-{step}", True))
    save(out_dir, False)
    summary.steps = step
    summary.seconds = time.perf_counter() - t0
    if accelerator.is_main_process:
        (out_dir / "train_summary.json").write_text(json.dumps(
            {"steps": step, "rows": len(rows), "processes": world,
             "resumed_from": str(summary.resumed_from or ""),
             "config": config.model_dump(mode="json"),  # what made this model, for reproducing it
             "losses": summary.losses, "seconds": round(summary.seconds, 2)}, indent=1) + "\n")
    accelerator.wait_for_everyone()
    return summary
