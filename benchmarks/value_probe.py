"""Could *any* head on a model's frozen trunk rank a question's candidates? Heads fitted here.

    python benchmarks/value_probe.py MODEL --train ROWS.jsonl [...] --test ROWS.jsonl [...] \
        [--pool last,mean,min] [--hidden 0,128] [--loss pair] [--steps 3000] [--weight-decay 0.01]

ROWS: outcome-labelled candidates as for `value_quality.py` (`export-training --targets outcome`),
the training ones of other questions than the test ones. The trunk runs once per row (frozen);
then, for every combination asked, a head is fitted on the training rows' final-layer states and
both row sets are ranked (`value_quality.ranking`). The model's own value head is one point of
this space (`--pool last --hidden 0`, fitted on Q targets by MSE in `cli.py train`); the others ask
whether the trunk's states hold what ranking needs, and where:

- pool `last`: the state at the last step's last token, where the value head reads;
- pool `mean`: a score at every solution token, averaged;
- pool `min`: a score at every solution token, soft minimum (τ = 1, so gradients reach every low
  token, not only the lowest): one wrong token can sink a solution, which is how the policy's
  weakest-step likelihood ranks (README, "SBS ranked by the policy's own likelihood");
- hidden 0: a linear scorer; hidden N: one GELU layer of N units first;
- loss `pair`: logistic loss on every (correct, incorrect) pair of one question, exactly what the
  pair AUC counts; `bce`: each row's outcome, which also rewards knowing which questions are hard.

Training-row figures beside held-out ones separate "the states do not hold it" (both low) from
"too few pairs to learn it" (training high, held-out low).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F

from value_quality import Ranking, forward_row, load_policy, ranking

if TYPE_CHECKING:
    from training.data import TrainingRow

Pool = Literal["last", "mean", "min"]
Loss = Literal["pair", "bce"]


@dataclass(frozen=True)
class RowStates:
    """The trunk's final-layer states at one row's solution tokens, and where the value head reads."""

    states: torch.Tensor  # (solution tokens, hidden), float16 to halve the memory of a few thousand rows
    last: int  # index into `states` of the last step's last token


def trunk_states(model_dir: Path, *row_sets: Sequence[TrainingRow]) -> list[list[RowStates]]:
    """Run the frozen model over each row of each set, encoded exactly as training encodes it."""
    tokenizer, model = load_policy(model_dir)
    out: list[list[RowStates]] = []
    with torch.no_grad():
        for rows in row_sets:
            out.append([])
            for row in rows:
                _, result, last = forward_row(tokenizer, model, row)
                if last is None:
                    raise SystemExit(f"row {row.id!r}: no step inside the 1,024-token window")
                start = len(tokenizer(row.prompt)["input_ids"])
                out[-1].append(RowStates(result.hidden_states[-1][0, start:].half(), last - start))
    return out


class ProbeHead(torch.nn.Module):
    """A scorer at each position (linear, or one hidden layer), pooled into one score per row."""

    def __init__(self, width: int, pool: Pool, hidden: int = 0) -> None:
        super().__init__()
        self.pool = pool
        self.scorer: torch.nn.Module = (
            torch.nn.Linear(width, 1) if hidden == 0 else
            torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1)))

    def forward(self, batch: Sequence[RowStates]) -> torch.Tensor:
        if self.pool == "last":
            return self.scorer(torch.stack([r.states[r.last] for r in batch]).float()).squeeze(-1)
        padded = torch.nn.utils.rnn.pad_sequence([r.states for r in batch], batch_first=True).float()
        mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones(len(r.states), dtype=torch.bool) for r in batch], batch_first=True)
        scores = self.scorer(padded).squeeze(-1)
        if self.pool == "mean":
            return (scores * mask).sum(1) / mask.sum(1)
        return -torch.logsumexp((-scores).masked_fill(~mask, float("-inf")), dim=1)  # soft minimum, τ 1


def within_question_pairs(rows: Sequence[TrainingRow]) -> list[tuple[int, int]]:
    """(correct, incorrect) row indices of every pair that shares a question."""
    by_q: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_q.setdefault(r.id, []).append(i)
    return [(p, n) for ids in by_q.values() for p in ids if rows[p].correct
            for n in ids if not rows[n].correct]


def fit(head: ProbeHead, states: Sequence[RowStates], rows: Sequence[TrainingRow], loss: Loss, *,
        steps: int, weight_decay: float, lr: float = 1e-3, batch: int = 32, seed: int = 0) -> ProbeHead:
    """`steps` AdamW updates on minibatches of pairs (`pair`) or rows (`bce`), reshuffled each pass."""
    rnd = random.Random(seed)
    units: list = within_question_pairs(rows) if loss == "pair" else list(range(len(rows)))
    if not units:
        raise SystemExit("no training data for this loss: no question has both a correct and an "
                         "incorrect candidate" if loss == "pair" else "no training rows")
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    order: list = []
    for _ in range(steps):
        if len(order) < batch:
            order += rnd.sample(units, len(units))
        chunk, order = order[:batch], order[batch:]
        if loss == "pair":
            scores = head([states[i] for pair in chunk for i in pair]).view(-1, 2)
            value = F.softplus(scores[:, 1] - scores[:, 0]).mean()
        else:
            target = torch.tensor([float(rows[i].correct) for i in chunk])
            value = F.binary_cross_entropy_with_logits(head([states[i] for i in chunk]), target)
        opt.zero_grad()
        value.backward()
        opt.step()
    return head


def rank_with(head: ProbeHead, states: Sequence[RowStates], rows: Sequence[TrainingRow]) -> Ranking:
    with torch.no_grad():
        scores = [float(s) for b in range(0, len(states), 64) for s in head(states[b:b + 64])]
    return ranking([r.id for r in rows], [r.correct for r in rows], scores)


def _csv(kind: type, allowed: Sequence[str] | None = None):
    def parse(text: str) -> list:
        items = [kind(x) for x in text.split(",") if x]
        if allowed is not None and (bad := [x for x in items if x not in allowed]):
            raise argparse.ArgumentTypeError(f"{bad} not among {list(allowed)}")
        return items
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    from training.data import read_training_rows
    from training.errors import TrainingDataError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model directory (its trunk is probed, frozen)")
    p.add_argument("--train", type=Path, nargs="+", required=True, help="outcome-labelled rows to fit on")
    p.add_argument("--test", type=Path, nargs="+", required=True, help="outcome-labelled rows of other questions")
    p.add_argument("--pool", type=_csv(str, ("last", "mean", "min")), default=["last", "mean", "min"])
    p.add_argument("--hidden", type=_csv(int), default=[0, 128], help="0: linear; N: one hidden layer")
    p.add_argument("--loss", type=_csv(str, ("pair", "bce")), default=["pair"])
    p.add_argument("--steps", type=int, default=3000, help="AdamW updates per head (batch 32)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    a = p.parse_args(argv)
    try:
        train_rows, test_rows = read_training_rows(a.train), read_training_rows(a.test)
    except TrainingDataError as e:
        raise SystemExit(str(e)) from None
    overlap = {r.prompt for r in train_rows} & {r.prompt for r in test_rows}
    if overlap:
        raise SystemExit(f"{len(overlap)} questions are in both --train and --test")
    train_states, test_states = trunk_states(a.model, train_rows, test_rows)
    print(f"{a.model}: fitted on {len(train_rows)} candidates "
          f"({len(within_question_pairs(train_rows))} pairs), ranked on {len(test_rows)} held out")
    print("| pool | head | loss | held-out AUC | held-out pair AUC (pairs) | held-out pick | "
          "training pair AUC |\n|---|---|---|---|---|---|---|")
    for pool, hidden, loss in itertools.product(a.pool, a.hidden, a.loss):
        torch.manual_seed(0)  # every head starts from a seeded draw, whatever ran before it
        head = fit(ProbeHead(train_states[0].states.shape[-1], pool, hidden), train_states, train_rows,
                   loss, steps=a.steps, weight_decay=a.weight_decay)
        held, own = rank_with(head, test_states, test_rows), rank_with(head, train_states, train_rows)
        print(f"| {pool} | {'linear' if hidden == 0 else f'MLP {hidden}'} | {loss} | {held.auc:.3f} | "
              f"{held.pair_auc:.3f} ({held.pairs}) | {100 * held.pick:.1f}% | {own.pair_auc:.3f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
