"""Joint LM + value training: labels, loss decrease, checkpoint/resume, serving the result."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from runtime.engines.hf import HFEngine
from runtime.react import get_format
from training.data import TrainingRow, TrainingStep, read_training_rows, write_training_rows
from training.errors import CheckpointError, TrainingDataError, TrainingError
from training.tiny_model import make_problem
from training.train import IGNORE, Encoded, TrainConfig, _epoch_order, batch_loss, collate, encode_row, train

SFT = get_format("react_sft")


def make_rows(n: int, seed: int = 0) -> list[TrainingRow]:
    """Half correct (+1 at the end), half with a wrong answer (−1), intermediate Q in between."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, expr, ans = make_problem(rng)
        correct = i % 2 == 0
        step = SFT.parse(SFT.format_step("Compute it.", code=f"print({expr})"))
        code_text = SFT.with_observation(step, str(ans))
        final = SFT.parse(SFT.format_step("The answer follows.",
                                          final_answer=str(ans if correct else ans + 1))).text
        q1 = 0.5 if correct else -0.25
        rows.append(TrainingRow(SFT.build_prompt(question, []),
                                (TrainingStep(code_text, q1), TrainingStep(final, 1.0 if correct else -1.0)),
                                correct, f"r{i}"))
    return rows


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_training_rows(make_rows(16), tmp_path / "train.jsonl")


