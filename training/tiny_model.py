"""Build a tiny local policy+value model in AlphaMath's XML format, for tests and smoke runs.

No model hub is needed: the corpus is templated here, the byte-level BPE tokenizer is trained on
it, and a random 2-layer Qwen2 is trained for a couple of hundred steps — enough to learn the
*format* (a `<p>` line, a ```python block closed by `</code>`, then a `Final Answer:` step once an
`<output>` is pasted in), not the arithmetic. Half the questions carry random filler sentences
(and the loss skips the question), so real GSM8K / MATH questions also get well-formed steps —
the CLI smoke run depends on that. The build takes ~20-35 s on two CPU cores.

    python -m training.tiny_model OUT_DIR [--seed S] [--steps N] [--force]

The directory is complete once the marker file `.tiny_model_complete` exists; it is written last,
inside a temporary sibling directory that is then renamed into place, so a crash never leaves a
half-built model that looks finished. A complete directory is returned as is (a cache).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from runtime.engines.value_head import init_value_head, save_value_head

__all__ = ["MARKER", "build_tiny_model", "make_corpus", "make_document", "make_problem", "main", "solution_text",
           "train_tokenizer"]

MARKER = ".tiny_model_complete"
EOS = "<|endoftext|>"
# Bump when the recipe changes, so a cached directory built by an older recipe is rebuilt.
RECIPE_VERSION = 2

_NAMES = ("Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Jack", "Emma", "Noah", "Zoe", "Leo", "Ava")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells")


def make_problem(rng: random.Random) -> tuple[str, str, int]:
    """One GSM8K-like question, its one-line python expression and its exact integer answer."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    op = rng.randrange(4)
    if op == 0:
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        q = rng.choice(
            (
                f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have?",
                f"{name} has {a} {item}. A friend gives {name} {b} more. How many {item} now?",
            )
        )
        return q, f"{a} + {b}", a + b
    if op == 1:
        a = rng.randint(10, 90)
        b = rng.randint(1, a - 1)
        q = rng.choice(
            (
                f"{name} has {a} {item} and gives away {b}. How many {item} are left?",
                f"{name} had {a} {item} and lost {b} of them. How many {item} remain?",
            )
        )
        return q, f"{a} - {b}", a - b
    if op == 2:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        q = f"{name} buys {a} boxes with {b} {item} in each box. How many {item} does {name} buy?"
        return q, f"{a} * {b}", a * b
    b, k = rng.randint(2, 9), rng.randint(2, 12)
    q = f"{name} shares {b * k} {item} equally among {b} friends. How many {item} does each get?"
    return q, f"{b * k} // {b}", k


_ANALYSIS = {"+": "Compute the total.", "-": "Compute what is left.", "*": "Compute the product."}

# Filler for distractor sentences, so real (GSM8K-like) questions look familiar enough: common
# words, made-up words over the whole alphabet (every byte-level letter token gets trained) and
# numbers in the shapes word problems use.
_WORDS = (
    "the a an of to and in is for on with at by from that this it each every day week month year "
    "per more less than half twice total how much many does did will can she he they her his their "
    "has have had buys sells makes gets pays costs spends earns saves uses needs wants eats runs "
    "walks reads writes plays works grows bakes drives store market farm school garden party class "
    "team box bag bottle cup car house dollars cents hours minutes miles pounds feet friends "
    "students children people dogs cats eggs ducks cows pages trees flowers tickets shirts money "
    "price time water bread pizza cake pies rooms floors weeks days only also then after before "
    "if all some other remaining rest left after first second third percent"
).split()
_PUNCT = (".", ".", ".", "?", "!", ",", ";", ":")
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _noise_word(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:
        return rng.choice(_WORDS)
    if r < 0.8:
        return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(2, 9)))
    n = rng.randint(1, 500)
    return rng.choice((str(n), f"${n}", f"{n}%", f"{n}.{rng.randint(1, 9)}", f"{n},{rng.randint(100, 999)}",
                       f"1/{rng.randint(2, 9)}", f"({n})", f"“{rng.choice(_WORDS)}”", f"{rng.choice(_NAMES)}’s"))


def _noise_sentence(rng: random.Random) -> str:
    words = [_noise_word(rng) for _ in range(rng.randint(3, 14))]
    return words[0][:1].upper() + words[0][1:] + " " + " ".join(words[1:]) + rng.choice(_PUNCT)


def make_document(rng: random.Random) -> tuple[str, str]:
    """(question, full document). Half the questions are plain templates; the rest carry
    distractor sentences, or are pure filler with two numbers (the step then combines those)."""
    q, expr, ans = make_problem(rng)
    r = rng.random()
    if r < 0.3:
        parts = [_noise_sentence(rng) for _ in range(rng.randint(1, 4))]
        parts.insert(rng.randrange(len(parts) + 1), q.rsplit(". ", 1)[0] + ".")
        q = " ".join(parts) + " " + q.rsplit(". ", 1)[-1]
    elif r < 0.5:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice("+-*")
        expr, ans = f"{a} {op} {b}", {"+": a + b, "-": a - b, "*": a * b}[op]
        parts = [_noise_sentence(rng) for _ in range(rng.randint(2, 6))]
        parts.insert(rng.randrange(len(parts)), f"There are {a} of them.")
        parts.insert(rng.randrange(1, len(parts) + 1), f"Then {b} more.")
        q = " ".join(parts)
    return q, solution_text(q, expr, ans)


