"""How well does a model's value head rank candidate solutions? Beside it, its policy's likelihood.

    python benchmarks/value_quality.py MODEL ROWS.jsonl [ROWS.jsonl ...]

ROWS: outcome-labelled candidates of held-out questions, e.g. 5 samples per test question::

    cli.py eval --strategy maj5 --dataset synth-arith-hard:test:300 --model MODEL --output S.jsonl
    cli.py export-training S.jsonl --out ROWS.jsonl --targets outcome --max-per-class 8

Value-guided search (SBS, MCTS) only ever compares candidates *of one question*, so the figure
that decides whether it beats greedy is the within-question one: over every (correct, incorrect)
pair of the same question, how often the correct one gets the higher value (`pair AUC`; 0.5 is
chance), and how often the highest-valued distinct candidate is correct (`pick`; `oracle` when
any is). The overall AUC also rewards a head that only knows which questions are hard. The
likelihood rows score each candidate by the policy's own log-probability of its tokens (the
pasted-in interpreter outputs excluded): what the policy knows that a value head could learn.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from training.data import TrainingRow
    from training.train import Encoded


@dataclass(frozen=True)
class Ranking:
    auc: float  # over all candidates (nan when one class is missing)
    pair_auc: float  # within questions (nan without a question holding both classes)
    pairs: int
    pick: float  # share of questions whose top-scored candidate is correct
    oracle: float  # share of questions with any correct candidate


def _auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(score of a positive > score of a negative), ties count half (Mann-Whitney)."""
    if not pos or not neg:
        return float("nan")
    ranked = sorted(neg)
    wins = 0.0
    for v in pos:
        lo, hi = bisect.bisect_left(ranked, v), bisect.bisect_right(ranked, v)
        wins += lo + 0.5 * (hi - lo)
    return wins / (len(pos) * len(neg))


def ranking(questions: Sequence[str], correct: Sequence[bool], scores: Sequence[float]) -> Ranking:
    """`Ranking` of candidates given as parallel lists (question id, correct, score)."""
    by_q: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for q, c, s in zip(questions, correct, scores, strict=True):
        by_q[q].append((s, c))
    wins, pairs = 0.0, 0
    for cands in by_q.values():
        pos = [s for s, c in cands if c]
        neg = [s for s, c in cands if not c]
        if pos and neg:
            wins += _auc(pos, neg) * len(pos) * len(neg)
            pairs += len(pos) * len(neg)
    n = max(len(by_q), 1)
    return Ranking(
        auc=_auc([s for s, c in zip(scores, correct) if c], [s for s, c in zip(scores, correct) if not c]),
        pair_auc=wins / pairs if pairs else float("nan"), pairs=pairs,
        pick=sum(max(c, key=lambda sc: sc[0])[1] for c in by_q.values()) / n,
        oracle=sum(any(ok for _, ok in c) for c in by_q.values()) / n)


def load_policy(model_dir: Path) -> tuple[Any, Any]:
    """(tokenizer, float32 causal LM in eval mode) of `model_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return tokenizer, AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def forward_row(tokenizer: Any, model: Any, row: TrainingRow) -> tuple[Encoded, Any, int | None]:
    """One row through the model (call under `torch.no_grad()`): its encoding, as training encodes
    it with every step LM-labelled as if correct and the pasted outputs masked (the path's own
    tokens); the model's output with hidden states; the value position (the last step's last
    token), None when no step fits the 1,024-token window."""
    import torch

    from training.data import TrainingRow
    from training.train import encode_row

    enc = encode_row(tokenizer, TrainingRow(row.prompt, row.steps, True, row.id), 1024, mask_observations=True)
    out = model(input_ids=torch.tensor([enc.input_ids]), output_hidden_states=True)
    marked = [i for i, m in enumerate(enc.value_mask) if m]
    return enc, out, (marked[-1] if marked else None)


def score_rows(model_dir: Path, rows_paths: Sequence[Path]) -> tuple[list[TrainingRow], list[float], list[float]]:
    """(rows, value of each row's last step, policy log-likelihood of each row's own tokens)."""
    import torch
    import torch.nn.functional as F

    from runtime.engines.value_head import load_value_head
    from training.data import read_training_rows
    from training.train import IGNORE

    tokenizer, model = load_policy(model_dir)
    head = load_value_head(model_dir, model.config.hidden_size)
    if head is None:
        raise SystemExit(f"{model_dir}: no value head (value_head.safetensors)")
    head = head.float().eval()
    rows = read_training_rows(list(rows_paths))
    values, likelihoods = [], []
    with torch.no_grad():
        for row in rows:
            enc, out, last = forward_row(tokenizer, model, row)
            last = -1 if last is None else last
            values.append(float(torch.tanh(head(out.hidden_states[-1][0, last].float()))))
            labels = torch.tensor(enc.lm_labels[1:])
            logp = F.log_softmax(out.logits[0, :-1].float(), dim=-1)
            keep = labels != IGNORE
            likelihoods.append(float(logp[torch.arange(len(labels)), labels.clamp(min=0)][keep].sum()))
    return rows, values, likelihoods


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="model directory with value_head.safetensors")
    p.add_argument("rows", type=Path, nargs="+", help="outcome-labelled rows (export-training --targets outcome)")
    a = p.parse_args(argv)
    rows, values, likelihoods = score_rows(a.model, a.rows)
    ids, ok = [r.id for r in rows], [r.correct for r in rows]
    print(f"{a.model}: {len(rows)} candidates of {len(set(ids))} questions")
    print("| score | AUC | pair AUC (pairs) | pick | oracle |\n|---|---|---|---|---|")
    for name, scores in (("value head", values), ("policy log-likelihood", likelihoods)):
        r = ranking(ids, ok, scores)
        print(f"| {name} | {r.auc:.3f} | {r.pair_auc:.3f} ({r.pairs}) | {100 * r.pick:.1f}% | "
              f"{100 * r.oracle:.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