def test_labels_prompt_masked_negatives_value_only(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    good, bad = make_rows(2)
    enc = encode_row(tok, good, 1024)
    n_prompt = len(tok(good.prompt)["input_ids"])
    assert all(x == IGNORE for x in enc.lm_labels[:n_prompt])  # the question is never labelled
    assert enc.lm_labels[n_prompt:] == enc.input_ids[n_prompt:]  # every step token on a + path
    # value targets: exactly one per step, on its last token, which closes "</step>\n"
    at = [i for i, m in enumerate(enc.value_mask) if m]
    assert [enc.value_labels[i] for i in at] == [0.5, 1.0]
    assert at[-1] == len(enc.input_ids) - 1
    for i in at:
        assert tok.decode(enc.input_ids[: i + 1]).endswith("</step>\n")
    first_step_ids = tok(good.steps[0].text.strip() + "\n", add_special_tokens=False)["input_ids"]
    assert at[0] == n_prompt + len(first_step_ids) - 1
    # a negative path: no LM label anywhere, value labels as for a positive
    enc_bad = encode_row(tok, bad, 1024)
    assert all(x == IGNORE for x in enc_bad.lm_labels)
    assert [enc_bad.value_labels[i] for i, m in enumerate(enc_bad.value_mask) if m] == [-0.25, -1.0]
    # masking the interpreter output keeps the tags labelled
    masked = encode_row(tok, good, 1024, mask_observations=True)
    dropped = [i for i, (a, b) in enumerate(zip(enc.lm_labels, masked.lm_labels)) if a != b]
    assert dropped and "<output>" not in tok.decode([enc.input_ids[i] for i in dropped])
    assert good.steps[0].text.split("<output>\n")[1].split("\n")[0] in \
        tok.decode([enc.input_ids[i] for i in dropped])
    # truncation
    assert len(encode_row(tok, good, 10).input_ids) == 10


def test_lm_only_steps_carry_no_value_target(tiny_model_dir: Path, tmp_path: Path) -> None:
    """An anchor row (q None on every step) trains the LM exactly as a correct row does and the
    value head not at all; a mixed row keeps the targets it has. Round trip through the file."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    good = make_rows(1)[0]
    anchor = TrainingRow(good.prompt, tuple(TrainingStep(s.text, None) for s in good.steps), True, "a")
    mixed = TrainingRow(good.prompt, (TrainingStep(good.steps[0].text, None), good.steps[1]), True, "m")
    loaded = read_training_rows(write_training_rows([anchor, mixed], tmp_path / "rows.jsonl"))
    assert loaded == [anchor, mixed]
    enc, enc_anchor, enc_mixed = (encode_row(tok, r, 1024) for r in (good, *loaded))
    assert enc_anchor.input_ids == enc.input_ids and enc_anchor.lm_labels == enc.lm_labels
    assert not any(enc_anchor.value_mask)
    assert [enc_mixed.value_labels[i] for i, m in enumerate(enc_mixed.value_mask) if m] == [1.0]
    assert enc_mixed.value_mask == [m and i == len(enc.input_ids) - 1 for i, m in enumerate(enc.value_mask)]


def test_dense_value_targets_label_every_step_token(tiny_model_dir: Path) -> None:
    """`dense_value`: each step's Q at every one of its tokens, the prompt and q-None steps
    still unlabelled; the step-end targets and the LM labels are those of the sparse encoding."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    good = make_rows(1)[0]
    mixed = TrainingRow(good.prompt, (TrainingStep(good.steps[0].text, None), good.steps[1]), True, "m")
    sparse, dense = encode_row(tok, good, 1024), encode_row(tok, good, 1024, dense_value=True)
    n_prompt = len(tok(good.prompt)["input_ids"])
    n_first = len(tok(good.steps[0].text.strip() + "\n", add_special_tokens=False)["input_ids"])
    assert dense.input_ids == sparse.input_ids and dense.lm_labels == sparse.lm_labels
    assert dense.value_mask == [i >= n_prompt for i in range(len(dense.input_ids))]
    assert set(dense.value_labels[n_prompt:n_prompt + n_first]) == {0.5}
    assert set(dense.value_labels[n_prompt + n_first:]) == {1.0}
    enc_mixed = encode_row(tok, mixed, 1024, dense_value=True)
    assert enc_mixed.value_mask == [i >= n_prompt + n_first for i in range(len(dense.input_ids))]


def test_all_negative_batch_has_finite_zero_ce(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    head = torch.nn.Linear(model.config.hidden_size, 1)
    batch = collate([encode_row(tok, r, 512) for r in make_rows(4)[1::2]], tok.pad_token_id)
    total, ce, mse = batch_loss(model, head, batch, beta=0.1)
    assert ce.item() == 0.0 and torch.isfinite(total).item() and mse.item() > 0
    total.backward()
    assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0


def _eval_loss(model_dir: Path, rows: list[TrainingRow]) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runtime.engines.value_head import load_value_head

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    head = load_value_head(model_dir, model.config.hidden_size)
    assert head is not None
    with torch.no_grad():
        _, ce, mse = batch_loss(model, head, collate([encode_row(tok, r, 512) for r in rows],
                                                     tok.pad_token_id), beta=0.1)
    return float(ce), float(mse)


async def test_loss_decreases_and_result_serves_values(model_copy: Path, data: Path, tmp_path: Path) -> None:
    rows = make_rows(16)
    ce0, mse0 = _eval_loss(model_copy, rows)
    # lr 1e-3 over 24 steps, not 2e-3 over 12: at 2e-3 the value loss overshoots (0.7 → 1.5 at
    # step 2), so where 12 steps end up depends on the installed packages' numerics (it failed
    # on a fresh install of 2026-12-02 that passed a day earlier: MSE −16 % where −20 % is asked).
    cfg = TrainConfig(data=data, model=model_copy, output_dir=tmp_path / "out", lr=1e-3, beta=1.0,
                      batch_size=4, epochs=6, warmup_ratio=0.0)
    summary = train(cfg)
    assert summary.steps == 24 and summary.rows == 16 and not summary.fresh_value_head
    ce1, mse1 = _eval_loss(tmp_path / "out", rows)
    assert ce1 < ce0 and mse1 < mse0 * 0.8
    assert json.loads((tmp_path / "out" / "config.json").read_text())["value_model"] is True
    async with await HFEngine.load(tmp_path / "out", value_head=True) as engine:
        good = SFT.build_prompt(rows[0].prompt[11:-13], [s.text for s in rows[0].steps])
        (v,) = await engine.value([good])
    assert -1.0 <= v <= 1.0


def test_frozen_trunk_trains_the_value_head_alone(model_copy: Path, data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    rows = make_rows(16)
    ce0, mse0 = _eval_loss(model_copy, rows)
    train(TrainConfig(data=data, model=model_copy, output_dir=tmp_path / "out", lr=3e-3, beta=0.1,
                      batch_size=4, epochs=8, warmup_ratio=0.0, freeze_trunk=True))
    ce1, mse1 = _eval_loss(tmp_path / "out", rows)
    assert ce1 == pytest.approx(ce0, abs=1e-6) and mse1 < mse0 * 0.8
    before, after = load_file(model_copy / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    head0 = load_file(model_copy / "value_head.safetensors")
    head1 = load_file(tmp_path / "out" / "value_head.safetensors")
    assert not torch.equal(head0["v_head.summary.weight"], head1["v_head.summary.weight"])


def test_frozen_trunk_needs_value_targets(model_copy: Path, tmp_path: Path) -> None:
    anchors = [TrainingRow(r.prompt, tuple(TrainingStep(s.text, None) for s in r.steps), True, r.id)
               for r in make_rows(4)[::2]]
    rows = write_training_rows(anchors, tmp_path / "anchors.jsonl")
    with pytest.raises(TrainingDataError, match="trunk is frozen"):
        train(TrainConfig(data=rows, model=model_copy, output_dir=tmp_path / "out", freeze_trunk=True))


def test_checkpoint_then_resume_follows_the_straight_run(model_copy: Path, data: Path, tmp_path: Path) -> None:
    base = dict(data=data, model=model_copy, lr=1e-3, batch_size=8, epochs=2, seed=5)
    straight = train(TrainConfig(output_dir=tmp_path / "a", **base))
    assert straight.steps == 4
    first = train(TrainConfig(output_dir=tmp_path / "b", save_every=2, max_steps=2, **base))
    assert [p.name for p in first.checkpoints] == ["checkpoint-2"]
    assert (tmp_path / "b" / "checkpoint-2" / "value_head.safetensors").is_file()
    with pytest.raises(CheckpointError, match="already holds checkpoint-2"):
        train(TrainConfig(output_dir=tmp_path / "b", save_every=2, **base))
    resumed = train(TrainConfig(output_dir=tmp_path / "b", save_every=2, resume=True, **base))
    assert resumed.resumed_from == tmp_path / "b" / "checkpoint-2"
    assert [d["step"] for d in resumed.losses] == [3, 4] and resumed.steps == 4
    assert [d["loss"] for d in resumed.losses] == pytest.approx(
        [d["loss"] for d in straight.losses[2:]], rel=1e-4)
    assert _eval_loss(tmp_path / "b", make_rows(16)) == pytest.approx(
        _eval_loss(tmp_path / "a", make_rows(16)), rel=1e-4)


def test_a_requested_stop_checkpoints_the_step_and_resumes_like_the_straight_run(
        model_copy: Path, data: Path, tmp_path: Path) -> None:
    base = dict(data=data, model=model_copy, lr=1e-3, batch_size=4, epochs=1, seed=5)
    straight = train(TrainConfig(output_dir=tmp_path / "a", **base))
    assert straight.steps == 4 and not straight.interrupted
    asked: list[int] = []

    def stop_at_2() -> bool:  # a Ctrl-C during step 2
        asked.append(len(asked) + 1)
        return len(asked) >= 2

    # No save_every: a stop checkpoints anyway, or the finished steps would be lost.
    stopped = train(TrainConfig(output_dir=tmp_path / "b", **base), should_stop=stop_at_2)
    assert stopped.interrupted and stopped.steps == 2 and asked == [1, 2]
    assert [p.name for p in stopped.checkpoints] == ["checkpoint-2"]
    assert not (tmp_path / "b" / "train_summary.json").exists(), "no final model after a stop"
    resumed = train(TrainConfig(output_dir=tmp_path / "b", resume=True, **base), should_stop=lambda: False)
    assert not resumed.interrupted and resumed.steps == 4
    assert [d["loss"] for d in resumed.losses] == pytest.approx(
        [d["loss"] for d in straight.losses[2:]], rel=1e-4)
    # Asked after the last step too late to matter: the run ends normally.
    done = train(TrainConfig(output_dir=tmp_path / "c", max_steps=1, **base), should_stop=lambda: True)
    assert done.steps == 1 and not done.interrupted and (tmp_path / "c" / "train_summary.json").is_file()


def test_bad_training_input(model_copy: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TrainingDataError, match="empty training set"):
        train(TrainConfig(data=tmp_path / "empty.jsonl", model=model_copy, output_dir=tmp_path / "o"))
    data = write_training_rows(make_rows(2), tmp_path / "d.jsonl")
    with pytest.raises(CheckpointError, match="cannot load model .*nowhere: no such directory"):
        train(TrainConfig(data=data, model=tmp_path / "nowhere", output_dir=tmp_path / "o"))
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA device is visible"):
            train(TrainConfig(data=data, model=model_copy, output_dir=tmp_path / "o", device="cuda"))


def test_group_by_length_keeps_a_permutation_of_similar_length_batches(tmp_path: Path) -> None:
    rng = random.Random(0)
    encoded = [Encoded([1] * n, [IGNORE] * n, [0.0] * n, [False] * n)
               for n in (rng.randint(10, 400) for _ in range(1000))]
    base = dict(data=tmp_path / "d.jsonl", model=tmp_path, output_dir=tmp_path / "o", batch_size=8)
    plain = _epoch_order(encoded, TrainConfig(**base), epoch=0)
    grouped = _epoch_order(encoded, TrainConfig(**base, group_by_length=True), epoch=0)
    assert sorted(grouped) == sorted(plain) == list(range(1000))
    assert grouped == _epoch_order(encoded, TrainConfig(**base, group_by_length=True), epoch=0)
    assert grouped != _epoch_order(encoded, TrainConfig(**base, group_by_length=True), epoch=1)

    def padded(order: list[int]) -> int:  # tokens a right-padded batch costs
        return sum(8 * max(len(encoded[i].input_ids) for i in order[k:k + 8]) for k in range(0, 1000, 8))

    assert padded(grouped) < 0.6 * padded(plain)
    # Batches still come in random order: lengths are not sorted across the epoch.
    firsts = [len(encoded[grouped[k]].input_ids) for k in range(0, 1000, 8)]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)