def solution_text(question: str, expr: str, answer: int) -> str:
    """The full react_sft document (ALPHAMATH.md §1.2): a code step, then an answer step."""
    analysis = _ANALYSIS.get(expr.split()[1], "Compute each share.")
    return (
        f"<question> {question} </question>\n"
        f"<step>\n<p>\n{analysis}\n</p>\n<code>\n```python\nprint({expr})\n```\n</code>\n"
        f"<output>\n{answer}\n</output>\n</step>\n"
        f"<step>\n<p>\nThe answer follows.\n</p>\n<p>\nFinal Answer: {answer}\n</p>\n</step>\n"
    )


def make_corpus(n: int, seed: int) -> list[str]:
    """`n` training documents with distinct questions."""
    rng = random.Random(seed)
    seen: set[str] = set()
    docs: list[str] = []
    while len(docs) < n:
        q, doc = make_document(rng)
        if q not in seen:
            seen.add(q)
            docs.append(doc)
    return docs


def train_tokenizer(corpus: Sequence[str], vocab_size: int, *, whole: Sequence[str] = ()):  # -> PreTrainedTokenizerFast
    """Byte-level BPE with single digits; each string of `whole` (format tags) is one token,
    matched before pre-tokenization, which would otherwise split `<step>` into `<`,`step`,`>`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Single digits (numbers generalise to unseen values), then GPT-2 style byte-level pieces;
    # the byte-level decoder makes decode(encode(text)) == text exactly.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, single_word=False) for t in whole])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )


def _train(model: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]], lr: float) -> float:
    """Plain AdamW with warmup + cosine decay over (ids, mask, labels) batches. Returns the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    steps, warmup = len(batches), max(1, len(batches) // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    model.train()
    loss_value = float("nan")
    for ids, mask, labels in batches:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_value = loss.item()
    model.eval()
    return loss_value


def _is_complete(out_dir: Path) -> bool:
    marker = out_dir / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("recipe") == RECIPE_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def build_tiny_model(
    out_dir: Path | str,
    *,
    seed: int = 0,
    train_steps: int = 200,
    batch_size: int = 16,
    lr: float = 3e-3,
    vocab_size: int = 600,
    force: bool = False,
) -> Path:
    """Build (or reuse) the tiny model in `out_dir` and return that path.

    The directory holds a transformers Qwen2 checkpoint (safetensors), its tokenizer,
    `value_head.safetensors` (random init, as AlphaMath's save_value_head.py) and
    `"value_model": true` in config.json.
    """
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    if not force and _is_complete(out_dir):
        return out_dir
    t0 = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        # 1) corpus  2) tokenizer  3) random-weight Qwen2
        corpus = make_corpus(4000, seed)
        trained = train_tokenizer(corpus, vocab_size)
        eos_id = trained.convert_tokens_to_ids(EOS)
        config = Qwen2Config(
            vocab_size=len(trained),
            hidden_size=128,
            num_attention_heads=4,  # head_dim 32: vLLM's CPU attention needs >= 32
            num_key_value_heads=2,
            num_hidden_layers=2,
            intermediate_size=256,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
        config.value_model = True  # as AlphaMath marks a policy+value checkpoint
        config.save_pretrained(tmp)
        trained.save_pretrained(tmp)
        # Encode with what AutoTokenizer loads for this model type (transformers may swap in
        # its own pre-tokenizer), so training and serving tokenize alike.
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)

        # 4) a short training run. Loss on the solution and the closing EOS only: the questions
        # hold random filler, and the format is what the model must learn.
        encoded = []
        for doc in corpus:
            enc = tokenizer(doc + EOS, return_offsets_mapping=True)
            q_end = doc.index("</question>\n") + len("</question>\n")
            n_q = sum(1 for start, _ in enc["offset_mapping"] if start < q_end)
            encoded.append((enc["input_ids"], n_q))
        # Uniformly random batches: sorting by length (less padding) built faster but learned
        # the format less reliably on real GSM8K questions.
        rng = random.Random(seed)
        groups = [rng.sample(encoded, batch_size) for _ in range(train_steps)]
        batches = []
        for rows in groups:
            width = max(len(r) for r, _ in rows)
            ids = torch.full((batch_size, width), eos_id, dtype=torch.long)
            mask = torch.zeros((batch_size, width), dtype=torch.long)
            labels = torch.full((batch_size, width), -100, dtype=torch.long)
            for i, (row, n_q) in enumerate(rows):  # right padding is fine for training
                ids[i, : len(row)] = torch.tensor(row)
                mask[i, : len(row)] = 1
                labels[i, n_q : len(row)] = ids[i, n_q : len(row)]
            batches.append((ids, mask, labels))
        loss = _train(model, batches, lr)

        # 5) save: model, tokenizer, value head, then the marker last
        model.generation_config.eos_token_id = eos_id
        model.generation_config.pad_token_id = eos_id
        model.save_pretrained(tmp, safe_serialization=True)
        head = init_value_head(config.hidden_size, config.initializer_range, seed)
        save_value_head(head, tmp)
        elapsed = time.perf_counter() - t0
        info = {"recipe": RECIPE_VERSION, "seed": seed, "train_steps": train_steps,
                "final_loss": round(loss, 4), "build_s": round(elapsed, 2)}
        (tmp / MARKER).write_text(json.dumps(info) + "\n")

        if not force and _is_complete(out_dir):  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return out_dir
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.tiny_model", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    path = build_tiny_model(args.out_dir, seed=args.seed, train_steps=args.steps, force=args.force)
    print(f"tiny model ready in {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
